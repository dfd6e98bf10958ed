"""Where ONNX Runtime CPU spends a call of an FP32 and an INT8 (Q/DQ) model: time per part, from its profiler.

Usage:
    python benchmarks/ort_profile.py FP32.onnx INT8.onnx [--img 224] [--bs 1] [--threads 2] [--json out.json]

Explains a speed-up figure rather than measuring one (``quant_latency.py`` does that): ONNX Runtime's profiler
(``SessionOptions.enable_profiling``) records every kernel's duration, and this script sums them per *part* of the
network: the top-level module scope of the node's name (``/backbone/...`` -> backbone, ``/neck``, ``/detect``)
and the kind of op (``conv``: Conv / FusedConv / QLinearConv / MatMulIntegerToFloat; ``layout``: Transpose and
the NCHWc reorders; ``q/dq``; ``int8 act``: QLinearSigmoid / QLinearMul; ``other``). The first conv (the one that
reads the image, with 3 input channels) is its own part, ``first conv``. Rules, no layer names: it works for every
zoo model.

The profiler adds a fixed cost to every node, so the per-part sums add up to more than a plain call and the
INT8 graph, which has more nodes, is penalized more: read the ratios per part, not the totals, and take
whole-call speed-ups from ``quant_latency.py``. Same session settings as ``OnnxRuntimeRunner`` (all graph
optimizations, ``--threads`` intra-op threads). Prints one table; ``--json`` writes it with the command and machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import tempfile
from typing import Any

from yolodeploy.core.preprocess import random_image_batch
from yolodeploy.deploy.runners.onnxrt import ORT_TYPES, import_onnxruntime
from yolodeploy.utils.markdown import markdown_table

CALLS = {1: 120, 32: 8}  # counted calls per batch size, after WARMUP profiled but not counted ones
WARMUP = 10
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "MatMulIntegerToFloat"}  # the last: 1x1 convs (convs_to_matmul)
LAYOUT_OPS = {"Transpose", "ReorderInput", "ReorderOutput"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
INT8_ACTIVATION_OPS = {"QLinearSigmoid", "QLinearMul", "QLinearLeakyRelu", "QLinearAdd"}


def op_kind(op: str) -> str:
    """The kind of an executed op: conv, layout, q/dq, int8 act or other."""
    for kind, ops in (("conv", CONV_OPS), ("layout", LAYOUT_OPS), ("q/dq", QDQ_OPS), ("int8 act", INT8_ACTIVATION_OPS)):
        if op in ops:
            return kind
    return "other"


def scope(node_name: str) -> str:
    """The top-level module scope of an exported node name (``/neck/Rep_p4/...`` -> ``neck``); ``graph`` if none."""
    parts = node_name.split("/")
    return parts[1] if node_name.startswith("/") and len(parts) > 2 else "graph"


def part_of(op: str, node_name: str, first_conv: str | None) -> str:
    if node_name == first_conv:
        return "first conv"
    return f"{scope(node_name)} {op_kind(op)}"


def kernel_events(profile: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """``(op, node name, microseconds)`` of every kernel run in an ONNX Runtime profile, in execution order."""
    suffix = "_kernel_time"
    return [
        (event["args"]["op_name"], event["name"][: -len(suffix)], float(event["dur"]))
        for event in profile
        if event.get("cat") == "Node" and event.get("name", "").endswith(suffix)
    ]


def summarize(events: list[tuple[str, str, float]], calls: int) -> dict[str, dict[str, float]]:
    """Per part: milliseconds per call and nodes per call."""
    first_conv = next((name for op, name, _ in events if op in CONV_OPS), None)
    time_us: dict[str, float] = collections.defaultdict(float)
    nodes: collections.Counter[str] = collections.Counter()
    for op, name, duration in events:
        part = part_of(op, name, first_conv)
        time_us[part] += duration
        nodes[part] += 1
    return {part: {"ms": time_us[part] / calls / 1e3, "nodes": nodes[part] / calls} for part in time_us}


def profile_model(path: str, img: int, batch: int, threads: int) -> dict[str, dict[str, float]]:
    """Run ``path`` under ONNX Runtime's profiler on a random input; per-part times of the calls after warm-up."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    calls = CALLS.get(batch, 8)
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        image = session.get_inputs()[0]  # a uint8 one: an export with --uint8-input
        feed = {image.name: random_image_batch(batch, img, ORT_TYPES[image.type])}
        for _ in range(WARMUP + calls):
            session.run(None, feed)
        with open(session.end_profiling()) as handle:
            events = kernel_events(json.load(handle))
    return summarize(events[WARMUP * _first_run_length(events) :], calls)  # warm-up calls not counted


def _first_run_length(events: list[tuple[str, str, float]]) -> int:
    """Kernel events of one call: the index where the first node's name comes round again."""
    first = events[0][1]
    return next((i for i in range(1, len(events)) if events[i][1] == first), len(events))


def table(fp32: dict[str, dict], int8: dict[str, dict]) -> str:
    """Parts by FP32 time: FP32 ms, INT8 ms, FP32/INT8 ratio, node counts; a total row last."""
    parts = sorted(
        set(fp32) | set(int8), key=lambda p: -max(fp32.get(p, {}).get("ms", 0), int8.get(p, {}).get("ms", 0))
    )
    rows = []
    for part in [*parts, "total"]:
        a, b = (_total(side) if part == "total" else side.get(part, {"ms": 0.0, "nodes": 0}) for side in (fp32, int8))
        ratio = f"{a['ms'] / b['ms']:.2f}" if a["ms"] and b["ms"] else "-"
        rows.append([part, f"{a['ms']:.3f}", f"{b['ms']:.3f}", ratio, f"{a['nodes']:.0f} / {b['nodes']:.0f}"])
    return markdown_table(["part", "FP32 ms", "INT8 ms", "FP32 / INT8", "nodes (FP32 / INT8)"], rows)


def _total(side: dict[str, dict]) -> dict[str, float]:
    return {"ms": sum(v["ms"] for v in side.values()), "nodes": sum(v["nodes"] for v in side.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", help="the FP32 ONNX file")
    parser.add_argument("int8", help="the INT8 Q/DQ ONNX file (the ort flavour)")
    parser.add_argument("--img", type=int, default=224)
    parser.add_argument("--bs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the per-part figures here")
    args = parser.parse_args(argv)
    results = {
        role: profile_model(path, args.img, args.bs, args.threads)
        for role, path in (("fp32", args.fp32), ("int8", args.int8))
    }
    print(f"ONNX Runtime profiler, {args.img} px, batch {args.bs}, {args.threads} threads, ms per call:\n")
    print(table(results["fp32"], results["int8"]))
    if args.json:
        write_record(args, results)
    return 0


def write_record(args: argparse.Namespace, results: dict[str, dict]) -> None:
    from yolodeploy.bench.env import capture_environment
    from yolodeploy.utils.io import atomic_write_text

    argv = [args.fp32, args.int8, "--img", str(args.img), "--bs", str(args.bs), "--threads", str(args.threads),
            "--json", args.json]  # fmt: skip
    record = {"command": shlex.join(["python", "benchmarks/ort_profile.py", *argv]), "fp32": args.fp32,
              "int8": args.int8, "img_size": args.img, "batch": args.bs, "threads": args.threads,
              "parts_ms_per_call": results, "table": table(results["fp32"], results["int8"]),
              "environment": capture_environment()}  # fmt: skip
    atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    raise SystemExit(main())
