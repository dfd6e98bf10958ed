"""Pad the input channels of int8 convs to a multiple of 4 so ONNX Runtime's fast x86 int8 conv kernel takes them.

ONNX Runtime runs a DQ -> Conv -> Q group as ``QLinearConv``; with int8 symmetric weights it packs them for its
"symmetric" conv kernels (MLAS ``MlasConvSymPackWSize``), but only when the input channel count is a multiple of
4 (``KernelInputChannelAlignment`` on every x86 dispatch) and there are at least 16 output channels, a multiple of
8. Otherwise the conv falls back to im2col + GEMM. In a detector that is the first conv, which reads the 3-channel
image: on the demo model at 640 px, batch 1, 2 threads (``benchmarks/ort_profile.py`` on the INT8 file without and
with this pass) that conv took 1.49 ms, padded to 4 channels 0.67 ms (the pad itself 0.08 ms).

:func:`pad_conv_input_channels` inserts ``Pad`` on the *quantized* tensor (between its Q and the conv's DQ, with
the zero point as the pad value, so the extra channel dequantizes to 0) and appends zero weights for the new
channels. Exact: the extra channels contribute ``0 * w`` and ``x * 0``. ORT flavour only: TensorRT chooses its own
layouts and pads internally.
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
    new_node,
    per_tensor_input_dq,
)

__all__ = ["CHANNEL_MULTIPLE", "pad_conv_input_channels"]

#: MLAS's input-channel alignment for its symmetric int8 conv kernels (every x86 dispatch).
CHANNEL_MULTIPLE = 4
#: The output channels those kernels also need: at least 16 and a multiple of 8 (AVX2; AVX-512 needs 4).
MIN_OUTPUT_CHANNELS, OUTPUT_CHANNEL_MULTIPLE = 16, 8


def _needs_padding(conv: gs.Node, weight: np.ndarray, multiple: int) -> bool:
    """A group-1 conv on DQ(Q(x)) with per-tensor constant qparams that the fast kernel would take once padded."""
    out_channels, in_channels = weight.shape[:2]
    shape_ok = (
        int(conv.attrs.get("group", 1)) == 1
        and in_channels % multiple != 0
        and out_channels >= MIN_OUTPUT_CHANNELS
        and out_channels % OUTPUT_CHANNEL_MULTIPLE == 0
    )
    return shape_ok and per_tensor_input_dq(conv) is not None


def _pad_input(graph: gs.Graph, conv: gs.Node, rank: int, extra: int) -> None:
    """Conv input DQ(Q(x)) -> DQ(Pad(Q(x), zero point)) with ``extra`` more channels (a new DQ for this conv)."""
    dq = conv.inputs[0].inputs[0]
    quantized, scale, zero_point = dq.inputs[0], dq.inputs[1], dq.inputs[2]
    pads = np.zeros(2 * rank, np.int64)
    pads[rank + 1] = extra  # end of axis 1 (channels)
    pad_amounts = new_constant(graph, f"{quantized.name}_channel_pads", pads)
    pad = new_node(graph, "Pad", quantized, [pad_amounts, zero_point], const_value(zero_point).dtype)
    pad.attrs["mode"] = "constant"
    new_dq = new_node(graph, "DequantizeLinear", pad.outputs[0], [scale, zero_point], np.float32)
    conv.inputs[0] = new_dq.outputs[0]


def _pad_weight(graph: gs.Graph, conv: gs.Node, weight_dq: gs.Node, weight: np.ndarray, extra: int) -> None:
    """Append ``extra`` zero input channels to the conv's integer weight (a new DQ if another node shares it)."""
    zeros = np.zeros((weight.shape[0], extra, *weight.shape[2:]), weight.dtype)
    padded = new_constant(graph, f"{weight_dq.inputs[0].name}_channel_padded", np.concatenate([weight, zeros], 1))
    if len(weight_dq.outputs[0].outputs) > 1:
        own = new_node(graph, "DequantizeLinear", padded, list(weight_dq.inputs[1:]), np.float32)
        own.attrs.update(weight_dq.attrs)
        conv.inputs[1] = own.outputs[0]
    else:
        weight_dq.inputs[0] = padded


def pad_conv_input_channels(model: onnx.ModelProto, multiple: int = CHANNEL_MULTIPLE) -> onnx.ModelProto:
    """Pad the input channels of every int8 conv (DQ(Q(x)) and an integer weight) to a multiple of ``multiple``.

    Only group-1 convs with per-tensor input quantization and at least 16 output channels (a multiple of 8) are
    touched, the ones ONNX Runtime's symmetric int8 kernels would take once padded; outputs are unchanged.

    Example:
        >>> fast = pad_conv_input_channels(onnx.load("yolov6n_int8_ort.onnx"))  # the 3-channel stem gets 4
    """
    graph = import_graph(model)
    for conv in [node for node in graph.nodes if node.op == "Conv"]:
        found = conv_integer_weight(conv)
        if found is None or not _needs_padding(conv, found[1], multiple):
            continue
        weight_dq, weight = found
        extra = -weight.shape[1] % multiple
        _pad_input(graph, conv, weight.ndim, extra)
        _pad_weight(graph, conv, weight_dq, weight, extra)
    graph.toposort()
    return export_graph(graph, model)
