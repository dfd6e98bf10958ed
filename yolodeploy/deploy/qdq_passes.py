"""Graph passes on explicit Q/DQ ONNX models (the form `torch.fake_quantize_*` exports).

Every pass is a pure function ``ModelProto -> ModelProto``: the input is never mutated, the opset is kept, and
the result passes ``onnx.checker.check_model``. Scales and zero points may be initializers or ``Constant`` nodes;
a changed scale is written as a new initializer (the orphaned ``Constant`` node is dropped).

* :func:`tie_scales` makes Concat / MaxPool / Resize / residual-Add neighbourhoods share one activation scale,
  so TensorRT can fuse them without re-quantizing (see the rules table in :mod:`yolodeploy.deploy.qdq_check`).
* :func:`eliminate_redundant_qdq` collapses re-quantization chains and drops Q/DQ on tensors that only feed float
  ops (the set :data:`INT8_CONSUMER_OPS` is what counts as an int8 consumer).
* :func:`quantize_pass_through_inputs` moves the Q after Concat / MaxPool / nearest Resize (and other ops that
  only move or select values) onto their inputs, so ONNX Runtime sees DQ -> op -> Q (int8 op) and each
  Relu / Conv producer feeds exactly one Q (QLinearConv with the Relu folded in). Bit-exact.
* :func:`merge_duplicate_quantizers` makes identical Qs of one tensor (and identical DQs of one Q) one node.
* :func:`to_uint8_activations` rewrites symmetric int8 activations to uint8 with zero point 128 (lossless), the
  flavour ONNX Runtime's fast x86 kernels want; activations already uint8 (zero point 0) are left alone.

Graph helpers (reading constants and qparams, adding nodes) live in :mod:`yolodeploy.deploy.qdq_graph`.

Terms: an *activation Q* is a QuantizeLinear whose data input is not a constant; a *pair* is one Q and all the
DequantizeLinear nodes that consume it; a tensor is *quantized* when its producer is a DQ fed by an activation Q.

Example:
    >>> model = onnx.load("yolov6n_qdq.onnx")
    >>> trt_model = eliminate_redundant_qdq(tie_scales(model))
    >>> ort_model = eliminate_redundant_qdq(tie_scales(model), keep_conv_outputs=True)
    >>> ort_model = merge_duplicate_quantizers(quantize_pass_through_inputs(fold_weight_quantizers(ort_model)))
    >>> ort_model = to_uint8_activations(ort_model)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .qdq_graph import (
    const_value,
    dq_consumers,
    export_graph,
    import_graph,
    input_q,
    is_activation_q,
    new_constant,
    new_node,
    node_label,
    output_qs,
    replace_input,
    same_values,
    scale_of,
    zero_point_of,
)

__all__ = [
    "INT8_CONSUMER_OPS",
    "ORT_INT8_OPS",
    "PASS_THROUGH_OPS",
    "VALUE_SELECTING_OPS",
    "TiedGroup",
    "TieScalesReport",
    "tie_scales",
    "tie_scales_report",
    "eliminate_redundant_qdq",
    "quantize_pass_through_inputs",
    "merge_duplicate_quantizers",
    "to_uint8_activations",
    "fold_weight_quantizers",
]

#: Ops that can consume an int8 tensor in TensorRT / ONNX Runtime (a DQ in front of them fuses into an int8
#: kernel). A Q/DQ pair whose DQs feed none of these (e.g. Sigmoid, Softmax, Reshape->Softmax in the DFL, NMS,
#: a graph output) only adds rounding error and a conversion, so the elimination pass removes it.
INT8_CONSUMER_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MatMul",
        "Gemm",
        "Add",
        "Concat",
        "MaxPool",
        "Resize",
        "Upsample",
        "AveragePool",
        "GlobalAveragePool",
    }
)
#: ONNX Runtime's int8 consumers: also Sigmoid and Mul (QLinearSigmoid / QLinearMul, uint8 activations only).
ORT_INT8_OPS = INT8_CONSUMER_OPS | frozenset({"Sigmoid", "Mul"})
#: Ops whose output values are a subset of (or interpolate between) their input values: the Q after them can take
#: the input's scale unchanged, so no re-quantization is needed.
PASS_THROUGH_OPS = frozenset({"MaxPool", "Resize", "Upsample"})
#: Ops whose every output value is one of their (data) input values, moved, copied or picked by a max. A monotone
#: rounding commutes with them, ``Q(op(x)) == op(Q(x))``, so a Q after them can move onto their inputs bit-exactly.
#: Resize / Upsample count only in ``nearest`` mode (linear modes interpolate new values).
VALUE_SELECTING_OPS = frozenset(
    {
        "Concat",
        "MaxPool",
        "GlobalMaxPool",
        "Resize",
        "Upsample",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Identity",
    }
)


def _is_int8_zero(zero_point: np.ndarray | None) -> bool:
    return zero_point is not None and zero_point.dtype == np.int8 and not zero_point.any()


def _is_per_tensor(q: gs.Node) -> bool:
    scale = scale_of(q)
    return scale is not None and scale.size == 1


# ------------------------------------------------------------------------------------------------- tie_scales
@dataclass(frozen=True)
class TiedGroup:
    """One set of activation Q/DQ pairs that now share a scale."""

    quantize_nodes: tuple[str, ...]
    scale: float
    changed: tuple[str, ...]


@dataclass(frozen=True)
class TieScalesReport:
    """What :func:`tie_scales` did: the groups it tied (also the already-consistent ones), and the groups it left
    alone because their zero points differ in value or type (``skipped``, Q node labels per group)."""

    groups: tuple[TiedGroup, ...]
    skipped: tuple[tuple[str, ...], ...] = ()

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_changed(self) -> int:
        """Number of Q/DQ pairs whose scale changed."""
        return sum(len(group.changed) for group in self.groups)


class _Groups:
    """Union-find over Q nodes (gs nodes are unhashable: keyed by id)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.nodes: dict[int, gs.Node] = {}
        self.followers: set[int] = set()

    def _find(self, key: int) -> int:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, nodes: list[gs.Node]) -> None:
        nodes = [node for node in nodes if _is_per_tensor(node)]
        for node in nodes:
            self.nodes.setdefault(id(node), node)
            self.parent.setdefault(id(node), id(node))
        for node in nodes[1:]:
            self.parent[self._find(id(node))] = self._find(id(nodes[0]))

    def groups(self) -> list[list[gs.Node]]:
        out: dict[int, list[gs.Node]] = {}
        for key, node in self.nodes.items():
            out.setdefault(self._find(key), []).append(node)
        return [group for group in out.values() if len(group) > 1]


