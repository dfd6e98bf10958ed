"""Pick ONNX Runtime's faster x86 int8 conv kernel for each conv of a Q/DQ model, by timing both on this machine.

ONNX Runtime runs an int8 conv (DQ -> Conv -> Q) as ``QLinearConv`` with one of two MLAS kernels: the
"symmetric" direct conv kernel (``MlasConvSym*``), taken when the weight zero point is 0, or im2col + the
quantized GEMM, taken otherwise. Which one is faster depends on the CPU and on the conv's shape and batch: on the
Intel Xeon with AMX of the 2026-11-25 session, the GEMM kernel won for 28 of the demo model's 60 int8 convs at
batch 32 (19 of them in the backbone) and the whole model went from 54.0 to 47.1 ms (README, "Conv kernels tuned
per machine").

The choice is made without changing a single output value: symmetric weights ``w`` in [-127, 127] with zero point
0 are the same as ``w - 1`` with zero point -1 (``(w - 1) - (-1) = w``), so :func:`shift_weight_zero_points`
rewrites a conv's weight that way to route it to the GEMM kernel (or ``w + 1`` / +1 when the weight reaches
-128). :func:`tune_conv_kernels` times each int8 conv alone (a one-node ``QLinearConv`` model of the conv's
shape, weights and attributes at the given batch, both forms interleaved over several rounds) and shifts the ones
whose GEMM form is faster by more than ``margin``; :func:`compare_whole_models` then times the two whole graphs, and
the build keeps the tuned one only if it is faster as a whole. Like a TensorRT engine, the result is tuned for the
machine that ran it; ``build-engine --backend ort --tune-bs N`` records the timings in its sidecar. ORT flavour
only: TensorRT needs zero points of 0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from ..bench.latency import time_interleaved
from ..errors import ConfigError
from .qdq_graph import (
    conv_integer_weight,
    export_graph,
    import_graph,
    input_q,
    new_constant,
    new_node,
    scale_of,
    zero_point_of,
)
from .runners.onnxrt import import_onnxruntime

__all__ = [
    "ConvTactic",
    "weight_shift",
    "shift_weight_zero_points",
    "int8_conv_specs",
    "tune_conv_kernels",
    "compare_whole_models",
]

#: The GEMM form must be this much faster (median of per-round time ratios) to be chosen.
DEFAULT_MARGIN = 0.05
CONV_ATTRIBUTES = ("pads", "strides", "dilations", "group", "kernel_shape", "auto_pad")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """What it takes to time one int8 conv alone: its attributes and constant qparams, and its input shape."""

    name: str
    input_shape: tuple[int, ...]
    weight: np.ndarray
    weight_scale: np.ndarray
    input_scale: np.ndarray
    input_zero_point: np.ndarray
    attributes: dict


@dataclasses.dataclass(frozen=True)
class ConvTactic:
    """The timing of one conv: median microseconds per call with its symmetric and its shifted (GEMM) weight, and
    the median over rounds of their per-round ratio (GEMM / symmetric), which decides."""

    name: str
    input_shape: tuple[int, ...]
    symmetric_us: float
    gemm_us: float
    gemm_ratio: float
    gemm_chosen: bool

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "input_shape": list(self.input_shape)}


def weight_shift(weight: np.ndarray) -> int:
    """The zero point ``s`` whose weight ``weight + s`` still fits int8: -1 (no value at -128), else +1 (none at
    127), else 0 (the weight spans the whole range and cannot be shifted)."""
    if weight.dtype != np.int8:
        return 0
    if weight.min() > -128:
        return -1
    return 1 if weight.max() < 127 else 0


def _symmetric_int8_weight(conv: gs.Node) -> tuple[gs.Node, np.ndarray] | None:
    """The conv's weight DQ and its constant int8 weight, when its zero point is 0 (or absent)."""
    found = conv_integer_weight(conv)
    if found is None or found[1].dtype != np.int8:
        return None
    zero_point = zero_point_of(found[0])
    return None if zero_point is not None and zero_point.any() else found


def _shifted(weight: np.ndarray, shift: int) -> np.ndarray:
    """``weight + shift`` as int8 (the caller checked with :func:`weight_shift` that it fits)."""
    return (weight.astype(np.int16) + shift).astype(np.int8)


