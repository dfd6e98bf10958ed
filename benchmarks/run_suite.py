"""Run a benchmark suite (models x backends x batch sizes), write one JSON per run, optionally gate on a baseline.

Usage:
    python benchmarks/run_suite.py [--suite benchmarks/suite.json] [--out benchmarks/results]
        [--compare benchmarks/baseline.json [--normalize] [--max-regression 10%] [--report report.md]]
        [--write-baseline benchmarks/baseline.json] [--summary benchmarks/results/SUMMARY.md]
        [--wait-idle SECONDS] [--retries N]

Each suite run writes ``<out>/suite_<UTC time>.json``: the environment, the suite definition and one
``yolodeploy bench`` result per (model, batch group, backend). Registry models are exported once per model to a
temporary dynamic-batch ONNX file for the ``ort`` backend; ``torch`` runs the same deploy-form model eagerly.
Backends of one model and batch size run back to back, so their ratio shares the machine's state.

With ``--compare`` the run is compared against a baseline (``yolodeploy bench-compare`` semantics) and the
script exits 1 on a regression: this is the command a CI job can call. Our CI does not call it by default: on a
shared 2-core machine single timings move by tens of percent between runs, so a gate there would fail at
random. Run it on a dedicated machine, with ``--normalize`` if that machine's state varies.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from yolodeploy.bench.compare import NOISY_FOREIGN_CORES, SUITE_FORMAT, compare_results, parse_threshold
from yolodeploy.bench.env import capture_environment
from yolodeploy.bench.harness import BenchConfig, BenchResult, default_progress, load_deploy_model, run_benchmark
from yolodeploy.errors import YoloDeployError
from yolodeploy.utils.io import atomic_write_text

HERE = Path(__file__).resolve().parent
SUITE_KEYS = {"version", "description", "models", "backends", "img_size", "batches", "threads"}


def load_suite(path: Path) -> dict[str, Any]:
    """Read and check a suite definition (see benchmarks/suite.json)."""
    suite = json.loads(path.read_text())
    unknown = set(suite) - SUITE_KEYS
    missing = {"models", "backends", "batches"} - set(suite)
    if unknown or missing or suite.get("version", 1) != 1:
        raise SystemExit(f"error: {path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}, or version")
    for group in suite["batches"]:
        if set(group) - {"sizes", "warmup", "iters", "seconds"} or "sizes" not in group:
            raise SystemExit(f"error: {path}: a batch group needs 'sizes' and may set warmup, iters or seconds")
    return suite


class CpuMonitor:
    """CPU time other processes used (in cores) since ``start()``, from /proc/stat minus our own CPU time.

    On a shared machine this says how much a run was disturbed; None where /proc/stat is absent.
    """

    def start(self) -> None:
        self._busy, self._own, self._wall = _busy_seconds(), _own_seconds(), time.perf_counter()

    def foreign_cores(self) -> float | None:
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._wall
        return max(0.0, (busy - self._busy) - (_own_seconds() - self._own)) / max(wall, 1e-6)


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def wait_for_idle(max_wait: float, threshold: float = 0.2, window: float = 2.0) -> float | None:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores over ``window`` s.

    Returns the other processes' load of the last window (None without /proc/stat)."""
    deadline, monitor = time.monotonic() + max_wait, CpuMonitor()
    while True:
        monitor.start()
        time.sleep(window)
        load = monitor.foreign_cores()
        if load is None or load < threshold or time.monotonic() >= deadline:
            return load


def run_suite(suite: dict[str, Any], progress=None, *, wait_idle: float = 0.0, retries: int = 0) -> dict[str, Any]:
    """Every (model, batch group, backend) of ``suite`` as one benchmark run; the suite document.

    With ``wait_idle`` > 0 each run first waits (up to that many seconds) for the machine to be quiet. Every run
    records the CPU other processes used while it ran (``machine.foreign_cores``); a run disturbed by more than
    ``NOISY_FOREIGN_CORES`` is repeated up to ``retries`` times, and the least disturbed attempt is kept."""
    started = time.perf_counter()
    created = datetime.datetime.now(datetime.timezone.utc).isoformat()
    runs = []
    with tempfile.TemporaryDirectory(prefix="yolodeploy-suite-") as tmp:
        for model in suite["models"]:
            onnx_path = _export_once(model, suite, Path(tmp)) if "ort" in suite["backends"] else None
            for group in suite["batches"]:
                for backend in suite["backends"]:
                    config = BenchConfig(
                        model=str(onnx_path) if backend == "ort" and onnx_path else model,
                        backend=backend,
                        name=model,
                        batch_sizes=tuple(group["sizes"]),
                        img_size=suite.get("img_size"),
                        warmup=group.get("warmup", 3),
                        iters=group.get("iters"),
                        seconds=group.get("seconds"),
                        threads=suite.get("threads"),
                    )
                    runs.append(_run_quietly(config, progress, wait_idle, retries))
    return {
        "format": SUITE_FORMAT,
        "version": 1,
        "created": created,
        "wall_seconds": time.perf_counter() - started,
        "suite": suite,
        "environment": capture_environment(),
        "runs": runs,
    }


