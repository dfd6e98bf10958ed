"""PyTorch CPU latency of the training form against the deploy (re-parameterized) form, in one run.

Usage:
    python benchmarks/reparam_latency.py [--models yolov6n yolov6s] [--img 640] [--iters 20] [--json out.json]

Both forms of a model are timed interleaved (train, deploy, train, deploy, ...) at batch 1 so that they share
the machine's background load; the reported figure to trust is the ratio train/deploy of the medians.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from yolodeploy import reparameterize_model
from yolodeploy.bench.env import capture_environment
from yolodeploy.bench.latency import time_interleaved
from yolodeploy.models import create_model
from yolodeploy.utils.io import atomic_write_text

DEFAULT_MODELS = ["yolov6n", "yolov6s", "yolov7-tiny", "yolov9-t", "gelan-t"]


def bench_model(name: str, img_size: int, warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    train = create_model(name).eval()
    deploy = reparameterize_model(train)
    x = torch.rand(1, 3, img_size, img_size)

    def run(model):
        def call():
            with torch.inference_mode():
                model(x)

        return call

    stats = time_interleaved({"train": run(train), "deploy": run(deploy)}, warmup=warmup, iters=iters)
    ratio = stats["train"].p50_ms / stats["deploy"].p50_ms
    return {
        "model": name,
        "img_size": img_size,
        "batch": 1,
        "ratio_train_over_deploy_p50": ratio,
        **{form: s.to_dict() for form, s in stats.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    print(f"{'model':<12}{'train p50 ms':>14}{'deploy p50 ms':>15}{'ratio':>8}")
    for name in args.models:
        r = bench_model(name, args.img, args.warmup, args.iters)
        results.append(r)
        print(
            f"{name:<12}{r['train']['p50_ms']:>14.1f}{r['deploy']['p50_ms']:>15.1f}"
            f"{r['ratio_train_over_deploy_p50']:>7.2f}x"
        )
    if args.json:
        doc = {
            "benchmark": "reparam_latency",
            "environment": capture_environment(),
            "config": vars(args),
            "results": results,
        }
        atomic_write_text(args.json, json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