def _collect_groups(graph: gs.Graph) -> _Groups:
    groups = _Groups()
    for node in graph.nodes:
        if node.op == "Concat":
            inputs = [input_q(tensor) for tensor in node.inputs]
            groups.union([q for q in inputs if q is not None] + output_qs(node.outputs[0]))
        elif node.op in PASS_THROUGH_OPS:
            source = input_q(node.inputs[0])
            if source is not None and _is_per_tensor(source):
                for q in output_qs(node.outputs[0]):
                    groups.union([source, q])
                    groups.followers.add(id(q))
        elif node.op == "Add":
            inputs = [input_q(tensor) for tensor in node.inputs]
            if len(inputs) == 2 and all(q is not None for q in inputs) and inputs[0] is not inputs[1]:
                groups.union(inputs)
    return groups


def _group_scale(group: list[gs.Node], followers: set[int]) -> np.ndarray | None:
    zero_points = [zero_point_of(q) for q in group]
    first = zero_points[0]
    for zp in zero_points[1:]:  # mixed zero points / types cannot share a scale: leave the group alone
        if (zp is None) != (first is None) or (
            zp is not None and (zp.dtype != first.dtype or zp.item() != first.item())
        ):
            return None
    sources = [q for q in group if id(q) not in followers] or group
    return max((scale_of(q) for q in sources), key=lambda scale: float(scale.reshape(-1)[0]))


