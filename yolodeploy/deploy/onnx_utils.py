"""Small ONNX helpers: checked loading with one-line errors, I/O metadata, opset and Q/DQ queries."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from ..errors import OnnxModelError, first_line
from .runners.base import TensorMeta

__all__ = ["TensorMeta", "load_onnx_checked", "onnx_io", "has_qdq", "onnx_opset", "check_opset", "IMAGE_INPUT_HINT"]

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
IMAGE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
IMAGE_INPUT_HINT = (
    "expected one image input (B, 3, H, W) float32/float16, or (B, H, W, 3) uint8 (`--uint8-input`), as "
    "`yolodeploy export` writes"
)


def _tensor_meta(value: onnx.ValueInfoProto) -> TensorMeta:
    tensor_type = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type) if tensor_type.elem_type else np.float32
    dims = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorMeta(value.name, np.dtype(dtype), tuple(dims))


def onnx_io(model: onnx.ModelProto) -> tuple[list[TensorMeta], list[TensorMeta]]:
    """The graph's inputs (initializers excluded) and outputs, in order, as ``TensorMeta``.

    Example:
        >>> inputs, outputs = onnx_io(onnx.load("model.onnx"))
        >>> inputs[0]  # TensorMeta(name='images', dtype=dtype('float32'), shape=('batch', 3, 640, 640))
    """
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor_meta(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [_tensor_meta(v) for v in model.graph.output]


def has_qdq(model: onnx.ModelProto) -> bool:
    """Whether the graph holds explicit quantization (QuantizeLinear / DequantizeLinear nodes)."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def onnx_opset(model: onnx.ModelProto, domain: str = "") -> int | None:
    """The opset version the model imports for ``domain`` (``""``: the default ONNX domain), or None."""
    for entry in model.opset_import:
        if entry.domain in ((domain, "ai.onnx") if domain in ("", "ai.onnx") else (domain,)):
            return int(entry.version)
    return None


def check_opset(model: onnx.ModelProto, expected: int) -> None:
    """Raise ``OnnxModelError`` unless the model's default-domain opset is exactly ``expected``.

    Needed after every export: ``torch.onnx.export(dynamo=True, opset_version=13)`` silently writes opset 18.
    """
    found = onnx_opset(model)
    if found != expected:
        raise OnnxModelError(f"the ONNX graph has opset {found}, not the requested {expected}")


def _check_image_input(model: onnx.ModelProto, where: str) -> None:
    inputs, _ = onnx_io(model)
    if len(inputs) != 1:
        names = ", ".join(meta.name for meta in inputs) or "none"
        raise OnnxModelError(f"{where}: {len(inputs)} inputs ({names}); {IMAGE_INPUT_HINT}")
    meta = inputs[0]
    pixels = meta.dtype == np.uint8 and len(meta.shape) == 4 and meta.shape[3] == 3  # export --uint8-input
    if not pixels and (len(meta.shape) != 4 or meta.shape[1] != 3 or meta.dtype not in IMAGE_DTYPES):
        shape = "x".join("?" if d is None else str(d) for d in meta.shape) or "unknown shape"
        raise OnnxModelError(
            f"{where}: input {meta.name!r} is {meta.dtype} {shape}, not an image tensor; {IMAGE_INPUT_HINT}"
        )


def load_onnx_checked(path: str | os.PathLike, *, image_input: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, run ``onnx.checker`` on it and (by default) check that its input is an image.

    Args:
        path: the ``.onnx`` file (external data next to it is loaded too).
        image_input: require exactly one input of rank 4 with 3 channels, float32 or float16.

    Raises:
        OnnxModelError: one line: missing file, not ONNX / corrupt, invalid graph, or not an image input.

    Example:
        >>> model = load_onnx_checked("yolov6n.onnx")
    """
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model if model.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF else str(path))
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, ...: the file, not our code
        raise OnnxModelError(f"{path}: not a valid ONNX model ({first_line(exc)}); re-export it") from None
    if image_input:
        _check_image_input(model, str(path))
    return model
