"""One ``Runner`` interface over PyTorch, ONNX Runtime, TensorRT and OpenVINO.

``create_runner(path)`` picks the backend from the file (``.onnx`` -> ONNX Runtime, ``.engine``/``.plan`` ->
TensorRT, ``.xml`` -> OpenVINO IR, a checkpoint or an ``nn.Module`` -> PyTorch); ``backend="openvino"`` runs an
``.onnx`` file on OpenVINO. Heavy libraries load only when a runner activates.

Example:
    >>> with create_runner("yolov6n.onnx", threads=2) as runner:
    ...     outputs = runner.infer({"images": images})
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from .base import Runner, ShapeBounds, TensorMeta, validate_feed
from .onnxrt import OnnxRuntimeRunner
from .openvino_runner import OpenVINORunner
from .tensorrt_runner import TensorRTRunner
from .torch_runner import TorchRunner

__all__ = [
    "Backend",
    "Runner",
    "TensorMeta",
    "ShapeBounds",
    "validate_feed",
    "TorchRunner",
    "OnnxRuntimeRunner",
    "TensorRTRunner",
    "OpenVINORunner",
    "create_runner",
    "detect_backend",
    "ONNX_SUFFIXES",
    "ENGINE_SUFFIXES",
    "OPENVINO_SUFFIXES",
    "CHECKPOINT_SUFFIXES",
]

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
OPENVINO_SUFFIXES = (".xml",)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


class Backend(str, enum.Enum):
    """The runner backends; ``Backend.parse`` accepts the CLI spellings and aliases."""

    TORCH = "torch"
    ORT = "ort"
    TRT = "trt"
    OPENVINO = "openvino"

    @classmethod
    def parse(cls, value: str | Backend) -> Backend:
        aliases = {"pytorch": "torch", "onnxruntime": "ort", "tensorrt": "trt", "ov": "openvino"}
        text = str(value.value if isinstance(value, Backend) else value).lower()
        try:
            return cls(aliases.get(text, text))
        except ValueError:
            raise ConfigError(f"unknown backend {value!r}; choose one of torch, ort, trt, openvino (or auto)") from None


RUNNER_CLASSES: dict[Backend, type[Runner]] = {
    Backend.TORCH: TorchRunner,
    Backend.ORT: OnnxRuntimeRunner,
    Backend.TRT: TensorRTRunner,
    Backend.OPENVINO: OpenVINORunner,
}


def detect_backend(model_path: Any) -> Backend:
    """The backend a model file (or module) implies: .onnx -> ort, .engine/.plan -> trt, .xml -> openvino,
    checkpoints -> torch."""
    from torch import nn

    if isinstance(model_path, nn.Module):
        return Backend.TORCH
    suffix = Path(os.fspath(model_path)).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return Backend.ORT
    if suffix in ENGINE_SUFFIXES:
        return Backend.TRT
    if suffix in OPENVINO_SUFFIXES:
        return Backend.OPENVINO
    if suffix in CHECKPOINT_SUFFIXES:
        return Backend.TORCH
    known = ", ".join(ONNX_SUFFIXES + ENGINE_SUFFIXES + OPENVINO_SUFFIXES + CHECKPOINT_SUFFIXES)
    raise ConfigError(f"cannot tell the backend of {model_path} from its suffix ({known}); pass backend=")


def create_runner(model_path: Any, backend: str | Backend = "auto", **options: Any) -> Runner:
    """A runner for ``model_path`` (file or ``nn.Module``); ``options`` go to the runner's constructor.

    Args:
        model_path: an ONNX file, a TensorRT plan, a checkpoint (``.safetensors``/``.pt``) or an ``nn.Module``.
        backend: ``auto`` (from the suffix), ``torch``, ``ort``, ``trt`` or ``openvino``.
        **options: e.g. ``device``/``half``/``cuda_graph`` (torch), ``providers``/``threads`` (ort),
            ``threads``/``precision`` (openvino).

    Example:
        >>> runner = create_runner("yolov6n.onnx", threads=2)
    """
    chosen = detect_backend(model_path) if str(backend).lower() == "auto" else Backend.parse(backend)
    runner_class = RUNNER_CLASSES[chosen]
    try:
        return runner_class(model_path, **options)
    except TypeError as exc:
        raise ConfigError(f"{runner_class.__name__}: {exc}") from None