def _runs_as_qlinearconv(conv: gs.Node) -> bool:
    """ONNX Runtime fuses it into QLinearConv: a uint8 DQ(Q(x)) input and a Q on its output (or after a Relu)."""
    q = input_q(conv.inputs[0])
    if q is None or len(conv.inputs[0].inputs[0].inputs) < 3:
        return False
    zero_point = zero_point_of(conv.inputs[0].inputs[0])
    if zero_point is None or zero_point.dtype != np.uint8 or zero_point.size != 1:
        return False
    consumers = conv.outputs[0].outputs
    if len(consumers) == 1 and consumers[0].op == "Relu":
        consumers = consumers[0].outputs[0].outputs
    return len(consumers) > 0 and all(node.op == "QuantizeLinear" for node in consumers)


def _input_shapes(model: onnx.ModelProto, batch: int) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph's tensors with the first input's batch set to ``batch`` (shape inference)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dims = copy.graph.input[0].type.tensor_type.shape.dim
    if dims[0].HasField("dim_value") and dims[0].dim_value != batch:
        raise ConfigError(
            f"the model's batch is fixed at {dims[0].dim_value}; tune at that batch or export with --dynamic-batch"
        )
    dims[0].Clear()
    dims[0].dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(copy)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def int8_conv_specs(model: onnx.ModelProto, batch: int) -> list[ConvSpec]:
    """Every conv ONNX Runtime runs as QLinearConv with a symmetric int8 weight, at input batch ``batch``."""
    graph, shapes = import_graph(model), _input_shapes(model, batch)
    specs = []
    for conv in (node for node in graph.nodes if node.op == "Conv"):
        found = _symmetric_int8_weight(conv)
        shape = shapes.get(conv.inputs[0].name)
        if found is None or shape is None or not _runs_as_qlinearconv(conv):
            continue
        weight_dq, weight = found
        input_dq = conv.inputs[0].inputs[0]
        attributes = {key: value for key, value in conv.attrs.items() if key in CONV_ATTRIBUTES}
        specs.append(ConvSpec(conv.name, shape, weight, scale_of(weight_dq), scale_of(input_dq),
                              zero_point_of(input_dq), attributes))  # fmt: skip
    return specs


def shift_weight_zero_points(model: onnx.ModelProto, conv_names: Sequence[str]) -> onnx.ModelProto:
    """Route the named int8 convs to ONNX Runtime's GEMM kernel: weight ``w + s`` with zero point ``s``. Exact.

    A conv whose weight has no symmetric int8 form, or spans the whole int8 range, is left as it is.
    """
    graph, wanted = import_graph(model), set(conv_names)
    for conv in (node for node in graph.nodes if node.op == "Conv" and node.name in wanted):
        found = _symmetric_int8_weight(conv)
        shift = weight_shift(found[1]) if found is not None else 0
        if not shift:
            continue
        weight_dq, weight = found
        hint, scale = weight_dq.inputs[0].name, weight_dq.inputs[1]
        shifted = new_constant(graph, f"{hint}_shifted", _shifted(weight, shift))
        zero_point = new_constant(graph, f"{hint}_zero_point", np.full(scale_of(weight_dq).shape, shift, np.int8))
        dq = new_node(graph, "DequantizeLinear", shifted, [scale, zero_point], np.float32)
        dq.attrs.update(weight_dq.attrs)
        conv.inputs[1] = dq.outputs[0]
    graph.toposort()
    return export_graph(graph, model)


