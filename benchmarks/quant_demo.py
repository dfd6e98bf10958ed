"""Our INT8 pipeline side by side with ONNX Runtime's ``quantize_static`` and NNCF on the demo model (issue 6).

Usage:
    python benchmarks/quant_demo.py [--out runs/quant_bench] [--calib-images 250] [--qat-epochs 10] [--iters 20]
        [--skip-ours] [--skip-peers] [--from ptq=runs/quant_demo] [--json benchmarks/results/quant_demo.json]
        [--openvino] [--uint8-input] [--rows ptq ptq_top6 ...]

Steps:

1. **Ours**, as subprocesses with the exact argv recorded: ``yolodeploy quantize MODEL --data D --ptq --img 224
   --calib-images N -o OUT/<key>`` for ``ptq``, the same with ``--sensitive-topk 6`` for ``ptq_top6``, with
   ``--max-ap-drop 0.004 --cost-aware`` for ``ptq_cost`` (float layers picked by sensitivity per measured ms), and
   ``--qat --epochs E --qat-lr LR --learn-amax`` for ``qat`` (every layer quantized), ``--sensitive-topk 6 --qat
   --partial`` for ``qat_partial`` (QAT of the partial model: the paper's v1.0 "partial QAT", Table 16). Each run's
   ``quant_report.json`` names the files it wrote. ``--skip-ours`` reuses ``OUT/<key>``; ``--from KEY=DIR``
   reuses any earlier run folder for one key.
2. **Peers** on the FP32 ONNX file of our plain-PTQ run (``fp32.onnx``) with the very images our calibration used
   (:func:`yolodeploy.quant.sensitivity.sensitivity_images` with our defaults: the calibration split minus the
   held-out images): ``ort_quantize_static`` and ``nncf`` (``benchmarks/quant_peers.py``).
3. **AP / AP50** of every ONNX file on ONNX Runtime (CPU EP) over the val split (or `--val-images`), through
   :func:`yolodeploy.core.evaluation_run.evaluate_model` (what ``run_ptq`` uses for its own AP).
4. **Latency** of all models in one process, interleaved: per batch size and round, each model waits 100 ms and
   makes one untimed call (ONNX Runtime's worker threads spin after a call and would steal the cores from the next
   model), then ``--block`` timed calls (:func:`yolodeploy.bench.latency.time_interleaved`),
   ``intra_op_num_threads=2``, the same real input batch (the first calibration images), warm-up, then the median
   over ``--iters`` rounds. All models share the same background load, so the speed-up ratios are fair even on a
   busy machine; absolute times are not comparable across runs.
   ``--openvino`` also times every file on OpenVINO (``OpenVINORunner``: CPU, f32 hint for float layers, the same
   threads) in the same interleaved rounds, as the ``openvino`` section: a second CPU runtime on the same files.
``--uint8-input``: every file takes the letterboxed uint8 image as ``(B, H, W, 3)`` (``export --uint8-input``:
identical outputs, checked; an int8 stem then reads 4-column groups, ``deploy/stem_columns.py``): our runs get
``--uint8-input``, the peers quantize a float-input FP32 export (``OUT/peers/fp32_float_input.onnx``, made as our
pipeline makes ``fp32.onnx``) and ``quant_peers.py --uint8-input`` converts their files the same way; the timed
calls get the same images as pixels. Every row then times the same work from the same input.
5. ``quant_demo.json`` (atomically) with, for each model, ``ap``, ``ap50``, ``latency_ms`` / ``speedup_vs_fp32``
   per batch size, ``command``; the machine; and ``quant_demo.md`` with the table next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quant_peers import NNCF_SETTINGS, ORT_SETTINGS, PEERS  # noqa: E402  (this folder's module)

from yolodeploy.utils.io import atomic_write_text  # noqa: E402
from yolodeploy.utils.markdown import markdown_table  # noqa: E402

OURS = ("ptq", "ptq_top6", "ptq_cost", "qat", "qat_partial")
#: The row (and file role) name in that run's own quant_report.json; DELIVERED: the INT8 row the run delivered
#: (``ptq_top<K>``, K found by the run).
DELIVERED = "@int8"
REPORT_ROW = {"qat_partial": "qat", "ptq_cost": DELIVERED}
COST_AWARE_DROP = 0.004  # --max-ap-drop of the ptq_cost row (the greedy measures fake-quant AP on PyTorch)
ORDER = ("fp32", *OURS, "ort_quantize_static", "nncf")
PEER_SETTINGS = {"ort_quantize_static": ORT_SETTINGS, "nncf": NNCF_SETTINGS}
PAUSE_S = 0.1  # before each model's calls in a round: the other sessions' ORT worker threads stop spinning
RESULTS = Path(__file__).resolve().parent / "results" / "quant_demo.json"
LABELS = {
    "fp32": "FP32",
    "ptq": "ours: PTQ",
    "ptq_top6": "ours: partial PTQ (top-6 float)",
    "ptq_cost": f"ours: partial PTQ (--max-ap-drop {COST_AWARE_DROP} --cost-aware)",
    "qat": "ours: QAT",
    "qat_partial": "ours: partial QAT (its --sensitive-topk layers float)",
    "ort_quantize_static": "ORT quantize_static (QDQ U8S8)",
    "nncf": "NNCF default PTQ",
}


# -- our pipeline ------------------------------------------------------------------------------------------------


def yolodeploy_exe() -> list[str]:
    """The ``yolodeploy`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "yolodeploy"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from yolodeploy.cli.main import main; main()"]


def qat_flags(epochs: int, lr: float, learn_amax: bool = False) -> list[str]:
    """The QAT options of ``yolodeploy quantize`` (QAT starts from the plain PTQ calibration)."""
    return ["--qat", "--epochs", str(epochs), "--qat-lr", str(lr), *(["--learn-amax"] if learn_amax else [])]


def our_commands(args: argparse.Namespace, qat: list[str]) -> dict[str, list[str]]:
    """The ``yolodeploy quantize`` argv of each of our models (without the executable path)."""
    base = ["yolodeploy", "quantize", args.model, "--data", args.data, "--img", str(args.img)]
    base += ["--calib-images", str(args.calib_images), *(["--uint8-input"] if args.uint8_input else [])]
    out = Path(args.out)
    commands = {
        "ptq": [*base, "--ptq", "-o", str(out / "ptq")],
        "ptq_top6": [*base, "--ptq", "--sensitive-topk", str(args.topk), "-o", str(out / "ptq_top6")],
    }
    cost_aware = ["--max-ap-drop", str(COST_AWARE_DROP), "--cost-aware"]
    commands["ptq_cost"] = [*base, "--ptq", *cost_aware, "-o", str(out / "ptq_cost")]
    commands["qat"] = [*base, *qat, "-o", str(out / "qat")]
    partial = ["--sensitive-topk", str(args.topk), *qat, "--partial"]
    commands["qat_partial"] = [*base, *partial, "-o", str(out / "qat_partial")]
    return commands


def _report_row(report: dict[str, Any], key: str) -> str:
    """The name of our row ``key`` in its run's ``quant_report.json``."""
    name = REPORT_ROW.get(key, key)
    return str(report.get("int8")) if name == DELIVERED else name


def _report_onnx(report: dict[str, Any], key: str, folder: Path) -> Path | None:
    """The ORT INT8 file of row ``key`` in a ``quant_report.json`` (tolerant of added keys), else a glob."""
    key = _report_row(report, key)
    files = {role: Path(path) for role, path in (report.get("files") or {}).items() if str(path).endswith("_ort.onnx")}
    roles = ["int8_ort_onnx"] if key == report.get("int8") else []
    roles += [role for role in files if role.startswith(f"{key}_")]
    for role in roles:
        if role in files and files[role].is_file():
            return files[role]
    pattern = {"ptq": "int8_ort.onnx", "qat": "*qat*_ort.onnx"}.get(
        key, f"int8_top{key.removeprefix('ptq_top')}_ort.onnx"
    )
    matches = sorted(folder.glob(pattern))
    return matches[0] if matches else None


def run_ours(key: str, argv: list[str], folder: Path, skip: bool) -> dict[str, Any]:
    """Run one of our commands (unless ``skip``) and return its files and command from the report it wrote."""
    report_path = folder / "quant_report.json"
    if not skip:
        print(f"[{key}] {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([*yolodeploy_exe(), *argv[1:]], capture_output=True, text=True)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return {"error": f"exit {done.returncode}: " + " | ".join(tail), "command": shlex.join(argv)}
        print(f"[{key}] done in {time.perf_counter() - start:.0f} s", flush=True)
    if not report_path.is_file():
        return {"error": f"no {report_path}", "command": shlex.join(argv)}
    report = json.loads(report_path.read_text())
    onnx_path = _report_onnx(report, key, folder)
    if onnx_path is None:
        return {"error": f"no ORT INT8 file for {key} in {folder}", "command": report.get("command")}
    fp32 = (report.get("files") or {}).get("fp32_onnx") or str(folder / "fp32.onnx")
    command = report.get("command") or shlex.join(argv)
    row = report["rows"].get(_report_row(report, key))
    return {"onnx": str(onnx_path), "fp32_onnx": fp32, "command": command, "pipeline_row": row}


# -- peers, AP and latency ---------------------------------------------------------------------------------------


def calibration_paths(args: argparse.Namespace) -> list[Path]:
    """The images our pipeline calibrates on for these options (run_ptq: calib split minus the held-out ones)."""
    from yolodeploy.quant.sensitivity import SensitivityConfig, sensitivity_images

    config = SensitivityConfig(images=args.heldout_images, calib_images=args.calib_images, seed=0)
    return sensitivity_images(args.data, split="calib", config=config)[0]


def run_peer(name: str, fp32: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Quantize ``fp32`` with one peer in a subprocess (``quant_peers.py``: NNCF patches torch when it runs, so it
    stays out of the measuring process), or reuse its file with ``--skip-peers``; a failure becomes an error row."""
    out_path = Path(args.out) / "peers" / f"{name}.onnx"
    argv = ["benchmarks/quant_peers.py", str(fp32), "--data", args.data, "--peer", name, "--img", str(args.img)]
    argv += ["--calib-images", str(args.calib_images), "--heldout-images", str(args.heldout_images)]
    argv += ["-o", str(out_path), *(["--uint8-input"] if args.uint8_input else [])]
    row: dict[str, Any] = {"command": f"{shlex.join(['python', *argv])}  # {PEER_SETTINGS[name]}"}
    if args.skip_peers and out_path.is_file():
        return {**row, "onnx": str(out_path), "reused": True}
    print(f"[{name}] {shlex.join(['python', *argv])}", flush=True)
    script = Path(__file__).resolve().parent / "quant_peers.py"
    done = subprocess.run([sys.executable, str(script), *argv[1:]], capture_output=True, text=True)
    if done.returncode:
        return {**row, "error": f"exit {done.returncode}: " + " | ".join(done.stderr.strip().splitlines()[-5:])}
    info = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"[{name}] done in {info['seconds']:.1f} s", flush=True)
    row.update(onnx=info["path"], quantize_seconds=info["seconds"], calib_images=info["calib_images"])
    return {**row, **({"uint8_input": info["uint8_input"]} if "uint8_input" in info else {})}


def float_input_fp32(args: argparse.Namespace) -> Path:
    """With ``--uint8-input`` our ``fp32.onnx`` takes pixels; the peers quantize a float-input export made as
    ``run_ptq`` makes its own (opset 13, dynamic batch, ``--img``)."""
    path = Path(args.out) / "peers" / "fp32_float_input.onnx"
    argv = ["yolodeploy", "export", args.model, "-o", str(path), "--img", str(args.img), "--opset", "13"]
    argv += ["--dynamic-batch"]
    if not (args.skip_peers and path.is_file()):
        print(f"[peers] {shlex.join(argv)}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*yolodeploy_exe(), *argv[1:]], check=True, capture_output=True, text=True)
    return path


@contextlib.contextmanager
def val_split(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """``(image_dir, annotation_file)`` of the val split, or of the seeded ``--val-images`` subset that
    ``yolodeploy quantize --val-images`` draws (``random.Random(0).sample`` of the entries, sorted by id)."""
    image_dir, ann_file = Path(args.data) / "images" / "val", Path(args.data) / "annotations" / "instances_val.json"
    coco = json.loads(ann_file.read_text())
    if args.val_images is None or len(coco["images"]) <= args.val_images:
        yield str(image_dir), str(ann_file)
        return
    entries = sorted(random.Random(0).sample(coco["images"], args.val_images), key=lambda e: e["id"])
    keep = {entry["id"] for entry in entries}
    subset = {**coco, "images": entries, "annotations": [a for a in coco["annotations"] if a["image_id"] in keep]}
    with tempfile.TemporaryDirectory(prefix="quant_demo_") as tmp:
        path = Path(tmp) / "instances_val_subset.json"
        path.write_text(json.dumps(subset))
        yield str(image_dir), str(path)


def measure_ap(path: str, split: tuple[str, str], args: argparse.Namespace) -> dict[str, float]:
    """COCO AP and AP50 of an ONNX file on ONNX Runtime (CPU EP), as ``run_ptq`` measures it."""
    from yolodeploy.core.evaluation_run import EvalConfig, evaluate_model

    config = EvalConfig(
        model=path, image_dir=split[0], annotation_file=split[1], backend="ort", img_size=args.img, batch=8
    )
    metrics = evaluate_model(config).metrics
    return {"ap": float(metrics.ap), "ap50": float(metrics.ap50)}


def measure_latency(
    paths: dict[str, str], calib: list[Path], args: argparse.Namespace, errors: dict[str, str] | None = None
) -> dict[str, dict]:
    """Per batch size, interleaved latency stats of every model: ``{bs: {key: LatencyStats.to_dict()}}``.

    A file a runtime cannot load or run (one call on each batch size first) is left out of the rounds, and the
    one-line reason goes into ``errors`` under its latency key."""
    from yolodeploy.bench.latency import time_interleaved
    from yolodeploy.core.preprocess import image_batch, letterbox, load_image
    from yolodeploy.deploy.export import INPUT_NAME
    from yolodeploy.deploy.runners import create_runner
    from yolodeploy.errors import YoloDeployError

    errors = {} if errors is None else errors
    results: dict[str, dict] = {}
    size = (args.img, args.img)
    images = {bs: [letterbox(load_image(path), size, scaleup=True)[0] for path in calib[:bs]] for bs in args.bs}

    def feed_of(runner, bs: int) -> dict[str, Any]:  # float NCHW, or the pixels (a --uint8-input file)
        return {INPUT_NAME: image_batch(images[bs], next(iter(runner.input_metadata().values())).dtype)}

    with contextlib.ExitStack() as stack:
        backends = ("ort", "openvino") if args.openvino else ("ort",)
        runners = {}
        for backend in backends:
            for key, path in paths.items():
                name = latency_key(key, backend)
                try:
                    runner = stack.enter_context(create_runner(path, backend, threads=args.threads))
                    for bs in args.bs:
                        runner.infer(feed_of(runner, bs))
                except YoloDeployError as exc:
                    errors[name] = " ".join(str(exc).split())[:600]  # one line, the cause kept
                    print(f"[latency] {name} left out: {errors[name]}")
                    continue
                runners[name] = runner
        for bs in args.bs:
            feeds = {key: feed_of(runner, bs) for key, runner in runners.items()}
            calls = {key: (lambda run=runner, feed=feeds[key]: run.infer(feed)) for key, runner in runners.items()}
            print(f"[latency] bs {bs}: {len(calls)} models x {args.iters} rounds", flush=True)
            stats = time_interleaved(
                calls, warmup=args.warmup, iters=args.iters, block=args.block, settle=1, pause_s=PAUSE_S
            )
            results[str(bs)] = {key: value.to_dict() for key, value in stats.items()}
    return results


def latency_key(key: str, backend: str) -> str:
    """``ptq`` on ORT is ``ptq``; on OpenVINO ``ptq@openvino``."""
    return key if backend == "ort" else f"{key}@{backend}"


# -- the record ----------------------------------------------------------------------------------------------------


def build_rows(models: dict[str, dict], latency: dict[str, dict]) -> dict[str, dict]:
    """Rows with ``latency_ms`` (median) and ``speedup_vs_fp32`` per batch size, in :data:`ORDER`."""
    rows = {}
    for key in [k for k in ORDER if k in models]:
        row = dict(models[key])
        if "error" not in row:
            row["latency_ms"] = {bs: per[key]["p50_ms"] for bs, per in latency.items() if key in per}
            row["latency_stats"] = {bs: per[key] for bs, per in latency.items() if key in per}
            row["speedup_vs_fp32"] = {
                bs: per["fp32"]["p50_ms"] / per[key]["p50_ms"]
                for bs, per in latency.items()
                if "fp32" in per and key in per
            }
        rows[key] = row
    return rows


def openvino_rows(latency: dict[str, dict]) -> dict[str, dict]:
    """Per model timed on OpenVINO: ``latency_ms`` and speed-ups over ORT FP32 and over OpenVINO FP32 per batch."""
    rows = {}
    for key in ORDER:
        ov_key = latency_key(key, "openvino")
        per_bs = {bs: per for bs, per in latency.items() if ov_key in per}
        if not per_bs:
            continue
        rows[key] = {
            "latency_ms": {bs: per[ov_key]["p50_ms"] for bs, per in per_bs.items()},
            "speedup_vs_ort_fp32": {bs: per["fp32"]["p50_ms"] / per[ov_key]["p50_ms"] for bs, per in per_bs.items()},
            "speedup_vs_openvino_fp32": {
                bs: per["fp32@openvino"]["p50_ms"] / per[ov_key]["p50_ms"] for bs, per in per_bs.items()
            },
        }
    return rows


def compare_with_peers(rows: dict[str, dict], tolerance: float) -> dict[str, dict]:
    """For each of our INT8 rows vs each peer: AP difference and latency ratio (ours / peer) per batch size."""
    verdicts: dict[str, dict] = {}
    for ours in [k for k in OURS if "ap" in rows.get(k, {})]:
        for peer in [k for k in PEERS if "ap" in rows.get(k, {})]:
            a, b = rows[ours], rows[peer]
            ratio = {bs: a["latency_ms"][bs] / b["latency_ms"][bs] for bs in a["latency_ms"] if bs in b["latency_ms"]}
            verdicts.setdefault(ours, {})[peer] = {
                "ap_delta": a["ap"] - b["ap"],
                "at_least_as_accurate": a["ap"] >= b["ap"],
                "latency_ratio": ratio,
                "no_slower": all(r <= 1 + tolerance for r in ratio.values()),
            }
    return verdicts


def _cell(value: Any, digits: int, suffix: str = "") -> str:
    return f"{value:.{digits}f}{suffix}" if isinstance(value, (int, float)) else "—"


def markdown(record: dict[str, Any]) -> str:
    """The side-by-side table, the per-model commands and the settings, as markdown."""
    sizes = record["batch_sizes"]
    header = ["model", "AP", "AP50"] + [f"bs{bs} ms (×FP32)" for bs in sizes] + ["quantize s"]
    table = []
    for key, row in record["rows"].items():
        cells = [LABELS.get(key, key), _cell(row.get("ap"), 4), _cell(row.get("ap50"), 4)]
        for bs in sizes:
            ms, speedup = (row.get("latency_ms") or {}).get(bs), (row.get("speedup_vs_fp32") or {}).get(bs)
            cells.append(f"{_cell(ms, 2)} ({_cell(speedup, 2, '×')})" if ms is not None else "—")
        cells.append(_cell(row.get("quantize_seconds"), 1))
        if "error" in row:
            cells[1] = f"error: {row['error'][:80]}"
        table.append(cells)
    env = record["environment"]
    lines = [markdown_table(header, table), "",
             f"ONNX Runtime {env.get('onnxruntime')} CPU EP, intra_op_num_threads={record['threads']}, "
             f"{record['iters']} interleaved rounds of a {PAUSE_S * 1e3:.0f} ms pause, 1 untimed and "
             f"{record.get('block', 1)} timed calls per model after {record['warmup']} warm-ups, median; "
             f"{env.get('cpu')}, {env.get('cpu_count')} CPUs; val split {record['val_images']} images; "
             f"{record['calib_images']} calibration images for every INT8 model"
             f"{'; every file takes uint8 pixels (--uint8-input)' if record.get('uint8_input') else ''}.", "",
             "Commands:", ""]  # fmt: skip
    lines += [f"- `{key}`: `{row.get('command')}`" for key, row in record["rows"].items()]
    if record.get("openvino"):
        lines += ["", *openvino_markdown(record["openvino"], sizes, record["environment"])]
    if record.get("latency_errors"):
        lines += ["", "Not timed:", ""] + [f"- `{key}`: {why}" for key, why in record["latency_errors"].items()]
    return "\n".join(lines) + "\n"


def openvino_markdown(rows: dict[str, dict], sizes: list[str], env: dict[str, Any]) -> list[str]:
    """The ``--openvino`` table: the same files on OpenVINO, timed in the same interleaved rounds."""
    header = ["model"] + [f"bs{bs} ms (×ORT FP32, ×OpenVINO FP32)" for bs in sizes]
    table = []
    for key, row in rows.items():
        cells = [LABELS.get(key, key)]
        for bs in sizes:
            ms = row["latency_ms"].get(bs)
            ort_x, ov_x = row["speedup_vs_ort_fp32"].get(bs), row["speedup_vs_openvino_fp32"].get(bs)
            cells.append(f"{_cell(ms, 2)} ({_cell(ort_x, 2, '×')}, {_cell(ov_x, 2, '×')})" if ms is not None else "—")
        table.append(cells)
    title = f"Same files on OpenVINO {env.get('openvino', '')} (CPU, f32 hint, same threads), in the same rounds:"
    return [title, "", *markdown_table(header, table).splitlines()]


def write_results(record: dict[str, Any], json_path: Path) -> Path:
    """``quant_demo.json`` and ``quant_demo.md`` next to each other, each written atomically."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(record, indent=1, default=str) + "\n")
    md_path = json_path.with_suffix(".md")
    atomic_write_text(md_path, "# INT8: ours vs ORT quantize_static vs NNCF (demo model)\n\n" + markdown(record))
    return md_path


# -- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/demo/yolov6n_synth.safetensors")
    parser.add_argument("--data", default="runs/synth")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--calib-images", type=int, default=250)
    parser.add_argument("--heldout-images", type=int, default=8, help="must match yolodeploy quantize's default")
    parser.add_argument("--topk", type=int, default=6, help="--sensitive-topk of the partial PTQ row")
    parser.add_argument("--qat-epochs", type=int, default=10)
    parser.add_argument("--qat-lr", type=float, default=5e-5)
    parser.add_argument("--learn-amax", action=argparse.BooleanOptionalAction, default=True,
                        help="QAT also trains the quantization ranges (yolodeploy quantize --learn-amax)")  # fmt: skip
    parser.add_argument("--out", default="runs/quant_bench", help="folder for our runs (OUT/<key>) and OUT/peers")
    parser.add_argument("--skip-ours", action="store_true", help="reuse OUT/<key> instead of running our pipeline")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=OURS,
        default=list(OURS),
        metavar="KEY",
        help=f"our rows to run or reuse (default: all of {', '.join(OURS)})",
    )
    parser.add_argument("--skip-peers", action="store_true", help="reuse OUT/peers/<peer>.onnx when present")
    parser.add_argument("--from", dest="reuse", action="append", default=[], metavar="KEY=DIR",
                        help="reuse an earlier run folder for one of our keys (e.g. ptq=runs/quant_demo)")  # fmt: skip
    parser.add_argument("--val-images", type=int, default=None, help="seeded val subset for AP (default: all)")
    parser.add_argument("--reuse-ap", default=None, metavar="JSON",
                        help="AP/AP50 of a file from an earlier full-val record, not re-evaluated")  # fmt: skip
    parser.add_argument("--bs", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--block", type=int, default=5, help="timed calls of each model per round")
    parser.add_argument("--tolerance", type=float, default=0.05, help="latency ratio slack for 'no slower'")
    parser.add_argument("--openvino", action="store_true", help="also time every file on OpenVINO (same rounds)")
    parser.add_argument(
        "--uint8-input",
        action="store_true",
        help="every file takes raw uint8 pixels: our runs get --uint8-input, the peers' files are "
        "converted the same way (they quantize a float-input FP32 export)",
    )
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.reuse = dict(item.split("=", 1) for item in args.reuse)
    return args


def collect_ours(args: argparse.Namespace) -> dict[str, dict]:
    """Run (or reuse) our pipelines (``--rows``)."""
    commands = our_commands(args, qat_flags(args.qat_epochs, args.qat_lr, args.learn_amax))
    rows = {}
    for key, argv in [(key, argv) for key, argv in commands.items() if key in args.rows]:
        folder = Path(args.reuse.get(key, Path(args.out) / key))
        rows[key] = run_ours(key, argv, folder, skip=args.skip_ours or key in args.reuse)
    return rows


def reused_ap(json_path: str | None) -> dict[str, dict]:
    """``{onnx path: {"ap", "ap50"}}`` from an earlier record (``--reuse-ap``): the same file, the same AP."""
    if not json_path:
        return {}
    rows = json.loads(Path(json_path).read_text()).get("rows", {})
    return {row["onnx"]: {"ap": row["ap"], "ap50": row["ap50"]} for row in rows.values() if "ap" in row}


def measure_all_ap(models: dict[str, dict], paths: dict[str, str], args: argparse.Namespace) -> None:
    """AP of every model into its row; a model ONNX Runtime cannot evaluate gets an error and leaves ``paths``."""
    earlier = reused_ap(args.reuse_ap)
    with val_split(args) as split:
        for key, path in list(paths.items()):
            if path in earlier and args.val_images is None:
                models[key].update(earlier[path], ap_reused_from=args.reuse_ap)
                continue
            print(f"[ap] {key}: {path}", flush=True)
            start = time.perf_counter()
            try:
                models[key].update(measure_ap(path, split, args))
            except Exception as exc:  # e.g. a peer's graph ONNX Runtime cannot run: record it, time the rest
                models[key]["error"] = f"AP evaluation: {type(exc).__name__}: {exc}"
                del paths[key]
                continue
            print(f"[ap] {key}: AP {models[key]['ap']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    from yolodeploy.bench.env import capture_environment

    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/quant_demo.py", *(sys.argv[1:] if argv is None else argv)])
    models = collect_ours(args)
    fp32 = next((row["fp32_onnx"] for row in models.values() if Path(row.get("fp32_onnx", "")).is_file()), None)
    if fp32 is None:
        print("no fp32.onnx from any of our runs: nothing to compare", file=sys.stderr)
        return 1
    models = {"fp32": {"onnx": fp32, "command": models.get("ptq", {}).get("command")}, **models}
    calib = calibration_paths(args)
    peer_fp32 = float_input_fp32(args) if args.uint8_input else Path(fp32)
    for name in PEERS:
        models[name] = run_peer(name, peer_fp32, args)
    paths = {key: row["onnx"] for key, row in models.items() if "onnx" in row}
    measure_all_ap(models, paths, args)
    latency_errors: dict[str, str] = {}
    latency = measure_latency(paths, calib, args, latency_errors)
    rows = build_rows(models, latency)
    record = {
        "version": 1, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "model": args.model, "data": args.data, "img_size": args.img,
        "calib_images": len(calib), "val_images": _val_count(args), "batch_sizes": [str(bs) for bs in args.bs],
        "threads": args.threads, "warmup": args.warmup, "iters": args.iters, "block": args.block,
        "tolerance": args.tolerance, "uint8_input": args.uint8_input,
        "rows": rows, "ours_vs_peers": compare_with_peers(rows, args.tolerance), "environment": capture_environment(),
    }  # fmt: skip
    if args.openvino:
        record["openvino"] = openvino_rows(latency)
    if latency_errors:
        record["latency_errors"] = latency_errors
    md_path = write_results(record, Path(args.json))
    print(md_path.read_text())
    print(f"wrote {args.json} and {md_path}")
    return 0


def _val_count(args: argparse.Namespace) -> int:
    ann = Path(args.data) / "annotations" / "instances_val.json"
    total = len(json.loads(ann.read_text()).get("images", [])) if ann.is_file() else 0
    return min(total, args.val_images) if args.val_images else total


if __name__ == "__main__":
    raise SystemExit(main())
