"""The YOLOv6 paper's Table 15 at our scale: PTQ AP drop of a RepOpt-trained vs a plainly (RepVGG) trained model.

Usage:
    python benchmarks/repopt_ptq.py --pair LABEL PLAIN.json REPOPT.json [--pair ...]
        [--json benchmarks/results/repopt_ptq.json]

Each JSON is the ``--json`` record of ``yolodeploy quantize CHECKPOINT --data D --ptq ...`` (FP32 and PTQ AP of one
model, with the command). The checkpoint named in that command carries its training config (``train_config`` in
its metadata: model, epochs, schedule, ``repopt_scales``); its run folder's ``results.json`` gives the training
time. The committed demo model has no training metadata (it was re-saved in fp16): its training comes from
``results/demo_model.json``. A pair label already in the output file is replaced, other pairs are kept, so pairs
trained in different sessions accumulate in one record. Prints the table; writes the JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
from pathlib import Path
from typing import Any

from yolodeploy.utils.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "repopt_ptq.json"
DEMO_RECORD = RESULTS.with_name("demo_model.json")
TRAIN_KEYS = ("model", "epochs", "img_size", "batch_size", "seed", "close_mosaic", "repopt_scales")


def checkpoint_of(command: str) -> str:
    """The model argument of a ``yolodeploy quantize MODEL ...`` command."""
    argv = shlex.split(command)
    return argv[argv.index("quantize") + 1]


def training_summary(checkpoint: str) -> dict[str, Any]:
    """Arch, training config, final-epoch metrics and training time, from the checkpoint's own metadata."""
    from safetensors import safe_open

    with safe_open(checkpoint, "pt") as handle:
        meta = json.loads(handle.metadata()["yolodeploy"])
    user = meta.get("user", {})
    config = user.get("train_config", {})
    summary = {"checkpoint": checkpoint, "arch": meta.get("arch"), "epoch": user.get("epoch")}
    if not config:
        return {**summary, **recorded_training(checkpoint)}
    summary["train"] = {key: config.get(key) for key in TRAIN_KEYS}
    summary["train"]["warmup_epochs"] = config.get("optim", {}).get("warmup_epochs")
    results = Path(config.get("output", "")) / "results.json"
    if results.is_file():
        epochs = json.loads(results.read_text())
        summary["train_seconds"] = round(sum(e.get("train_seconds", 0.0) for e in epochs), 1)
    return summary


def recorded_training(checkpoint: str) -> dict[str, Any]:
    """Training facts of a checkpoint without metadata, from ``demo_model.json`` when it is that record's model."""
    record = json.loads(DEMO_RECORD.read_text()) if DEMO_RECORD.is_file() else {}
    if record.get("checkpoint") != checkpoint:
        return {"train": None}
    argv = record["train_command"]
    train = {"model": argv[argv.index("--model") + 1], "epochs": record["epochs"], "command": shlex.join(argv)}
    return {"epoch": record.get("best_epoch"), "train": train, "train_seconds": record.get("train_seconds")}


def model_row(record_path: str) -> dict[str, Any]:
    """FP32 / PTQ AP and the drop in points of one quantize record, with where the model came from."""
    rows = json.loads(Path(record_path).read_text())["rows"]
    fp32, ptq = rows["fp32"], rows["ptq"]
    row = {"fp32_ap": fp32["ap"], "ptq_ap": ptq["ap"], "fp32_ap50": fp32["ap50"], "ptq_ap50": ptq["ap50"]}
    row["ptq_ap_drop_points"] = round((fp32["ap"] - ptq["ap"]) * 100, 3)
    row["quantize_command"] = ptq["command"]
    row["record"] = record_path
    return {**row, **training_summary(checkpoint_of(ptq["command"]))}


def markdown(pairs: dict[str, dict]) -> str:
    lines = ["| pair | model | epochs | FP32 AP | PTQ AP | drop (points) |", "|---|---|---:|---:|---:|---:|"]
    for label, pair in pairs.items():
        for kind in ("plain", "repopt"):
            row = pair[kind]
            epochs = (row.get("train") or {}).get("epochs", "?")
            lines.append(f"| {label} | {kind} ({row['arch']}) | {epochs} | {row['fp32_ap']:.4f} | "
                         f"{row['ptq_ap']:.4f} | {row['ptq_ap_drop_points']:+.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("LABEL", "PLAIN", "REPOPT"))
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    out = Path(args.json)
    record = json.loads(out.read_text()) if out.is_file() else {}
    pairs = record.get("pairs", {})
    for label, plain, repopt in args.pair:
        pairs[label] = {"plain": model_row(plain), "repopt": model_row(repopt)}
    record = {
        "version": 2,
        "experiment": "YOLOv6 paper Table 15 at our scale: PTQ AP drop of a RepOpt-trained vs a plainly trained "
        "(RepVGG) yolov6n; AP on the val split, ORT CPU, default PTQ",
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hyper_search": record.get("hyper_search"),
        "pairs": pairs,
    }
    table = markdown(pairs)
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), "# RepOpt vs plain: PTQ AP drop (paper Table 15)\n\n" + table)
    print(table + f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
