"""Raw uint8 image input: the exported model takes the letterboxed RGB image as it is and converts it itself.

Every exported detector takes ``(B, 3, H, W)`` float in [0, 1], so a caller letterboxes a uint8 image, transposes
it to channels-first and converts it to float (``preprocess.to_tensor_batch``). :func:`uint8_image_input` moves
that conversion into the graph: the input becomes ``(B, H, W, 3)`` uint8, exactly what ``letterbox`` returns,
followed by a Transpose to channels-first, then ``Cast`` and ``Mul`` by ``float32(1 / 255)``: the same float32
arithmetic as ``to_tensor_batch``, so the float model gives bit-identical outputs.

In an INT8 Q/DQ graph the image first meets a QuantizeLinear. When that quantizer maps the 256 levels ``k / 255``
back to ``k`` (uint8, zero point 0, scale ``amax / 255`` with ``amax`` at or just below 1: the ORT flavour's
calibrated image quantizer), the conversion and the QuantizeLinear both go: the uint8 pixels *are* the quantized
values, so outputs stay bit-identical and ONNX Runtime no longer quantizes and transposes a float image per call.
A quantizer that does not map every level back (the TensorRT flavour's int8 ``amax / 127``) keeps the float path.
:func:`to_uint8_input` (what ``export --uint8-input`` and ``quantize --uint8-input`` run) then lets such an int8
stem read groups of 4 pixel columns as 12 channels (``stem_columns``), when ONNX Runtime gives identical outputs.

Runners, ``eval`` and ``bench`` recognize such a model by its uint8 input (``preprocess.is_uint8_image_input``)
and feed it with ``preprocess.image_batch`` / ``preprocess.random_image_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch

from ..core.compare import CompareResult, compare_outputs
from ..core.preprocess import PIXEL_SCALE, image_batch, random_image_batch
from ..errors import ConfigError, ExportError
from .qdq_graph import (
    const_value,
    conv_integer_weight,
    export_graph,
    import_graph,
    new_constant,
    replace_input,
    scale_of,
    zero_point_of,
)

__all__ = ["uint8_image_input", "check_uint8_input", "to_uint8_input", "run_onnx"]

_LEVELS = np.arange(256, dtype=np.float32) * PIXEL_SCALE  # every value a [0, 1] image pixel can take


def _maps_levels_back(q: gs.Node) -> bool:
    """True when the QuantizeLinear ``q`` turns each level ``k / 255`` into ``k`` (uint8, per-tensor)."""
    scale, zero_point = scale_of(q), zero_point_of(q)
    if scale is None or scale.size != 1 or zero_point is None or zero_point.dtype != np.uint8:
        return False
    scaled = _LEVELS / np.float32(scale.reshape(-1)[0]) + np.float32(zero_point.reshape(-1)[0])
    # well inside the rounding interval, whichever of x / s or x * (1 / s) the runtime computes
    return bool(np.all(np.abs(scaled - np.arange(256)) < 0.25))


def _image_input(graph: gs.Graph, name: str) -> gs.Variable:
    matches = [tensor for tensor in graph.inputs if tensor.name == name]
    if not matches:
        raise ConfigError(f"the model has no input {name!r} (inputs: {', '.join(t.name for t in graph.inputs)})")
    image = matches[0]
    shape = list(image.shape or [])
    if len(shape) != 4 or shape[1] != 3 or np.dtype(image.dtype) not in (np.float32, np.float16):
        raise ConfigError(
            f"input {name!r} is {np.dtype(image.dtype).name} {shape}; --uint8-input needs a float (B, 3, H, W) image "
            "input"
        )
    return image


def uint8_image_input(model: onnx.ModelProto, input_name: str = "images") -> onnx.ModelProto:
    """``model`` with its float ``(B, 3, H, W)`` image input replaced by raw uint8 ``(B, H, W, 3)`` pixels.

    Exact: float consumers get ``Cast(Transpose(pixels)) * float32(1 / 255)`` (an fp16 model: the same values
    from a 256-entry table); a uint8 QuantizeLinear that maps every pixel level back to itself is removed and its
    consumers read the transposed pixels. Raises ``ConfigError`` when there is no such input.
    """
    graph = import_graph(model)
    image = _image_input(graph, input_name)
    float_dtype = np.dtype(image.dtype)
    batch, _, height, width = image.shape
    pixels = gs.Variable(f"{input_name}_nchw", dtype=np.uint8, shape=[batch, 3, height, width])
    consumers = list(image.outputs)
    graph.nodes.append(gs.Node("Transpose", f"{input_name}_to_nchw", {"perm": [0, 3, 1, 2]}, [image], [pixels]))
    image.dtype, image.shape = np.uint8, [batch, height, width, 3]
    float_image = None
    for node in consumers:
        if node.op == "QuantizeLinear" and node.inputs[0] is image and _maps_levels_back(node):
            quantized = node.outputs[0]
            for reader in list(quantized.outputs):
                replace_input(reader, quantized, pixels)
                if reader.op == "Pad":
                    _drop_channel_pad(reader)
            graph.outputs = [pixels if tensor is quantized else tensor for tensor in graph.outputs]
            node.inputs.clear()
            node.outputs.clear()
            continue
        float_image = float_image or _float_pixels(graph, pixels, float_dtype)
        replace_input(node, image, float_image)
    graph.toposort()
    return export_graph(graph, like=model)


def _drop_channel_pad(pad: gs.Node) -> None:
    """Undo ``pad_conv_input_channels`` on the pixels: ``Pad`` -> DQ -> int8 Conv goes back to the image's channels.

    On channels-last pixels ONNX Runtime pads the innermost axis byte by byte (4.3 ms per call at 640 px on the
    demo model, against 0.07 ms for the channel plane of the float-input graph); the 3-channel stem conv it then
    runs through im2col costs less than that (1.9 ms; ``stem_columns`` then gives it 12 channels). Left as it is
    unless the Pad only appends channels and every consumer is a DQ feeding int8 convs, each with its own weight DQ,
    whose appended weight channels are zero.
    """
    pads, pixels = const_value(pad.inputs[1]), pad.inputs[0]
    if pads is None or pads.size != 8 or np.any(np.delete(pads, 5)):  # (B, C, H, W) begins then ends: C end only
        return
    dqs = list(pad.outputs[0].outputs)
    convs = [conv for dq in dqs for conv in dq.outputs[0].outputs]
    found = [conv_integer_weight(conv) if conv.op == "Conv" else None for conv in convs]
    if any(dq.op != "DequantizeLinear" for dq in dqs) or any(item is None for item in found):
        return
    kept = pixels.shape[1]  # the image's channels, before the pad
    for weight_dq, weight in found:
        if np.any(weight[:, kept:]) or len(weight_dq.outputs[0].outputs) > 1:
            return
    for weight_dq, weight in found:
        unpadded = np.ascontiguousarray(weight[:, :kept])
        weight_dq.inputs[0] = gs.Constant(f"{weight_dq.inputs[0].name}_unpadded", unpadded)
    for dq in dqs:
        replace_input(dq, pad.outputs[0], pixels)
    pad.inputs.clear()
    pad.outputs.clear()


def _float_pixels(graph: gs.Graph, pixels: gs.Variable, dtype: np.dtype) -> gs.Variable:
    """The pixels as ``to_tensor_batch`` makes them: ``Cast(pixels, float32) * float32(1 / 255)``; for an fp16 model
    a 256-entry float16 table of those values, gathered (ONNX Runtime's float32 -> float16 Cast rounds some values
    differently from NumPy's)."""
    if dtype != np.float32:
        indices = gs.Variable(f"{pixels.name}_indices", dtype=np.int32)
        table = new_constant(
            graph, f"{pixels.name}_levels", (np.arange(256, dtype=np.float32) * PIXEL_SCALE).astype(dtype)
        )
        half = gs.Variable(f"{pixels.name}_{dtype.name}", dtype=dtype)
        graph.nodes.append(gs.Node("Cast", f"{pixels.name}_cast", {"to": onnx.TensorProto.INT32}, [pixels], [indices]))
        graph.nodes.append(gs.Node("Gather", f"{pixels.name}_lookup", {"axis": 0}, [table, indices], [half]))
        return half
    as_float = gs.Variable(f"{pixels.name}_float", dtype=np.float32)
    scaled = gs.Variable(f"{pixels.name}_scaled", dtype=np.float32)
    scale = new_constant(graph, f"{pixels.name}_pixel_scale", np.array(PIXEL_SCALE, dtype=np.float32))
    graph.nodes.append(gs.Node("Cast", f"{pixels.name}_cast", {"to": onnx.TensorProto.FLOAT}, [pixels], [as_float]))
    graph.nodes.append(gs.Node("Mul", f"{pixels.name}_scale", inputs=[as_float, scale], outputs=[scaled]))
    return scaled


def run_onnx(model: onnx.ModelProto, feed: dict[str, np.ndarray], *, optimize: bool = False) -> list[np.ndarray]:
    """All outputs of ``model`` on ONNX Runtime's CPU EP, without graph optimizations unless ``optimize``."""
    from .runners.onnxrt import import_onnxruntime

    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feed)
    except Exception as exc:  # ORT's own exception types: the graph is wrong
        raise ExportError(f"ONNX Runtime cannot run the uint8-input graph: {str(exc).splitlines()[0][:300]}") from exc


