"""ONNX Runtime vs OpenVINO CPU latency of an FP32 and an INT8 (Q/DQ) ONNX file, interleaved in one process.

Usage (OpenVINO is optional: ``pip install -e ".[openvino]"``; the dev extra has it too):
    python benchmarks/openvino_latency.py FP32.onnx INT8.onnx [--img 224] [--threads 2] [--json out.json]

Both runtimes run both files through yolodeploy's runners: ``OnnxRuntimeRunner`` and ``OpenVINORunner`` (CPU,
``INFERENCE_PRECISION_HINT=f32`` -- its default on this CPU is bf16, which would not be an FP32 baseline --, the
LATENCY hint, compiled for each batch size), both with ``--threads``. Per batch size (1: 20 calls per round,
32: 3), 5 rounds in which every model waits 100 ms and makes one untimed call before its timed calls (ORT's worker
threads spin after a call). Prints the median per model and its speed-up over ORT FP32; ``--json`` also writes them
with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable

import numpy as np

from yolodeploy.bench.latency import time_interleaved
from yolodeploy.deploy.runners import create_runner
from yolodeploy.deploy.runners.openvino_runner import is_available as openvino_available

ROUNDS = 5
CALLS_PER_ROUND = {1: 20, 32: 3}
PAUSE_S = 0.1  # before each model's calls in a round: ORT's worker threads stop spinning


def runner_call(path: str, backend: str, threads: int) -> Callable[[np.ndarray], object]:
    """An active runner's infer on ``images``: ORT, or OpenVINO with its f32 hint and static-shape compiles."""
    runner = create_runner(path, backend, threads=threads).activate()
    name = next(iter(runner.input_metadata()))
    return lambda x: runner.infer({name: x})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", help="FP32 ONNX file (the baseline)")
    parser.add_argument("int8", help="INT8 Q/DQ ONNX file")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the medians and speed-ups here")
    args = parser.parse_args(argv)
    if not openvino_available():
        print("openvino is not installed: pip install -e '.[openvino]'", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    for batch, per_round in CALLS_PER_ROUND.items():
        calls = {
            f"{backend} {precision}": runner_call(path, backend, args.threads)
            for backend in ("ort", "openvino")
            for precision, path in (("fp32", args.fp32), ("int8", args.int8))
        }
        x = np.random.default_rng(0).random((batch, 3, args.img, args.img), dtype=np.float32)
        stats = time_interleaved(
            {key: (lambda call=call, x=x: call(x)) for key, call in calls.items()},
            warmup=1, iters=ROUNDS, block=per_round, settle=1, pause_s=PAUSE_S,
        )  # fmt: skip
        medians = {key: value.p50_ms for key, value in stats.items()}
        for key, ms in medians.items():
            print(f"bs{batch} {key:14s} {ms:9.2f} ms  x{medians['ort fp32'] / ms:.2f} vs ORT FP32")
        results[str(batch)] = {key: {"p50_ms": ms, "speedup_vs_ort_fp32": medians["ort fp32"] / ms}
                               for key, ms in medians.items()}  # fmt: skip
    if args.json:
        write_record(args, results)
    return 0


def write_record(args: argparse.Namespace, results: dict[str, dict]) -> None:
    from yolodeploy.bench.env import capture_environment
    from yolodeploy.utils.io import atomic_write_text

    record = {"command": shlex.join(["python", "benchmarks/openvino_latency.py", *sys.argv[1:]]),
              "fp32": args.fp32, "int8": args.int8, "img_size": args.img, "threads": args.threads,
              "rounds": ROUNDS, "calls_per_round": CALLS_PER_ROUND, "results": results,
              "environment": capture_environment()}  # fmt: skip
    atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    raise SystemExit(main())
