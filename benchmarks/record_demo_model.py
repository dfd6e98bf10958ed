"""Publish the trained demo model: fp16 checkpoint in the repository + ``benchmarks/results/demo_model.json``.

Usage (after the training command recorded below has finished in ``--run``):
    python benchmarks/record_demo_model.py --run runs/demo_train --data runs/synth

It stores the run's best EMA weights as fp16 (``assets/demo/yolov6n_synth.safetensors``), evaluates that file with
``yolodeploy eval`` on the synthetic val split (so the recorded AP is what anyone gets from the committed file), and
writes the machine-readable record: checkpoint, data_command, val_split, train_command, train_seconds, ap, ap50.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from yolodeploy.models.checkpoint import load_checkpoint, save_checkpoint
from yolodeploy.train.state import read_state_metadata
from yolodeploy.utils.io import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
DATA_COMMAND = ["yolodeploy", "data", "synth", "runs/synth", "--images", "2500", "--classes", "4", "--img-size", "256",
                "--seed", "0"]  # fmt: skip
TRAIN_COMMAND = ["yolodeploy", "train", "--model", "yolov6n", "--data", "runs/synth", "--epochs", "32", "--img", "224",
                 "--batch", "16", "--nominal-batch", "16", "--workers", "1", "--warmup-epochs", "2",
                 "--min-warmup-steps", "0", "--close-mosaic", "6", "--seed", "0",
                 "--output", "runs/demo_train"]  # fmt: skip
IMG_SIZE = 224
CHECKPOINT = "assets/demo/yolov6n_synth.safetensors"


def evaluate(checkpoint: Path, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        command = [sys.executable, "-m", "yolodeploy.cli.main", "eval", str(checkpoint), "--data", data,
                   "--img", str(IMG_SIZE), "--json", str(out)]  # fmt: skip
        subprocess.run(command, check=True, cwd=REPO)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo_train", help="output folder of the training run")
    parser.add_argument("--data", default="runs/synth", help="dataset root made by DATA_COMMAND")
    parser.add_argument("--json", default="benchmarks/results/demo_model.json")
    args = parser.parse_args(argv)
    run = Path(args.run)
    state = read_state_metadata(run / "state.safetensors")
    if state["next_epoch"] < state["config"]["epochs"]:
        raise SystemExit(f"{run}: training stopped at epoch {state['next_epoch']}; finish it with --resume first")
    model = load_checkpoint(run / "best.safetensors")
    best = max(state["history"], key=lambda record: record.get("ap", -1))
    save_checkpoint(model, REPO / CHECKPOINT, half=True, source="benchmarks/record_demo_model.py",
                    train_command=TRAIN_COMMAND, data_command=DATA_COMMAND, best_epoch=best["epoch"])  # fmt: skip
    result = evaluate(REPO / CHECKPOINT, args.data)
    metrics = result["metrics"]
    record = {
        "checkpoint": CHECKPOINT,
        "checkpoint_bytes": (REPO / CHECKPOINT).stat().st_size,
        "data_command": DATA_COMMAND,
        "val_split": "images/val",
        "val_annotations": "annotations/instances_val.json",
        "img_size": IMG_SIZE,
        "train_command": TRAIN_COMMAND,
        "train_seconds": round(state["train_seconds"], 1),
        "epochs": state["config"]["epochs"],
        "best_epoch": best["epoch"],
        "train_images_per_second_median": sorted(r["images_per_second"] for r in state["history"])[
            len(state["history"]) // 2
        ],  # noqa: E501
        "ap": metrics["ap"],
        "ap50": metrics["ap50"],
        "eval_command": ["yolodeploy", "eval", CHECKPOINT, "--data", "runs/synth", "--img", str(IMG_SIZE)],
        "history": [{k: r.get(k) for k in ("epoch", "loss", "ap", "ap50")} for r in state["history"]],
    }
    atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}: AP {metrics['ap']:.4f}, AP50 {metrics['ap50']:.4f}, {record['checkpoint_bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
