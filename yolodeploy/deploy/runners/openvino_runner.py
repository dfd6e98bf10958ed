"""OpenVINO runner: runs an ONNX file (FP32 or explicit Q/DQ INT8) or an OpenVINO IR (``.xml``) on Intel/AMD CPUs.

OpenVINO is optional (``pip install "yolodeploy[openvino]"``) and imported only when a runner activates. Two
defaults differ from OpenVINO's own, both for honest comparisons with ONNX Runtime:

- ``precision="f32"``: OpenVINO's CPU plugin otherwise computes float layers in bf16 where the CPU has AVX-512
  BF16 or AMX, which is not an FP32 baseline. Q/DQ layers run int8 kernels whatever the hint says.
- ``static_shapes=True``: a model with a dynamic batch is compiled once per input shape it is fed (a few
  compiled shapes are kept), because OpenVINO's static-shape kernels are faster than its dynamic ones.

For INT8, give it the ``ort`` flavour of ``yolodeploy quantize`` (``*_ort.onnx``, uint8 activations): it matches the
fake-quant model within one quantization step (tested), while on the int8-activation ``*_trt.onnx`` OpenVINO lost
about one AP point against ONNX Runtime on the demo model (``deploy/openvino_build.py``).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, OnnxModelError, RunnerError, first_line
from ...utils.optional import import_optional, importable, version_of
from .base import Runner, TensorMeta

__all__ = ["OpenVINORunner", "import_openvino", "is_available", "get_version", "PRECISIONS"]

PRECISIONS = ("f32", "bf16", "f16")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
MODEL_SUFFIXES = (".onnx", ".xml")


def import_openvino():
    """``import openvino`` or a one-line ``BackendUnavailableError`` saying how to install it."""
    return import_optional(
        "openvino", "OpenVINO is not importable ({error}): pip install 'yolodeploy[openvino]' (or pip install openvino)"
    )


def is_available() -> bool:
    return importable(import_openvino)


def get_version() -> str | None:
    return version_of(import_openvino, lambda openvino: openvino.get_version())


class OpenVINORunner(Runner):
    """Run an ONNX or OpenVINO IR model with OpenVINO.

    Args:
        model_path: an ``.onnx`` file or an OpenVINO IR ``.xml`` (its ``.bin`` beside it).
        device: OpenVINO device name (``CPU``; ``GPU`` for Intel GPUs; any case). ``runner.device`` is ``"cpu"`` for
            the CPU, like the other runners; ``runner.ov_device`` is OpenVINO's name.
        threads: ``INFERENCE_NUM_THREADS`` on CPU (None = OpenVINO's default, all cores).
        precision: ``INFERENCE_PRECISION_HINT`` for float layers: ``f32`` (default), ``bf16`` or ``f16``.
        performance_hint: ``LATENCY`` (default; one request at a time) or ``THROUGHPUT``.
        static_shapes: compile once per fed input shape instead of once for the dynamic model.
        max_compiled: how many per-shape compiled models to keep (least recently used goes first).

    Example:
        >>> with OpenVINORunner("yolov6n_int8.onnx", threads=2) as runner:
        ...     out = runner.infer({"images": np.zeros((1, 3, 640, 640), np.float32)})["outputs"]
    """

    backend = "openvino"

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str = "CPU",
        threads: int | None = None,
        *,
        precision: str = "f32",
        performance_hint: str = "LATENCY",
        static_shapes: bool = True,
        max_compiled: int = 4,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if performance_hint.upper() not in PERFORMANCE_HINTS:
            raise ConfigError(f"performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if device.lower().startswith("cuda"):
            raise ConfigError("OpenVINO does not run on CUDA devices; use --backend trt or ort for NVIDIA GPUs")
        if not isinstance(model_path, (str, os.PathLike)):
            raise ConfigError(f"OpenVINORunner takes an .onnx or .xml path, got {type(model_path).__name__}")
        self.ov_device = device.upper()  # OpenVINO's name; ``device`` stays in yolodeploy's spelling ("cpu")
        super().__init__("cpu" if self.ov_device.startswith("CPU") else self.ov_device.lower())
        self.model_path = Path(model_path)
        self.threads = threads
        self.precision = precision
        self.performance_hint = performance_hint.upper()
        self.static_shapes = static_shapes
        self.max_compiled = max(1, max_compiled)
        self._core = self._model = None
        self._compiled: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._inputs: dict[str, TensorMeta] = {}
        self._outputs: list[str] = []

    def compile_config(self) -> dict[str, Any]:
        """The properties every ``compile_model`` call gets."""
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": self.performance_hint}
        if self.threads is not None and self.ov_device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def _activate(self) -> None:
        ov = import_openvino()
        if self.model_path.suffix.lower() not in MODEL_SUFFIXES:
            raise ConfigError(f"{self.model_path}: OpenVINO runs .onnx or .xml (IR) files")
        if not self.model_path.is_file():
            raise OnnxModelError(f"{self.model_path}: no such model file")
        core = ov.Core()
        try:
            self._model = core.read_model(str(self.model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report
            raise OnnxModelError(f"{self.model_path}: OpenVINO cannot read it ({first_line(exc)})") from None
        self._core = core
        self._inputs = {port.get_any_name(): _port_meta(port) for port in self._model.inputs}
        self._outputs = [port.get_any_name() for port in self._model.outputs]
        if not self.static_shapes or not self._model.is_dynamic():
            self._compile(None)

    def _deactivate(self) -> None:
        self._compiled.clear()
        self._model = self._core = None

    def _input_metadata(self) -> Mapping[str, TensorMeta]:
        return self._inputs

    def _output_names(self) -> Sequence[str]:
        return self._outputs

    @property
    def compiled_shapes(self) -> list[tuple]:
        """The input shapes compiled so far (``[None]`` for one compiled model that takes every shape)."""
        return list(self._compiled)

    def compiled_precision(self) -> str | None:
        """The inference precision OpenVINO really chose (it may ignore a hint the device cannot do)."""
        if not self._compiled:
            return None
        request = next(iter(self._compiled.values()))
        return request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def _compile(self, shape_key: tuple | None):
        model = self._model
        if shape_key is not None:
            model = self._model.clone()
            model.reshape(dict(zip(self._inputs, shape_key)))
        try:
            compiled = self._core.compile_model(model, self.ov_device, self.compile_config())
        except Exception as exc:
            raise RunnerError(
                f"OpenVINO cannot compile {self.model_path.name} for {self.ov_device}: {first_line(exc)}"
            ) from None
        self._compiled[shape_key] = compiled.create_infer_request()
        while len(self._compiled) > self.max_compiled:
            self._compiled.popitem(last=False)
        return self._compiled[shape_key]

    def _request_for(self, feed: dict[str, np.ndarray]):
        if None in self._compiled:
            return self._compiled[None]
        key = tuple(tuple(feed[name].shape) for name in self._inputs)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        return self._compile(key)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self._request_for(feed)
        try:
            results = request.infer(feed)  # share_outputs=False: the arrays are copies, safe to keep
        except Exception as exc:
            raise RunnerError(f"OpenVINO failed on this feed: {first_line(exc)}") from None
        return {name: np.asarray(results[index]) for index, name in enumerate(self._outputs)}


def _port_meta(port: Any) -> TensorMeta:
    dims = tuple(dim.get_length() if dim.is_static else None for dim in port.get_partial_shape())
    return TensorMeta(port.get_any_name(), port.get_element_type().to_dtype(), dims)
