"""Run the int8 1x1 convs whose outputs stay float as channels-last MatMuls (ONNX Runtime: MatMulIntegerToFloat).

ONNX Runtime fuses DQ -> Conv -> [Relu] -> Q into ``QLinearConv`` and runs it channels-last. A quantized conv whose
output stays float cannot fuse: in a detector, the prediction convs (their outputs are the box and class logits)
and the convs whose ReLU output also feeds a float op (YOLOv6's upsampling ConvTranspose). ORT then transposes the
conv's uint8 input back to channels-first, dequantizes it and runs a float conv. A 1x1 conv is a matrix product
over the channels, so :func:`convs_to_matmul` writes each such conv as ``Transpose`` to channels-last -> ``MatMul``
with the transposed int8 weight behind its DQ (per-column scales, ``axis=1``) -> ``Transpose`` back -> ``Add`` bias.
ORT cancels the first transpose against its own layout transpose and fuses DQ(x), DQ(W) -> MatMul into
``MatMulIntegerToFloat`` (an int8 GEMM with a float output); only the small output (a few channels) is transposed.

The arithmetic is the conv's up to the order of the float sums (int32 accumulation, then one scale, instead of
float products): outputs agree to float rounding, not bit for bit. ORT flavour only (TensorRT fuses its own way).
On the demo model (2026-12-07, AMD EPYC, ``benchmarks/quant_latency.py``, the 8 convs of this kind rewritten by a
one-off script first): 224 px bs 1 3.32 -> 3.13 ms, bs 32 65.6 -> 64.3 ms, 640 px bs 1 16.56 -> 16.52 ms.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .qdq_graph import (
    const_value,
    conv_integer_weight,
    export_graph,
    import_graph,
    new_constant,
    per_tensor_input_dq,
    zero_point_of,
)

__all__ = ["convs_to_matmul"]


def _fused_by_ort(conv: gs.Node) -> bool:
    """True when ORT turns the conv into QLinearConv: its output (or that of a ReLU after it) feeds one Q only."""
    consumers = conv.outputs[0].outputs
    if len(consumers) == 1 and consumers[0].op == "Relu":
        consumers = consumers[0].outputs[0].outputs
    return len(consumers) == 1 and consumers[0].op == "QuantizeLinear"


def _pointwise_int8(conv: gs.Node) -> tuple[gs.Node, np.ndarray] | None:
    """The weight DQ and int8 weight of a group-1, stride-1, unpadded 1x1 conv on DQ(Q(x)) per-tensor; else None."""
    found = conv_integer_weight(conv)
    if found is None or found[1].ndim != 4 or found[1].shape[2:] != (1, 1):
        return None
    attrs = conv.attrs
    plain = int(attrs.get("group", 1)) == 1 and all(v == 1 for v in attrs.get("strides", [1, 1]))
    if not plain or any(attrs.get("pads", [0, 0, 0, 0])) or per_tensor_input_dq(conv) is None:
        return None
    return found if len(conv.inputs) < 3 or const_value(conv.inputs[2]) is not None else None


def _as_matmul(graph: gs.Graph, conv: gs.Node, weight_dq: gs.Node, weight: np.ndarray) -> None:
    name = conv.name or conv.outputs[0].name
    source, output = conv.inputs[0], conv.outputs[0]
    channels_last = gs.Variable(f"{name}_nhwc_input", dtype=np.float32)
    graph.nodes.append(gs.Node("Transpose", f"{name}_to_nhwc", {"perm": [0, 2, 3, 1]}, [source], [channels_last]))
    columns = new_constant(graph, f"{name}_weight_columns", np.ascontiguousarray(weight[:, :, 0, 0].T))
    dq_inputs = [columns, weight_dq.inputs[1]]
    if zero_point_of(weight_dq) is not None:
        dq_inputs.append(weight_dq.inputs[2])
    matrix = gs.Variable(f"{name}_weight_matrix", dtype=np.float32)
    graph.nodes.append(gs.Node("DequantizeLinear", f"{name}_weight_dq", {"axis": 1}, dq_inputs, [matrix]))
    product = gs.Variable(f"{name}_matmul", dtype=np.float32)
    graph.nodes.append(gs.Node("MatMul", f"{name}_as_matmul", inputs=[channels_last, matrix], outputs=[product]))
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    conv.inputs.clear()
    conv.outputs.clear()
    if bias is None:
        graph.nodes.append(gs.Node("Transpose", f"{name}_to_nchw", {"perm": [0, 3, 1, 2]}, [product], [output]))
        return
    # the bias is added after the transpose back: a MatMul followed by Add would become a float Gemm
    # (ORT's MatMulAddFusion, on static shapes) before the int8 MatMul fusion could take it
    channels_first = gs.Variable(f"{name}_matmul_nchw", dtype=np.float32)
    graph.nodes.append(gs.Node("Transpose", f"{name}_to_nchw", {"perm": [0, 3, 1, 2]}, [product], [channels_first]))
    column = new_constant(graph, f"{name}_bias_column", np.asarray(const_value(bias)).reshape(-1, 1, 1))
    graph.nodes.append(gs.Node("Add", f"{name}_bias", inputs=[channels_first, column], outputs=[output]))


def convs_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every int8 1x1 conv whose output ONNX Runtime would keep float, as a channels-last MatMul (module docstring).

    Example:
        >>> faster = convs_to_matmul(onnx.load("yolov6n_int8_ort.onnx"))  # the 6 prediction convs and 2 reduce convs
    """
    graph = import_graph(model)
    for conv in [node for node in graph.nodes if node.op == "Conv"]:
        found = _pointwise_int8(conv)
        if found is not None and not _fused_by_ort(conv):
            _as_matmul(graph, conv, *found)
    graph.toposort()
    return export_graph(graph, model)
