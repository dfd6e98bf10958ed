"""Run the first two stride-2 convs of a uint8-input INT8 graph on groups of image columns (ONNX Runtime).

A detector's first conv reads the 3-channel image. ONNX Runtime's fast int8 conv kernel (MLAS "ConvSym", used for
int8 weights with zero point 0) needs input channels in multiples of 4, so a 3-channel stem falls back to
im2col + GEMM, which at 640 px costs more than any other layer of the demo model (1.9 ms of 18). Padding the pixels
to 4 channels does not help on channels-last pixels (ORT pads the innermost axis byte by byte).

Instead, :func:`fold_stem_columns` reads every 4 adjacent columns of the channels-last image as one column of
12 channels: ``Reshape (B, H, W, 3) -> (B, H, W / 4, 12)`` moves no byte. A 3x3 stride-2 conv over the image is
then a (3, 2) conv with column stride 1 over the grouped image whose output channels are ``(column parity, O)``:
output column ``2g`` reads image columns ``4g - 1 .. 4g + 1`` (the last of group ``g - 1``, the first two of
group ``g``), output column ``2g + 1`` reads ``4g + 1 .. 4g + 3`` (group ``g``). Its output is the stem's output
with pairs of columns stacked on the channels, and the next stride-2 conv reads it the same way: its output column
``j`` reads stem columns ``2j - 1 .. 2j + 1`` = (pair ``j - 1``, odd), (pair ``j``, even), (pair ``j``, odd). So
both convs get new int8 weights (the old ones moved, zeros where a tap reads no image column), every tensor after
the second conv is unchanged, and no layout op is added. The integer sums are the same as before; only the
runtime's kernel changes.

Applies when the image is uint8 ``(B, H, W, C)`` with ``W % 4 == 0``, feeds one Transpose to channels-first and
one DQ (zero point 0) into an int8 conv with kernel width 3, column stride 2, left padding 1, dilation 1, one
group, whose output (through an optional Relu) feeds one Q -> DQ -> conv of the same kind. Otherwise the model is
returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..core.preprocess import random_image_batch
from .qdq_graph import (
    const_value,
    conv_integer_weight,
    export_graph,
    import_graph,
    new_constant,
    new_node,
    scale_of,
    zero_point_of,
)

__all__ = ["fold_stem_columns", "fold_stem_columns_checked", "GROUP"]

GROUP = 4  # image columns read as one


@dataclass
class _Stem:
    transpose: gs.Node
    first: gs.Node
    second: gs.Node
    between: list[gs.Tensor]  # the tensors from the first conv's output to the second conv's input


def _single_consumer(tensor: gs.Tensor, op: str) -> gs.Node | None:
    consumers = list(tensor.outputs)
    return consumers[0] if len(consumers) == 1 and consumers[0].op == op else None


def _per_tensor(node: gs.Node) -> bool:
    """A Q/DQ with a constant per-tensor scale and zero point (pairs of columns on the channels share them)."""
    scale, zero_point = scale_of(node), zero_point_of(node)
    return scale is not None and scale.size == 1 and zero_point is not None and zero_point.size == 1


def _column_stride_2(conv: gs.Node | None) -> bool:
    """A one-group conv with a symmetric int8 weight of its own, kernel width 3, column stride 2, left padding 1."""
    if conv is None or conv.op != "Conv" or conv_integer_weight(conv) is None:
        return False
    weight_dq, weight = conv_integer_weight(conv)
    weight_zero_point = zero_point_of(weight_dq)
    attrs = conv.attrs
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return (
        weight.ndim == 4
        and weight.shape[3] == 3
        and weight.dtype == np.int8
        and (weight_zero_point is None or not np.any(weight_zero_point))  # a zero tap must mean a zero weight
        and attrs.get("group", 1) == 1
        and list(attrs.get("strides", [1, 1]))[1] == 2
        and list(attrs.get("dilations", [1, 1])) == [1, 1]
        and attrs.get("auto_pad", "NOTSET") == "NOTSET"
        and len(pads) == 4
        and pads[1] == 1
        and pads[3] in (0, 1)
        and len(weight_dq.outputs[0].outputs) == 1
        and (len(conv.inputs) < 3 or const_value(conv.inputs[2]) is not None)
    )


def _find_stem(graph: gs.Graph) -> _Stem | None:
    if len(graph.inputs) != 1:
        return None
    image = graph.inputs[0]
    shape = list(image.shape or [])
    if np.dtype(image.dtype) != np.uint8 or len(shape) != 4 or not isinstance(shape[2], int) or shape[2] % GROUP:
        return None
    transpose = _single_consumer(image, "Transpose")
    if transpose is None or list(transpose.attrs.get("perm", [])) != [0, 3, 1, 2]:
        return None
    dq = _single_consumer(transpose.outputs[0], "DequantizeLinear")
    if dq is None or not _per_tensor(dq) or np.any(zero_point_of(dq)):
        return None
    first = _single_consumer(dq.outputs[0], "Conv")
    if not _column_stride_2(first) or first.inputs[0] is not dq.outputs[0]:
        return None
    between = [first.outputs[0]]
    relu = _single_consumer(between[-1], "Relu")
    if relu is not None:
        between.append(relu.outputs[0])
    q = _single_consumer(between[-1], "QuantizeLinear")
    dq2 = _single_consumer(q.outputs[0], "DequantizeLinear") if q is not None else None
    second = _single_consumer(dq2.outputs[0], "Conv") if dq2 is not None else None
    if not _column_stride_2(second) or second.inputs[0] is not dq2.outputs[0] or not _per_tensor(q):
        return None
    if any(tensor in graph.outputs for tensor in (*between, q.outputs[0], dq2.outputs[0])):
        return None
    return _Stem(transpose, first, second, [*between, q.outputs[0], dq2.outputs[0]])


def grouped_image_weight(weight: np.ndarray) -> np.ndarray:
    """(O, C, kh, 3) stem weight -> (2 O, GROUP C, kh, 2) weight over groups of 4 columns, output (parity, O)."""
    out_channels, channels, kernel_height, _ = weight.shape
    grouped = np.zeros((2, out_channels, GROUP, channels, kernel_height, 2), dtype=weight.dtype)
    grouped[0, :, 3, :, :, 0] = weight[..., 0]  # even output column 2g: image columns 4g - 1, 4g, 4g + 1
    grouped[0, :, 0, :, :, 1] = weight[..., 1]
    grouped[0, :, 1, :, :, 1] = weight[..., 2]
    for tap in range(3):  # odd output column 2g + 1: image columns 4g + 1 .. 4g + 3
        grouped[1, :, tap + 1, :, :, 1] = weight[..., tap]
    return grouped.reshape(2 * out_channels, GROUP * channels, kernel_height, 2)


def paired_input_weight(weight: np.ndarray) -> np.ndarray:
    """(O2, O, kh, 3) weight of the conv after the stem -> (O2, 2 O, kh, 2) over its (parity, O) column pairs."""
    out_channels, channels, kernel_height, _ = weight.shape
    paired = np.zeros((out_channels, 2, channels, kernel_height, 2), dtype=weight.dtype)
    paired[:, 1, :, :, 0] = weight[..., 0]  # output column j: stem columns 2j - 1 (pair j - 1, odd), 2j, 2j + 1
    paired[:, 0, :, :, 1] = weight[..., 1]
    paired[:, 1, :, :, 1] = weight[..., 2]
    return paired.reshape(out_channels, 2 * channels, kernel_height, 2)


def _set_weight(graph: gs.Graph, conv: gs.Node, weight: np.ndarray, repeat: int) -> None:
    """Give ``conv`` the int8 (kh, 2) ``weight`` behind a new DQ, column stride 1 and padding (1, 0); per-channel
    scales, zero points and the bias repeated ``repeat`` times (the stem's output channels are (parity, O))."""
    weight_dq, _ = conv_integer_weight(conv)
    name = weight_dq.inputs[0].name
    params = [const_value(tensor) for tensor in weight_dq.inputs[1:]]
    params = [
        new_constant(graph, f"{name}_columns_{role}", np.tile(value, repeat) if value.size > 1 else value)
        for role, value in zip(("scale", "zero_point"), params)
    ]
    dq = new_node(graph, "DequantizeLinear", new_constant(graph, f"{name}_columns", weight), params, np.float32)
    dq.attrs.update(weight_dq.attrs)  # the per-channel axis
    conv.inputs[1] = dq.outputs[0]
    if len(conv.inputs) > 2 and repeat > 1:
        bias = const_value(conv.inputs[2])
        conv.inputs[2] = new_constant(graph, f"{conv.inputs[2].name}_columns", np.tile(bias, repeat))
    pads = list(conv.attrs["pads"])
    conv.attrs["kernel_shape"] = [weight.shape[2], 2]
    conv.attrs["strides"] = [list(conv.attrs.get("strides", [1, 1]))[0], 1]
    conv.attrs["pads"] = [pads[0], 1, pads[2], 0]


def fold_stem_columns(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its stem and the conv after it reading groups of image columns (see the module docstring);
    ``model`` itself when the pattern is not there."""
    graph = import_graph(model)
    stem = _find_stem(graph)
    if stem is None:
        return model
    image = graph.inputs[0]
    batch, height, width, channels = image.shape
    grouped_shape = [height, width // GROUP, GROUP * channels]
    grouped = gs.Variable(f"{image.name}_column_groups", dtype=np.uint8, shape=[batch, *grouped_shape])
    shape = new_constant(graph, f"{grouped.name}_shape", np.array([0, *grouped_shape], dtype=np.int64))
    graph.nodes.append(gs.Node("Reshape", f"{image.name}_to_column_groups", inputs=[image, shape], outputs=[grouped]))
    stem.transpose.inputs[0] = grouped
    stem.transpose.outputs[0].shape = [batch, GROUP * channels, height, width // GROUP]
    _set_weight(graph, stem.first, grouped_image_weight(conv_integer_weight(stem.first)[1]), repeat=2)
    _set_weight(graph, stem.second, paired_input_weight(conv_integer_weight(stem.second)[1]), repeat=1)
    for tensor in stem.between:
        tensor.shape = None
    graph.toposort()
    return export_graph(graph, like=model)


def fold_stem_columns_checked(model: onnx.ModelProto, *, batch: int = 2, seed: int = 0) -> tuple[onnx.ModelProto, str]:
    """:func:`fold_stem_columns`, kept only when ONNX Runtime (all optimizations: the int8 kernels) gives identical
    outputs on random pixels; otherwise ``model``. Returns the model and a line saying which and why."""
    folded = fold_stem_columns(model)
    if folded is model:
        return model, "stem: no uint8 stride-2 stem pair to run on column groups"
    from .image_input import run_onnx

    image = model.graph.input[0].type.tensor_type.shape.dim
    batch = image[0].dim_value or batch  # a static batch, else ``batch``
    pixels = random_image_batch(batch, (image[1].dim_value, image[2].dim_value), np.uint8, seed)
    feed = {model.graph.input[0].name: pixels}
    before, after = run_onnx(model, feed, optimize=True), run_onnx(folded, feed, optimize=True)
    worst = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(before, after))
    if worst != 0.0:
        return model, f"stem: kept on 3 channels (on {GROUP}-column groups ONNX Runtime differed by {worst:.3g})"
    return folded, f"stem: reads {GROUP}-column groups ({GROUP * image[3].dim_value} channels), identical outputs"