def _single_conv_model(spec: ConvSpec, shift: int) -> onnx.ModelProto:
    """A one-node QLinearConv model of ``spec`` (uint8 in and out), its weight shifted by ``shift``."""
    out_channels = spec.weight.shape[0]
    weight = _shifted(spec.weight, shift)
    initializers = [
        numpy_helper.from_array(spec.input_scale.reshape(()).astype(np.float32), "x_scale"),
        numpy_helper.from_array(spec.input_zero_point.reshape(()), "x_zero_point"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(spec.weight_scale.reshape(-1).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.full(spec.weight_scale.size, shift, np.int8), "w_zero_point"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero_point"),
        numpy_helper.from_array(np.zeros(out_channels, np.int32), "bias"),
    ]
    inputs = ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "bias"]
    node = helper.make_node("QLinearConv", inputs, ["y"], **spec.attributes)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(spec.input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


TimeTwo = Callable[[onnx.ModelProto, onnx.ModelProto, np.ndarray], list[tuple[float, float]]]


def interleaved_timer(
    threads: int | None, rounds: int = 5, round_seconds: float = 0.004, pause_s: float = 0.05
) -> TimeTwo:
    """Time two models of one input on ONNX Runtime CPU in alternating rounds: microseconds per call, per round.

    Both sessions are built and warmed up first; each round times about ``round_seconds`` of calls of one, then of
    the other (:func:`yolodeploy.bench.latency.time_interleaved`, the median call of each block), so the machine's
    drift over the rounds hits both alike (compare them round by round). Before each block: a ``pause_s`` sleep,
    then one untimed call. ONNX Runtime's worker threads spin-wait after a call, and the other session's spinning
    threads would take the cores from the one being timed (calls up to 2x slower here without the pause, as in the
    README's latency notes). With one thread there are no worker threads: no pause.
    """
    if threads == 1:
        pause_s = 0.0

    def time_two(first: onnx.ModelProto, second: onnx.ModelProto, feed: np.ndarray) -> list[tuple[float, float]]:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        sessions = [ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
                    for m in (first, second)]  # fmt: skip
        feeds = [{session.get_inputs()[0].name: feed} for session in sessions]
        calls = max(_calls_per_round(session, inputs, round_seconds) for session, inputs in zip(sessions, feeds))
        fns = {
            index: partial(session.run, None, inputs) for index, (session, inputs) in enumerate(zip(sessions, feeds))
        }
        per_round = []
        for _ in range(rounds):  # one call of time_interleaved per round: the pair of this round's medians
            stats = time_interleaved(fns, warmup=0, iters=1, block=calls, settle=1, pause_s=pause_s)
            per_round.append((stats[0].p50_ms * 1e3, stats[1].p50_ms * 1e3))
        return per_round

    return time_two


def _calls_per_round(session, inputs: dict[str, np.ndarray], seconds: float) -> int:
    """Warm ``session`` up; the number of calls (3 to 50) that take about ``seconds``."""
    for _ in range(3):
        session.run(None, inputs)
    start = time.perf_counter()
    session.run(None, inputs)
    return int(np.clip(np.ceil(seconds / max(time.perf_counter() - start, 1e-6)), 3, 50))


def _medians(per_round: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Median of each side over the rounds, and the median of the per-round ratios (second / first)."""
    rounds = np.asarray(per_round)
    first, second = (float(v) for v in np.median(rounds, axis=0))
    return first, second, float(np.median(rounds[:, 1] / rounds[:, 0]))


def tune_conv_kernels(
    model: onnx.ModelProto,
    batch: int,
    *,
    threads: int | None = None,
    margin: float = DEFAULT_MARGIN,
    timer: TimeTwo | None = None,
) -> tuple[onnx.ModelProto, list[ConvTactic]]:
    """Time every int8 conv of ``model`` in both kernel forms at ``batch``; shift those whose GEMM form wins.

    Returns the rewritten model (same outputs, bit for bit) and one :class:`ConvTactic` per timed conv.

    Example:
        >>> tuned, tactics = tune_conv_kernels(onnx.load("int8_ort.onnx"), batch=32, threads=2)
    """
    timer = timer or interleaved_timer(threads)
    rng = np.random.default_rng(0)
    tactics = []
    for spec in int8_conv_specs(model, batch):
        shift = weight_shift(spec.weight)
        if not shift:
            continue
        feed = rng.integers(0, 256, spec.input_shape, dtype=np.uint8)
        symmetric_us, gemm_us, ratio = _medians(
            timer(_single_conv_model(spec, 0), _single_conv_model(spec, shift), feed)
        )
        tactics.append(ConvTactic(spec.name, spec.input_shape, symmetric_us, gemm_us, ratio, ratio < 1.0 - margin))
    tuned = shift_weight_zero_points(model, [t.name for t in tactics if t.gemm_chosen])
    return tuned, tactics


def compare_whole_models(
    original: onnx.ModelProto,
    tuned: onnx.ModelProto,
    batch: int,
    *,
    threads: int | None = None,
    timer: TimeTwo | None = None,
) -> dict[str, float]:
    """Both whole models at ``batch`` on a random image batch: median ms per call and the median per-round ratio.

    Per-conv timings of convs run alone need not add up in the whole graph (caches, the layout transposes around
    each conv); this is the check that the tuned graph is faster as a whole.
    """
    timer = timer or interleaved_timer(threads, rounds=7, round_seconds=0.05, pause_s=0.1)
    dims = original.graph.input[0].type.tensor_type.shape.dim
    shape = (batch, *(d.dim_value for d in dims[1:]))
    rng = np.random.default_rng(0)
    if original.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8:  # export --uint8-input
        feed = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        feed = rng.random(shape, dtype=np.float32)
    original_us, tuned_us, ratio = _medians(timer(original, tuned, feed))
    return {"original_ms": original_us / 1e3, "tuned_ms": tuned_us / 1e3, "ratio": ratio}