def tie_scales_report(model: onnx.ModelProto) -> tuple[onnx.ModelProto, TieScalesReport]:
    """Tie activation scales across Concat, MaxPool/Resize and residual Add; also report what was tied.

    Rules (found from the graph, no layer names):
    * Concat: the Q/DQ pairs of its quantized inputs and the Qs on its output share one scale, the max of them
      (the max never clips a value that one of the original scales represented; the min would).
    * MaxPool / Resize / Upsample: the Q after the op takes its input's scale (pass-through: a max-pool or
      nearest resize of quantized values is already on the input's grid). Not applied when the input is float.
    * Add with two quantized inputs: both pairs get the max of their scales.
    Groups overlap (an SPPF chains MaxPools into a Concat), so they are merged; a merged group takes the max over
    its members that are not pass-through outputs. A group whose zero points differ (type or value, e.g. int8 and
    uint8 inputs to one Concat) is left unchanged and listed in ``report.skipped``; an all-uint8 (zero point 0)
    group is tied like an int8 one.

    Returns:
        The new model and a :class:`TieScalesReport`.
    """
    graph = import_graph(model)
    groups = _collect_groups(graph)
    tied, skipped = [], []
    for group in groups.groups():
        scale = _group_scale(group, groups.followers)
        if scale is None:  # e.g. an int8 and a uint8 input to one Concat: one scale cannot serve both
            skipped.append(tuple(node_label(q) for q in group))
            continue
        changed = [q for q in group if not same_values(scale_of(q), scale)]
        if changed:
            constant = new_constant(graph, f"{group[0].outputs[0].name}_tied_scale", scale)
            for q in changed:
                for node in [q, *dq_consumers(q)]:
                    node.inputs[1] = constant
        labels = tuple(node_label(q) for q in group)
        tied.append(TiedGroup(labels, float(scale.reshape(-1)[0]), tuple(node_label(q) for q in changed)))
    return export_graph(graph, model), TieScalesReport(tuple(tied), tuple(skipped))


def tie_scales(model: onnx.ModelProto) -> onnx.ModelProto:
    """:func:`tie_scales_report` without the report.

    Example:
        >>> tied = tie_scales(onnx.load("model_qdq.onnx"))
    """
    return tie_scales_report(model)[0]


# ------------------------------------------------------------------------------------ eliminate_redundant_qdq
def _same_quantization(a: gs.Node, b: gs.Node) -> bool:
    same_qparams = same_values(scale_of(a), scale_of(b)) and same_values(zero_point_of(a), zero_point_of(b))
    return same_qparams and scale_of(a) is not None and a.attrs.get("axis", 1) == b.attrs.get("axis", 1)


def _collapse_requantization(graph: gs.Graph) -> bool:
    """Q1 -> DQ1 -> Q2 -> DQ2 with equal qparams: Q2's consumers read Q1 (DQ1 goes when unused)."""
    graph_outputs = {id(tensor) for tensor in graph.outputs}
    for q2 in graph.nodes:
        if not is_activation_q(q2) or id(q2.outputs[0]) in graph_outputs:
            continue
        q1 = input_q(q2.inputs[0])
        if q1 is None or not _same_quantization(q1, q2) or not _same_quantization(q1, q2.inputs[0].inputs[0]):
            continue
        for consumer in list(q2.outputs[0].outputs):
            replace_input(consumer, q2.outputs[0], q1.outputs[0])
        q2.inputs.clear()
        q2.outputs.clear()
        return True
    return False


def _feeds_only_float(graph: gs.Graph, q: gs.Node, int8_ops: frozenset[str]) -> bool:
    consumers = list(q.outputs[0].outputs)
    if not consumers or any(node.op != "DequantizeLinear" for node in consumers):
        return False
    if any(tensor is q.outputs[0] for tensor in graph.outputs):
        return False
    uses = [node for dq in consumers for node in dq.outputs[0].outputs]
    return all(node.op not in int8_ops and node.op != "QuantizeLinear" for node in uses)


