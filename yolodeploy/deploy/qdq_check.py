"""Structural checker for TensorRT's explicit-quantization (Q/DQ) rules.

Sources: NVIDIA TensorRT Developer Guide, "Explicit Quantization" (Q/DQ fusion, "Q/DQ Layer-Placement
Recommendations") and the ``IQuantizeLayer`` / ``IDequantizeLayer`` API reference. The rules below are our
reading of those pages, phrased as checks; none is an error for ONNX Runtime, they cost speed (a missed fusion,
an extra re-quantization) or make the TensorRT build fail.

=====  ==============================================================  ==========================================
Rule   Check                                                           Why (TensorRT developer guide / API)
=====  ==============================================================  ==========================================
QDQ1   Conv / ConvTranspose / Gemm / MatMul: data and weight input     A weighted op runs in int8 only when all its
       both quantized (DQ-fed) or both float.                          inputs are quantized (placement recs.).
QDQ2   Concat: quantized inputs and the Q on its output share one      Q propagates backwards through Concat;
       scale.                                                          unequal scales force re-quantization.
QDQ3   MaxPool / Resize / Upsample: the Q after the op has the input   DQ commutes forward through these ops; the
       DQ's scale.                                                     fused int8 op needs equal scales.
QDQ4   Q/DQ zero point: int8 and all zeros (symmetric).                Only symmetric signed quantization is
                                                                       supported (zero point must be 0).
QDQ5   Per-channel weight scale on the output-channel axis (Conv: 0,   Per-channel scales run along the weights'
       ConvTranspose: 1, Gemm: 0 if transB else 1, MatMul: last).      output-channel (K) axis.
QDQ6   Every Q feeds only DQ nodes (no dangling or unpaired Q).        No op consumes a bare int8 tensor.
QDQ7   A Q and each of its DQs use the same scale, zero point, axis.   A pair must be an exact round trip.
QDQ8   Scales strictly positive.                                       All scale coefficients must be > 0.
=====  ==============================================================  ==========================================

Example:
    >>> for violation in check_trt_qdq_rules(onnx.load("model_qdq.onnx")):
    ...     print(violation)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .qdq_graph import (
    const_value,
    dq_consumers,
    input_q,
    node_label,
    output_qs,
    same_values,
    scale_of,
    zero_point_of,
)
from .qdq_passes import PASS_THROUGH_OPS

__all__ = ["Violation", "RULES", "check_trt_qdq_rules"]

#: Rule id -> one-line description (the table above).
RULES = {
    "QDQ1": "weighted op with only one of data/weight quantized",
    "QDQ2": "Concat inputs/output quantized with different scales",
    "QDQ3": "MaxPool/Resize output Q scale differs from its input's",
    "QDQ4": "non-zero or unsigned zero point (TensorRT wants symmetric int8)",
    "QDQ5": "per-channel weight scale not on the output-channel axis",
    "QDQ6": "Q without a matching DQ (dangling)",
    "QDQ7": "Q and DQ of a pair disagree on scale/zero point/axis",
    "QDQ8": "non-positive scale",
}
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class Violation:
    """One broken rule: the node, the rule id (a key of :data:`RULES`) and a message naming the fix."""

    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule} {self.node}: {self.message}"


def _dq_fed(tensor: gs.Tensor) -> bool:
    return bool(tensor.inputs) and tensor.inputs[0].op == "DequantizeLinear"


def _scale_text(scales: list[np.ndarray]) -> str:
    return ", ".join(f"{float(scale.reshape(-1)[0]):.6g}" for scale in scales)


def _check_weighted(node: gs.Node) -> Iterator[Violation]:
    if node.op not in WEIGHTED_OPS or len(node.inputs) < 2:
        return
    data, weight = _dq_fed(node.inputs[0]), _dq_fed(node.inputs[1])
    if data != weight:
        which = "data input" if data else "weight"
        yield Violation(node_label(node), "QDQ1", f"only the {which} is quantized: quantize both or neither")


def _check_tied(node: gs.Node) -> Iterator[Violation]:
    if node.op == "Concat":
        scales = [scale_of(t.inputs[0]) for t in node.inputs if _dq_fed(t)]
        rule, fix = "QDQ2", "run tie_scales()"
    elif node.op in PASS_THROUGH_OPS and input_q(node.inputs[0]) is not None:
        scales = [scale_of(node.inputs[0].inputs[0])]
        rule, fix = "QDQ3", "the output Q should reuse the input scale (tie_scales())"
    else:
        return
    scales += [scale_of(q) for q in output_qs(node.outputs[0])]
    scales = [scale for scale in scales if scale is not None]
    if any(not same_values(scale, scales[0]) for scale in scales[1:]):
        yield Violation(node_label(node), rule, f"scales differ ({_scale_text(scales)}): {fix}")


def _check_qparams(node: gs.Node) -> Iterator[Violation]:
    if node.op not in ("QuantizeLinear", "DequantizeLinear"):
        return
    zero_point, scale = zero_point_of(node), scale_of(node)
    if zero_point is not None and (zero_point.dtype != np.int8 or zero_point.any()):
        message = f"zero point {zero_point.reshape(-1)[:4].tolist()} ({zero_point.dtype}): use int8 zero point 0"
        yield Violation(node_label(node), "QDQ4", message)
    if scale is not None and (scale <= 0).any():
        yield Violation(node_label(node), "QDQ8", "scale must be strictly positive")


def _expected_weight_axis(consumer: gs.Node, rank: int) -> int | None:
    if consumer.op == "Conv":
        return 0
    if consumer.op == "ConvTranspose":
        return 1
    if consumer.op == "Gemm":
        return 0 if consumer.attrs.get("transB", 0) else 1
    if consumer.op == "MatMul":
        return rank - 1
    return None


def _check_weight_axis(node: gs.Node) -> Iterator[Violation]:
    if node.op != "DequantizeLinear":
        return
    source = node.inputs[0]
    weight = const_value(source)
    if weight is None and source.inputs and source.inputs[0].op == "QuantizeLinear":
        weight = const_value(source.inputs[0].inputs[0])
    scale = scale_of(node)
    if weight is None or scale is None or scale.size <= 1:
        return
    axis = node.attrs.get("axis", 1) % weight.ndim
    for consumer in node.outputs[0].outputs:
        expected = _expected_weight_axis(consumer, weight.ndim)
        if expected is not None and axis != expected:
            message = f"per-channel axis {axis} for {consumer.op} weight: use axis {expected} (output channels)"
            yield Violation(node_label(node), "QDQ5", message)


def _check_pairs(node: gs.Node, graph_output_ids: set[int]) -> Iterator[Violation]:
    if node.op != "QuantizeLinear":
        return
    consumers = list(node.outputs[0].outputs)
    if not consumers or id(node.outputs[0]) in graph_output_ids or len(dq_consumers(node)) != len(consumers):
        yield Violation(node_label(node), "QDQ6", "output is not consumed only by DequantizeLinear nodes")
    for dq in dq_consumers(node):
        same_qparams = same_values(scale_of(node), scale_of(dq)) and same_values(zero_point_of(node), zero_point_of(dq))
        same_axis = node.attrs.get("axis", 1) == dq.attrs.get("axis", 1)
        if not (same_qparams and same_axis):
            yield Violation(node_label(dq), "QDQ7", f"does not match its Q {node_label(node)}: use the Q's qparams")


def check_trt_qdq_rules(model: onnx.ModelProto) -> list[Violation]:
    """Report violations of TensorRT's Q/DQ fusion rules (see the table in this module's docstring).

    Args:
        model: an explicit Q/DQ ONNX model; it is not modified.

    Returns:
        The violations in graph order; empty when the graph follows every rule.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = gs.import_onnx(copy)
    graph_output_ids = {id(tensor) for tensor in graph.outputs}
    violations: list[Violation] = []
    for node in graph.nodes:
        violations += _check_weighted(node)
        violations += _check_tied(node)
        violations += _check_qparams(node)
        violations += _check_weight_axis(node)
        violations += _check_pairs(node, graph_output_ids)
    return violations
