"""Training throughput on this machine: images/s of one optimizer step (forward + loss + backward + SGD) and of the
augmented data pipeline, per model and input size.

Usage:
    python benchmarks/train_throughput.py [--models yolov6n] [--img 224 320] [--batch 16] [--iters 8]
        [--data runs/synth] [--json benchmarks/results/train_throughput.json]

The step is timed on real augmented batches (mosaic, HSV, flip, affine) drawn once from ``--data`` (any COCO-format
root; without it, a 64-image synthetic dataset is drawn in a temporary folder), so the figure is the compute cost
of a training step; the data pipeline is timed separately (items/s of one process). The wall-clock figure of a
whole run is in its ``results.json`` (``images_per_second`` per epoch, which includes data loading).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from yolodeploy.bench.env import capture_environment
from yolodeploy.core.data.augment import AugmentConfig
from yolodeploy.core.data.datasets import CocoDetection
from yolodeploy.core.data.train_dataset import TrainDetectionDataset, train_collate
from yolodeploy.models import create_model
from yolodeploy.train.objective import build_objective
from yolodeploy.train.optim import OptimConfig, build_sgd
from yolodeploy.utils.io import atomic_write_text


def _dataset(data: str | None, tmp: str) -> CocoDetection:
    if data is None:
        from yolodeploy.core.data.synth import synthesize_dataset

        data = str(Path(tmp) / "synth")
        synthesize_dataset(data, images=64, classes=4, img_size=256, seed=0, splits=(1.0, 0.0, 0.0))
    return CocoDetection(Path(data) / "images" / "train", Path(data) / "annotations" / "instances_train.json")


def bench_pipeline(base: CocoDetection, img_size: int, items: int) -> float:
    dataset = TrainDetectionDataset(base, img_size, AugmentConfig(), seed=0)
    dataset.set_epoch(0, mosaic=True)
    start = time.perf_counter()
    for index in range(items):
        dataset[index % len(dataset)]
    return items / (time.perf_counter() - start)


def bench_step(name: str, base: CocoDetection, img_size: int, batch: int, warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    dataset = TrainDetectionDataset(base, img_size, AugmentConfig(), seed=0)
    dataset.set_epoch(0, mosaic=True)
    batches = [train_collate([dataset[(i * batch + j) % len(dataset)] for j in range(batch)]) for i in range(4)]
    model = create_model(name, num_classes=len(base.category_ids)).train()
    objective = build_objective(model)
    optimizer = build_sgd(model, OptimConfig(), batch, 1)
    times = []
    for step in range(warmup + iters):
        images, targets = batches[step % len(batches)]
        start = time.perf_counter()
        objective(model(images), targets).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return {"model": name, "img_size": img_size, "batch": batch, "step_p50_s": median,
            "images_per_second": batch / median, "steps_timed": iters}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov6n"])
    parser.add_argument("--img", nargs="+", type=int, default=[224, 320])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--data", default=None, help="COCO-format dataset root (default: a small synthetic one)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = _dataset(args.data, tmp)
        pipeline = {size: bench_pipeline(base, size, 64) for size in args.img}
        results = [bench_step(m, base, s, args.batch, args.warmup, args.iters) for m in args.models for s in args.img]
    print(f"{'model':<12}{'img':>5}{'batch':>6}{'step p50 s':>12}{'train img/s':>13}{'pipeline items/s':>18}")
    for r in results:
        r["pipeline_items_per_second"] = pipeline[r["img_size"]]
        print(f"{r['model']:<12}{r['img_size']:>5}{r['batch']:>6}{r['step_p50_s']:>12.2f}"
              f"{r['images_per_second']:>13.1f}{r['pipeline_items_per_second']:>18.1f}")  # fmt: skip
    if args.json:
        doc = {"benchmark": "train_throughput", "environment": capture_environment(), "config": vars(args),
               "results": results}  # fmt: skip
        atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