def _run_quietly(config: BenchConfig, progress, wait_idle: float, retries: int) -> dict[str, Any]:
    """One benchmark run with the machine's foreign load recorded; repeated while disturbed (``retries``)."""
    best = None
    for attempt in range(retries + 1):
        idle_before = wait_for_idle(wait_idle) if wait_idle > 0 else None
        monitor = CpuMonitor()
        monitor.start()
        result = run_benchmark(config, progress).to_dict()
        foreign = monitor.foreign_cores()
        result["machine"] = {"foreign_cores": foreign, "foreign_cores_before": idle_before, "attempt": attempt + 1}
        print(BenchResult.from_dict(result).table(), flush=True)
        print(f"{config.name} {config.backend.value}: other processes used {foreign or 0:.2f} cores", flush=True)
        if best is None or (foreign or 0) < (best["machine"]["foreign_cores"] or 0):
            best = result
        if (foreign or 0) <= NOISY_FOREIGN_CORES:
            break
    return best


def _export_once(model: str, suite: dict[str, Any], folder: Path) -> Path | None:
    """A registry name or checkpoint exported once to a dynamic-batch ONNX file; ``.onnx`` files as they are."""
    if Path(model).suffix.lower() == ".onnx":
        return Path(model)
    from yolodeploy.deploy.export import export_onnx

    deploy, _ = load_deploy_model(model)
    size = suite.get("img_size") or max(deploy.input_size)
    path = folder / f"{Path(model).stem}.onnx"
    export_onnx(deploy, path, img_size=(size, size), dynamic_batch=True, check=False)
    return path


def summarize(doc: dict[str, Any]) -> str:
    """Markdown: per model and batch size, the p50 latency and throughput of each backend, and ort/torch ratios."""
    env = doc["environment"]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for run in doc["runs"]:
        for batch in run["batches"]:
            rows.setdefault((run["name"], batch["batch_size"]), {})[run["config"]["backend"]] = (batch, run)
    img = next((run["model"].get("img_size") for run in doc["runs"]), "?")
    lines = [
        f"Recorded {doc['created'][:19]} UTC on {env.get('cpu')} ({env.get('cpu_count')} cores), "
        f"torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
        f"default threads (torch: {env.get('torch_threads')}, ORT: one per physical core); "
        f"deploy form, random weights, {img}x{img}, fp32, p50 of the timed iterations.",
        "",
        "| model | batch | PyTorch p50 | ORT p50 | PyTorch img/s | ORT img/s | ORT speed-up (torch p50 / ORT p50) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (model, batch_size), by_backend in rows.items():
        torch_b, ort_b = (by_backend.get(name, (None, None))[0] for name in ("torch", "ort"))
        cells = [f"{b['latency']['p50_ms']:.1f} ms" if b else "-" for b in (torch_b, ort_b)] + [
            f"{b['throughput_ips']:.1f}" if b else "-" for b in (torch_b, ort_b)
        ]
        ratio = f"{torch_b['latency']['p50_ms'] / ort_b['latency']['p50_ms']:.2f}x" if torch_b and ort_b else "-"
        lines.append(f"| {model} | {batch_size} | " + " | ".join(cells) + f" | {ratio} |")
    refs = [f"{run['reference']['ms']:.2f}" for run in doc["runs"] if run.get("reference")]
    if refs:
        lines += ["", f"Reference workload (conv_stack) p50 per run, ms: {', '.join(refs)}."]
    foreign = [
        run["machine"]["foreign_cores"] for run in doc["runs"] if (run.get("machine") or {}).get("foreign_cores")
    ]
    if foreign:
        lines.append(f"CPU used by other processes during the runs: {min(foreign):.2f} to {max(foreign):.2f} cores.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=HERE / "suite.json")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the run's JSON")
    parser.add_argument("--compare", type=Path, default=None, help="baseline JSON to gate against (exit 1)")
    parser.add_argument("--normalize", action="store_true", help="compare in reference-workload units")
    parser.add_argument("--max-regression", default="10%")
    parser.add_argument("--report", type=Path, default=None, help="write the comparison markdown here")
    parser.add_argument("--write-baseline", type=Path, default=None, help="also save this run as the baseline")
    parser.add_argument("--summary", type=Path, default=None, help="write a markdown summary of this run here")
    parser.add_argument("--wait-idle", type=float, default=0.0, help="wait up to S s for a quiet CPU before each run")
    parser.add_argument("--retries", type=int, default=0, help="repeat a run disturbed by other processes N times")
    args = parser.parse_args(argv)
    try:
        progress = default_progress() if sys.stderr.isatty() else None
        doc = run_suite(load_suite(args.suite), progress, wait_idle=args.wait_idle, retries=args.retries)
        stamp = doc["created"][:19].replace(":", "").replace("-", "")
        out = args.out / f"suite_{stamp}.json"
        for path in [out] + ([args.write_baseline] if args.write_baseline else []):
            atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
            print(f"wrote {path}")
        if args.summary:
            atomic_write_text(args.summary, summarize(doc))
            print(f"wrote {args.summary}")
        if args.compare:
            threshold = parse_threshold(args.max_regression)
            report = compare_results(args.compare, doc, max_regression=threshold, normalize=args.normalize)
            print(report.to_markdown(), end="")
            if args.report:
                atomic_write_text(args.report, report.to_markdown())
            return 0 if report.passed else 1
    except YoloDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