def _bypass_pair(graph: gs.Graph, q: gs.Node) -> bool:
    """Remove ``q`` and its DQs; the float tensor flows straight to their consumers. False when impossible."""
    source, dqs = q.inputs[0], list(q.outputs[0].outputs)
    outputs = [dq.outputs[0] for dq in dqs]
    graph_ids = {id(tensor) for tensor in graph.outputs}
    named = [tensor for tensor in outputs if id(tensor) in graph_ids]
    if named and (len(named) > 1 or not source.inputs or id(source) in graph_ids):
        return False  # a graph-output name cannot be kept: leave the pair
    keep = named[0] if named else source
    for dq in dqs:
        dq.inputs.clear()
        dq.outputs.clear()
    q.inputs.clear()
    q.outputs.clear()
    if keep is not source:  # the source's producer now writes the graph output directly
        for consumer in list(source.outputs):
            replace_input(consumer, source, keep)
        producer = source.inputs[0]
        producer.outputs[producer.outputs.index(source)] = keep
    for tensor in outputs:
        if tensor is not keep:
            for consumer in list(tensor.outputs):
                replace_input(consumer, tensor, keep)
    return True


def _completes_int8_conv(q: gs.Node) -> bool:
    """True when ``q`` reads the output of a Conv / ConvTranspose whose data input is quantized (DQ -> Conv -> Q)."""
    producer = q.inputs[0].inputs[0] if q.inputs[0].inputs else None
    if producer is None or producer.op not in ("Conv", "ConvTranspose"):
        return False
    data = producer.inputs[0]
    return bool(data.inputs) and data.inputs[0].op == "DequantizeLinear"


def eliminate_redundant_qdq(
    model: onnx.ModelProto, *, keep_conv_outputs: bool = False, int8_ops: frozenset[str] = INT8_CONSUMER_OPS
) -> onnx.ModelProto:
    """Remove Q/DQ nodes that cannot speed anything up.

    * Consecutive re-quantization with the same scale/zero point/axis, Q -> DQ -> Q -> DQ, becomes one Q -> DQ
      (exact: ``Q(DQ(q)) == q`` when the parameters match).
    * An activation Q/DQ pair whose DQs feed no op of :data:`INT8_CONSUMER_OPS` (only float ops such as Sigmoid,
      Softmax, Reshape, NMS, or graph outputs) is removed and the tensor flows in float. The pair is kept when
      removing it would rename a graph output, and when a DQ feeds another Q (a re-quantization to a different
      scale is left to :func:`tie_scales`: removing the first pair would change the numbers).
    * ``keep_conv_outputs=True`` (the ONNX Runtime flavour) keeps a pair whose Q reads the output of a conv with a
      quantized input, even when its DQs feed only float ops: ORT runs a conv in int8 (QLinearConv) only as
      DQ -> Conv -> Q, so that Q is what makes the conv fast.
    * ``int8_ops``: what counts as an int8 consumer (the ONNX Runtime flavour passes :data:`ORT_INT8_OPS`, which
      adds Sigmoid and Mul: ORT runs a quantized SiLU as QLinearSigmoid + QLinearMul).

    Example:
        >>> lean = eliminate_redundant_qdq(onnx.load("model_qdq.onnx"))
        >>> ort_lean = eliminate_redundant_qdq(onnx.load("model_qdq.onnx"), keep_conv_outputs=True)
    """
    graph = import_graph(model)
    while _collapse_requantization(graph):
        graph.cleanup()
    for q in [node for node in graph.nodes if is_activation_q(node)]:
        if keep_conv_outputs and q.inputs and _completes_int8_conv(q):
            continue
        if q.outputs and _feeds_only_float(graph, q, int8_ops):
            _bypass_pair(graph, q)
    return export_graph(graph, model)


