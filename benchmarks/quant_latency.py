"""ONNX Runtime CPU latency of several ONNX files, interleaved in one process (the README's quantization table).

Usage:
    python benchmarks/quant_latency.py --img 224 FP32.onnx INT8.onnx [MORE.onnx ...] [--rounds 10] [--bs 1 --bs 32]

Per batch size (1 with 20 calls per round, 32 with 3), one warm-up call per model, then ``--rounds`` rounds in
which every model waits 0.1 s and runs one untimed call (ONNX Runtime's worker threads spin-wait after a call and
would slow the next model's calls, as in ``quant_demo.py``) and then its timed calls in turn, so all models share
the same background load. Per model: the median over rounds of its per-round median call time, and the speed-up
over the FIRST file as the median of the per-round ratios, with their range (lowest-highest round). On a shared
host the load drifts between rounds; a ratio taken inside one round cancels most of that drift, and the range
shows how much is left. ``OnnxRuntimeRunner`` with ``--threads`` (2), all graph optimizations, one random image per
batch size shared by all models (as float NCHW, or as the pixels themselves for an ``export --uint8-input`` file).
Prints one line per model and batch size; ``--json FILE`` also writes them, with the per-round times, the command
and the machine (CPU model and SIMD flags: the ratios depend on the CPU).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys

import numpy as np

from yolodeploy.bench.latency import time_interleaved
from yolodeploy.core.preprocess import random_image_batch
from yolodeploy.deploy.runners import create_runner

ROUNDS = 10
CALLS_PER_ROUND = {1: 20, 32: 3}
PAUSE_S = 0.1  # before each model's calls in a round: the other sessions' worker threads stop spinning


def _random_feed(runner, batch: int, img: int) -> dict[str, np.ndarray]:
    """The same random pixels for every model, in its input format (float NCHW, or uint8 NHWC: ``--uint8-input``)."""
    name, meta = next(iter(runner.input_metadata().items()))
    return {name: random_image_batch(batch, img, meta.dtype)}


def time_rounds(paths: list[str], img: int, batch: int, rounds: int, threads: int) -> dict[str, list[float]]:
    """Per model, its median milliseconds per call in each round (rounds interleaved across the models)."""
    runners = [create_runner(path, "ort", threads=threads).activate() for path in paths]
    feeds = [_random_feed(runner, batch, img) for runner in runners]
    fns = {path: (lambda r=runner, feed=feed: r.infer(feed)) for path, runner, feed in zip(paths, runners, feeds)}
    per_round: dict[str, list[float]] = {path: [] for path in paths}
    for index in range(rounds):
        stats = time_interleaved(
            fns, warmup=int(index == 0), iters=1, block=CALLS_PER_ROUND[batch], settle=1, pause_s=PAUSE_S
        )
        for path, value in stats.items():
            per_round[path].append(value.p50_ms)
    return per_round


def summarize(per_round: dict[str, list[float]]) -> dict[str, dict]:
    """Per model: median ms, and the speed-up over the first file as the median (low, high) of per-round ratios."""
    base = next(iter(per_round.values()))
    summary = {}
    for path, times in per_round.items():
        ratios = sorted(b / t for b, t in zip(base, times))
        summary[path] = {"median_ms": statistics.median(times), "speedup": statistics.median(ratios),
                         "speedup_low": ratios[0], "speedup_high": ratios[-1], "per_round_ms": times}  # fmt: skip
    return summary


def summary_lines(per_round: dict[str, list[float]], batch: int) -> list[str]:
    """``bs1 FILE  ms  xSPEED-UP (LOW-HIGH)`` per model; the speed-up over the first file, per round."""
    return [
        f"bs{batch} {path:40s} {row['median_ms']:8.2f} ms  x{row['speedup']:.2f}"
        f" ({row['speedup_low']:.2f}-{row['speedup_high']:.2f})"
        for path, row in summarize(per_round).items()
    ]


def write_record(path: str, args: argparse.Namespace, results: dict[int, dict[str, list[float]]]) -> None:
    from yolodeploy.bench.env import capture_environment
    from yolodeploy.utils.io import atomic_write_text

    record = {
        "command": shlex.join(["python", "benchmarks/quant_latency.py", *sys.argv[1:]]),
        "img_size": args.img,
        "threads": args.threads,
        "rounds": args.rounds,
        "baseline": args.models[0],
        "batches": {f"bs{batch}": summarize(per_round) for batch, per_round in results.items()},
        "environment": capture_environment(),
    }
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="ONNX files; the first is the baseline of the speed-up")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--bs", type=int, action="append", choices=sorted(CALLS_PER_ROUND), help="default: 1 and 32")
    parser.add_argument("--json", help="also write the figures (and the machine) to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    results = {}
    for batch in args.bs or sorted(CALLS_PER_ROUND):
        results[batch] = time_rounds(args.models, args.img, batch, args.rounds, args.threads)
        print("\n".join(summary_lines(results[batch], batch)))
    if args.json:
        write_record(args.json, args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
