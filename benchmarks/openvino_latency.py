"""ONNX Runtime vs OpenVINO CPU latency of an FP32 and an INT8 (Q/DQ) ONNX file, interleaved in one process.

Usage (OpenVINO is not a yolodeploy dependency: ``.venv/bin/pip install openvino==2026.4.1`` first):
    python benchmarks/openvino_latency.py FP32.onnx INT8.onnx [--img 224] [--threads 2]

Both runtimes run both files: ORT with ``intra_op_num_threads``, OpenVINO on "CPU" with
``INFERENCE_PRECISION_HINT=f32`` (its default on this CPU is bf16, which would not be an FP32 baseline),
``INFERENCE_NUM_THREADS`` and the LATENCY hint, reshaped to each batch size. Per batch size (1: 20 calls per round,
32: 3), 5 rounds in which every model waits 100 ms and makes one untimed call before its timed calls (ORT's worker
threads spin after a call). Prints the median per model and its speed-up over ORT FP32.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from yolodeploy.bench.latency import time_interleaved

ROUNDS = 5
CALLS_PER_ROUND = {1: 20, 32: 3}
PAUSE_S = 0.1  # before each model's calls in a round: ORT's worker threads stop spinning


def ort_call(path: str, threads: int) -> Callable[[np.ndarray], object]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def openvino_call(path: str, batch: int, img: int, threads: int) -> Callable[[np.ndarray], object]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0].any_name: [batch, 3, img, img]})
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda x: request.infer({0: x})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", help="FP32 ONNX file (the baseline)")
    parser.add_argument("int8", help="INT8 Q/DQ ONNX file")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("openvino is not installed: pip install openvino (it is not a yolodeploy dependency)", file=sys.stderr)
        return 2
    for batch, per_round in CALLS_PER_ROUND.items():
        calls = {
            "ort fp32": ort_call(args.fp32, args.threads),
            "ort int8": ort_call(args.int8, args.threads),
            "openvino f32": openvino_call(args.fp32, batch, args.img, args.threads),
            "openvino int8": openvino_call(args.int8, batch, args.img, args.threads),
        }
        x = np.random.default_rng(0).random((batch, 3, args.img, args.img), dtype=np.float32)
        stats = time_interleaved(
            {key: (lambda call=call, x=x: call(x)) for key, call in calls.items()},
            warmup=1, iters=ROUNDS, block=per_round, settle=1, pause_s=PAUSE_S,
        )  # fmt: skip
        medians = {key: value.p50_ms for key, value in stats.items()}
        for key, ms in medians.items():
            print(f"bs{batch} {key:14s} {ms:9.2f} ms  x{medians['ort fp32'] / ms:.2f} vs ORT FP32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