# ------------------------------------------------------------------------------------- merge_duplicate_quantizers
def _params_key(params: list[gs.Tensor], axis: int = 1) -> tuple | None:
    """Scale and zero point tensors (and the axis when per channel) as a hashable key; None when not constant."""
    scale = const_value(params[0])
    zero_point = const_value(params[1]) if len(params) > 1 else None
    if scale is None or (len(params) > 1 and zero_point is None):
        return None
    zp_key = None if zero_point is None else (zero_point.dtype.str, zero_point.reshape(-1).tobytes())
    return scale.dtype.str, scale.reshape(-1).tobytes(), zp_key, axis if scale.size > 1 else None


def _qparams_key(node: gs.Node) -> tuple | None:
    """What a Q/DQ computes, as a hashable key (scale, zero point with its type, axis); None when not constant."""
    return _params_key(node.inputs[1:3], int(node.attrs.get("axis", 1)))


def _redirect(old: gs.Tensor, new: gs.Tensor) -> None:
    for consumer in list(old.outputs):
        replace_input(consumer, old, new)


def _merge_nodes(nodes: list[gs.Node], graph_ids: set[int]) -> None:
    """Equal-qparams nodes among ``nodes`` (all reading one tensor) become the first of them."""
    survivors: dict[tuple, gs.Node] = {}
    for node in nodes:
        key = _qparams_key(node)
        if key is None or id(node.outputs[0]) in graph_ids:
            continue
        keep = survivors.setdefault(key, node)
        if keep is not node:
            _redirect(node.outputs[0], keep.outputs[0])
            node.inputs.clear()
            node.outputs.clear()


def _merge_duplicates(graph: gs.Graph, dequantizers: bool = True) -> None:
    graph_ids = {id(tensor) for tensor in graph.outputs}
    for tensor in list(graph.tensors().values()):
        _merge_nodes([node for node in output_qs(tensor) if is_activation_q(node)], graph_ids)
    if dequantizers:
        for q in [node for node in graph.nodes if node.inputs and is_activation_q(node) and node.outputs]:
            _merge_nodes(dq_consumers(q), graph_ids)


def merge_duplicate_quantizers(model: onnx.ModelProto, *, dequantizers: bool = True) -> onnx.ModelProto:
    """Make activation Qs that read one tensor with the same scale / zero point (and type) one Q.

    Two quantized convs reading one tensor export two identical Q/DQ pairs (each layer has its own input
    quantizer, and both calibrate to the same range). Two Qs mean two consumers of the producing conv, which
    stops ONNX Runtime (and TensorRT) from fusing the Q into it. With ``dequantizers`` the identical DQs of one
    Q are merged too (ORT duplicates a shared DQ per consumer itself; keep them separate for TensorRT). Lossless:
    every DQ output is bit-identical. Qs and DQs that write a graph output are left alone.

    Example:
        >>> merged = merge_duplicate_quantizers(onnx.load("model_qdq.onnx"))
    """
    graph = import_graph(model)
    _merge_duplicates(graph, dequantizers)
    return export_graph(graph, model)


# ----------------------------------------------------------------------------------- quantize_pass_through_inputs
def _data_inputs(node: gs.Node) -> list[int]:
    return list(range(len(node.inputs))) if node.op == "Concat" else [0]


def _selects_values(node: gs.Node) -> bool:
    """A :data:`VALUE_SELECTING_OPS` node with one output and non-constant data inputs."""
    if node.op not in VALUE_SELECTING_OPS or len(node.outputs) != 1 or not node.inputs:
        return False
    if node.op in ("Resize", "Upsample") and node.attrs.get("mode", "nearest") != "nearest":
        return False
    return all(const_value(node.inputs[index]) is None for index in _data_inputs(node))


def _final_q(tensor: gs.Tensor, graph_ids: set[int], memo: dict[int, gs.Node | None]) -> gs.Node | None:
    """An activation Q that every use of ``tensor`` ends in (directly or through value-selecting ops, all with
    the same qparams), else None."""
    if id(tensor) not in memo:
        memo[id(tensor)] = None
        found = []
        for node in tensor.outputs:
            if is_activation_q(node) and _is_per_tensor(node) and node.inputs[0] is tensor:
                found.append(node)
            elif _selects_values(node) and any(node.inputs[index] is tensor for index in _data_inputs(node)):
                found.append(_final_q(node.outputs[0], graph_ids, memo))
            else:
                found.append(None)
        keys = {None if q is None else _qparams_key(q) for q in found}
        if found and id(tensor) not in graph_ids and len(keys) == 1 and None not in keys:
            memo[id(tensor)] = found[0]
    return memo[id(tensor)]