def check_uint8_input(
    float_model: onnx.ModelProto,
    uint8_model: onnx.ModelProto,
    img_size: int | Sequence[int],
    *,
    batch: int = 2,
    input_name: str = "images",
    seed: int = 0,
) -> tuple[CompareResult, np.ndarray, np.ndarray]:
    """Both models on the same random pixels (the float one through ``image_batch``), ONNX Runtime without graph
    optimizations: the first outputs must be identical. Returns the comparison, the pixels and the uint8 model's
    first output."""
    pixels = random_image_batch(batch, img_size, np.uint8, seed)
    float_dtype = onnx.helper.tensor_dtype_to_np_dtype(float_model.graph.input[0].type.tensor_type.elem_type)
    (reference, *_) = run_onnx(float_model, {input_name: image_batch(list(pixels), float_dtype)})
    (output, *_) = run_onnx(uint8_model, {input_name: pixels})
    result = compare_outputs(
        torch.from_numpy(np.asarray(reference, dtype=np.float64)),
        torch.from_numpy(np.asarray(output, dtype=np.float64)),
        name=f"{uint8_model.graph.output[0].name} (uint8 input vs float input)",
        atol=0.0,
        rtol=0.0,
    )
    return result, pixels, output


def to_uint8_input(
    model: onnx.ModelProto, img_size: int | Sequence[int], *, batch: int = 2
) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` taking uint8 pixels, checked identical (:func:`check_uint8_input`); then, when the pixels feed an
    int8 stem, that stem reads column groups (``stem_columns``, kept only if ONNX Runtime gives identical outputs).
    Returns the model and the report lines. Raises ``ExportError`` when the uint8-input graph is not identical."""
    from .stem_columns import fold_stem_columns_checked

    converted = uint8_image_input(model)
    exact, _, _ = check_uint8_input(model, converted, img_size, batch=batch)
    if not exact:
        raise ExportError(f"file not written: {exact}")
    removed = sum(node.op_type == "QuantizeLinear" for node in model.graph.node) - sum(
        node.op_type == "QuantizeLinear" for node in converted.graph.node
    )
    height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    how = "pixels feed the first conv's quantized input" if removed else "converted to float in the graph"
    lines = [f"uint8 input (B, {height}, {width}, 3): {how}; {exact}"]
    if removed:
        converted, line = fold_stem_columns_checked(converted, batch=batch)
        lines.append(line)
    return converted, lines
