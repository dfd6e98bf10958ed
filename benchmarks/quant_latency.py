"""ONNX Runtime CPU latency of several ONNX files, interleaved in one process (the README's quantization table).

Usage:
    python benchmarks/quant_latency.py --img 224 FP32.onnx INT8.onnx [MORE.onnx ...]

Per batch size (1 with 20 calls per round, 32 with 3), one warm-up call per model, then 5 rounds in which every
model runs one untimed call (ONNX Runtime's worker threads spin after a call and would slow the next model's first
call) and then its timed calls in turn, so all models share the same background load; the figure is the median
call time and the speed-up is relative to the FIRST file. ``OnnxRuntimeRunner`` with ``--threads`` (2), all graph
optimizations, one random input per batch size shared by all models. Prints one line per model and batch size.
"""

from __future__ import annotations

import argparse

import numpy as np

from yolodeploy.bench.latency import time_interleaved
from yolodeploy.deploy.runners import create_runner

ROUNDS = 5
CALLS_PER_ROUND = {1: 20, 32: 3}


def time_models(paths: list[str], img: int, batch: int, calls: int, threads: int) -> dict[str, float]:
    """Median milliseconds per call of each model, interleaved round by round."""
    runners = [create_runner(path, "ort", threads=threads).activate() for path in paths]
    x = np.random.rand(batch, 3, img, img).astype(np.float32)
    feeds = [{next(iter(runner.input_metadata())): x} for runner in runners]
    fns = {path: (lambda r=runner, feed=feed: r.infer(feed)) for path, runner, feed in zip(paths, runners, feeds)}
    stats = time_interleaved(fns, warmup=1, iters=ROUNDS, block=calls, settle=1)
    return {path: value.p50_ms for path, value in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="ONNX files; the first is the baseline of the speed-up")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for batch, calls in CALLS_PER_ROUND.items():
        medians = time_models(args.models, args.img, batch, calls, args.threads)
        base = medians[args.models[0]]
        for path, ms in medians.items():
            print(f"bs{batch} {path:40s} {ms:8.2f} ms  x{base / ms:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