def _quantized_with(tensor: gs.Tensor, params: list[gs.Tensor]) -> bool:
    """True when ``tensor`` is DQ(Q(x)) with these qparams."""
    q, key = input_q(tensor), _params_key(params)
    return q is not None and _qparams_key(q) == key and _qparams_key(tensor.inputs[0]) == key


def _dequantized(graph: gs.Graph, tensor: gs.Tensor, params: list[gs.Tensor]) -> gs.Tensor:
    """DQ(Q(tensor)) with these qparams, reusing a Q / DQ already there."""
    key, graph_ids = _params_key(params), {id(t) for t in graph.outputs}
    same = [q for q in output_qs(tensor) if is_activation_q(q) and _qparams_key(q) == key]
    q = same[0] if same else new_node(graph, "QuantizeLinear", tensor, params, const_value(params[1]).dtype)
    dqs = [dq for dq in dq_consumers(q) if _qparams_key(dq) == key and id(dq.outputs[0]) not in graph_ids]
    dq = dqs[0] if dqs else new_node(graph, "DequantizeLinear", q.outputs[0], params, np.float32)
    return dq.outputs[0]


def _input_params(graph: gs.Graph, tensor: gs.Tensor, template: gs.Node, cache: dict) -> list[list[gs.Tensor]]:
    """The qparams an input of an op quantized like ``template`` may have, the one to insert first.

    The template's scale and zero point; when that is signed int8 zero point 0 also the same scale with uint8 zero
    point 0, preferred for a Relu output (unless it already has the signed Q). Still exact for ``x >= 0``: both
    round to ``k = round(x / s)``, the uint8 code keeps ``min(k, 255)`` and the signed Q after the op clamps to
    ``min(k, 127)`` anyway. ORT folds a Relu into its conv only before a Q whose zero point is the type's minimum.
    """
    params = list(template.inputs[1:3])
    zero_point = zero_point_of(template)
    if not _is_int8_zero(zero_point):
        return [params]
    if zero_point.shape not in cache:
        cache[zero_point.shape] = new_constant(graph, "zero_point_u8", np.zeros(zero_point.shape, np.uint8))
    unsigned = [params[0], cache[zero_point.shape]]
    relu = bool(tensor.inputs) and tensor.inputs[0].op == "Relu"
    signed_q = any(_qparams_key(q) == _params_key(params) for q in output_qs(tensor))
    return [unsigned, params] if relu and not signed_q else [params, unsigned]


def quantize_pass_through_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Quantize the inputs of value-selecting ops (Concat, MaxPool, nearest Resize, ...) whose output is quantized.

    For an op of :data:`VALUE_SELECTING_OPS` whose every use ends in activation Qs of one scale / zero point S
    (directly or through more such ops: the MaxPool chain and Concat of an SPPF), each data input that is not
    already DQ(Q_S(x)) is fed through Q_S -> DQ_S instead (an existing Q_S on that tensor is reused). Then ONNX
    Runtime sees DQ -> MaxPool/Concat -> Q, which it runs in int8, and the Relu / Conv producing such an input
    has one consumer, the Q, which lets it fuse DQ -> Conv -> [Relu] -> Q into QLinearConv. Identical Qs of one
    tensor are merged (:func:`merge_duplicate_quantizers`, dequantizers kept) to get there.

    Where S is signed int8 and an input is a Relu output, that input gets S's scale with uint8 zero point 0, so
    the Relu still folds into its conv (ORT's QLinearConcat takes inputs with other zero points).

    Bit-exact: ``DQ∘Q`` is monotone and these ops only move values or take a max, so
    ``Q(op(DQ(Q(x)))) == Q(op(x))`` (and ``Q(DQ(q)) == q`` for equal qparams).

    Example:
        >>> ort_ready = quantize_pass_through_inputs(onnx.load("model_qdq.onnx"))
    """
    graph = import_graph(model)
    graph_ids, memo = {id(tensor) for tensor in graph.outputs}, {}
    plans = [(node, _final_q(node.outputs[0], graph_ids, memo)) for node in graph.nodes if _selects_values(node)]
    cache: dict = {}
    for node, template in plans:
        if template is None or zero_point_of(template) is None:
            continue
        for index in _data_inputs(node):
            choices = _input_params(graph, node.inputs[index], template, cache)
            if not any(_quantized_with(node.inputs[index], params) for params in choices):
                node.inputs[index] = _dequantized(graph, node.inputs[index], choices[0])
    _merge_duplicates(graph, dequantizers=False)
    graph.toposort()
    return export_graph(graph, model)


# ------------------------------------------------------------------------------------------ to_uint8_activations


def to_uint8_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every activation pair with int8 zero point 0 to uint8 with zero point 128, same scale.

    Lossless: ``clamp(round(x / s), -128, 127) + 128 == clamp(round(x / s) + 128, 0, 255)`` and the DQ subtracts
    the 128 again, so DQ outputs are bit-identical. Weight Q/DQ (constant input) stays int8 symmetric.

    Example:
        >>> ort_model = to_uint8_activations(onnx.load("model_qdq.onnx"))
    """
    graph = import_graph(model)
    graph_ids = {id(tensor) for tensor in graph.outputs}
    for q in [node for node in graph.nodes if is_activation_q(node)]:
        dqs = list(q.outputs[0].outputs)
        pair = [q, *dqs]
        if id(q.outputs[0]) in graph_ids or any(node.op != "DequantizeLinear" for node in dqs):
            continue
        if not all(_is_int8_zero(zero_point_of(node)) for node in pair):
            continue
        shifted = np.full(zero_point_of(q).shape, 128, dtype=np.uint8)
        constant = new_constant(graph, f"{q.outputs[0].name}_zero_point_u8", shifted)
        for node in pair:
            node.inputs[2] = constant
        q.outputs[0].dtype = np.uint8
    return export_graph(graph, model)


def _quantize_constant(values: np.ndarray, q: gs.Node) -> np.ndarray:
    """``QuantizeLinear`` of a constant, as ONNX defines it (round half to even, saturate), along the Q's axis."""
    scale, zero_point = scale_of(q), zero_point_of(q)
    axis = int(q.attrs.get("axis", 1))
    if scale.ndim == 1 and values.ndim > 1:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    info = np.iinfo(zero_point.dtype)
    quantized = np.rint(values.astype(np.float32) / scale.astype(np.float32)) + zero_point.astype(np.int32)
    return np.clip(quantized, info.min, info.max).astype(zero_point.dtype)


def fold_weight_quantizers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every ``QuantizeLinear`` of a constant (the weights) by its integer result, stored as an initializer.

    Exported fake-quant keeps the float weights behind a run-time Q; ONNX Runtime then cannot form integer kernels
    (QLinearConv / int8 weights) and the Q/DQ graph runs slower than FP32. After this pass a weight is an int8
    initializer feeding its DQ, the layout ORT's own ``quantize_static`` writes and TensorRT also accepts. Exact:
    the DQ outputs are unchanged.

    Example:
        >>> fast = fold_weight_quantizers(onnx.load("model_qdq.onnx"))
    """
    graph = import_graph(model)
    for q in [node for node in graph.nodes if node.op == "QuantizeLinear" and not is_activation_q(node)]:
        values = const_value(q.inputs[0])
        if values is None or scale_of(q) is None or zero_point_of(q) is None:
            continue
        constant = new_constant(graph, f"{q.outputs[0].name}_folded", _quantize_constant(values, q))
        for consumer in list(q.outputs[0].outputs):
            replace_input(consumer, q.outputs[0], constant)
        q.outputs.clear()
    return export_graph(graph, model)
