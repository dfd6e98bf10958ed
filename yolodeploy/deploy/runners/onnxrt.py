"""ONNX Runtime runner: the CPU execution provider by default, CUDA / TensorRT EPs when the installed build
has them. ``onnxruntime`` is imported only when a runner activates (or ``is_available`` is asked)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, ConfigError, OnnxModelError, RunnerError, first_line
from ...utils.optional import import_optional, importable, version_of
from .base import Runner, TensorMeta

__all__ = ["OnnxRuntimeRunner", "is_available", "get_version", "import_onnxruntime", "resolve_providers"]

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32,
    "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}

ProviderSpec = str | tuple[str, dict]


def import_onnxruntime():
    """``import onnxruntime`` or a one-line ``BackendUnavailableError`` saying how to install it."""
    return import_optional(
        "onnxruntime",
        "ONNX Runtime is not importable ({error}): pip install onnxruntime (or onnxruntime-gpu for the CUDA EP)",
    )


def is_available() -> bool:
    return importable(import_onnxruntime)


def get_version() -> str | None:
    return version_of(import_onnxruntime)


def resolve_providers(providers: Sequence[ProviderSpec] | None, available: Sequence[str]) -> list[ProviderSpec]:
    """Expand aliases (``cpu``, ``cuda``, ``trt``) and refuse a provider this ONNX Runtime build lacks.

    ``None`` means the CPU execution provider alone (the deterministic default, whatever else is installed).
    """
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    resolved: list[ProviderSpec] = []
    for spec in providers:
        name, options = (spec[0], spec[1]) if isinstance(spec, tuple) else (spec, None)
        name = PROVIDER_ALIASES.get(name.lower(), name)
        if name not in available:
            raise BackendUnavailableError(
                f"ONNX Runtime execution provider {name} is not available in this build (available: "
                f"{', '.join(available)}); for CUDA/TensorRT install onnxruntime-gpu on a machine with an NVIDIA GPU"
            )
        resolved.append((name, options) if options is not None else name)
    return resolved


def _provider_name(spec: ProviderSpec) -> str:
    return spec[0] if isinstance(spec, tuple) else spec


class OnnxRuntimeRunner(Runner):
    """Run an ONNX model with ONNX Runtime.

    Args:
        onnx_path_or_bytes: path of an ``.onnx`` file, its serialized bytes, or an ``onnx.ModelProto``.
        providers: execution providers in priority order (names, aliases ``cpu``/``cuda``/``trt``, or
            ``(name, options)`` tuples); None = CPU EP only.
        threads: intra-op thread count (None = ONNX Runtime's default, one per physical core).
        optimization_level: ``disable``, ``basic``, ``extended`` or ``all`` (default; ORT_ENABLE_ALL).
        session_config: extra ``SessionOptions.add_session_config_entry`` key/value pairs.
        optimized_model_path: where ONNX Runtime saves the optimized graph when the session is created
            (``SessionOptions.optimized_model_filepath``; see ``yolodeploy.deploy.ort_build``).

    Example:
        >>> with OnnxRuntimeRunner("yolov6n.onnx", threads=2) as runner:
        ...     out = runner.infer({"images": np.zeros((1, 3, 640, 640), np.float32)})["outputs"]
    """

    backend = "ort"

    def __init__(
        self,
        onnx_path_or_bytes: str | os.PathLike | bytes,
        providers: Sequence[ProviderSpec] | None = None,
        threads: int | None = None,
        *,
        optimization_level: str = "all",
        session_config: Mapping[str, str] | None = None,
        optimized_model_path: str | os.PathLike | None = None,
    ) -> None:
        if optimization_level not in OPTIMIZATION_LEVELS:
            raise ConfigError(f"optimization_level must be one of {', '.join(OPTIMIZATION_LEVELS)}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        super().__init__("cpu")
        if hasattr(onnx_path_or_bytes, "SerializeToString"):
            onnx_path_or_bytes = onnx_path_or_bytes.SerializeToString()
        self._source = onnx_path_or_bytes
        self._requested_providers = providers
        self.threads = threads
        self.optimization_level = optimization_level
        self.session_config = dict(session_config or {})
        self.optimized_model_path = optimized_model_path
        self._session = None
        self._inputs: dict[str, TensorMeta] = {}
        self._outputs: list[str] = []

    def session_options(self):
        """The ``onnxruntime.SessionOptions`` this runner creates its session with."""
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options.graph_optimization_level = levels[self.optimization_level]
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, str(value))
        if self.optimized_model_path is not None:
            options.optimized_model_filepath = os.fspath(self.optimized_model_path)
            options.log_severity_level = 3  # not the "hardware-specific optimized model" warning on every save
        return options

    def _activate(self) -> None:
        ort = import_onnxruntime()
        providers = resolve_providers(self._requested_providers, ort.get_available_providers())
        source = self._source
        if not isinstance(source, (bytes, bytearray)):
            source = Path(source)
            if not source.is_file():
                raise OnnxModelError(f"{source}: no such ONNX file")
            source = str(source)
        try:
            self._session = ort.InferenceSession(source, self.session_options(), providers=providers)
        except Exception as exc:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
            label = source if isinstance(source, str) else "ONNX bytes"
            raise OnnxModelError(f"{label}: ONNX Runtime cannot load it ({first_line(exc)}); re-export it") from None
        first = _provider_name(providers[0])
        self.device = "cuda:0" if first in GPU_PROVIDERS else "cpu"
        self._inputs = {
            arg.name: TensorMeta(arg.name, _numpy_dtype(arg.type), tuple(arg.shape))
            for arg in self._session.get_inputs()
        }
        self._outputs = [arg.name for arg in self._session.get_outputs()]

    def _deactivate(self) -> None:
        self._session = None

    def _input_metadata(self) -> Mapping[str, TensorMeta]:
        return self._inputs

    def _output_names(self) -> Sequence[str]:
        return self._outputs

    @property
    def providers(self) -> list[str]:
        """The providers the active session really uses (ORT drops those that failed to initialise)."""
        return list(self._session.get_providers()) if self._session is not None else []

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._outputs, feed)
        except Exception as exc:  # e.g. a spatial size the graph cannot take (not a multiple of the stride)
            raise RunnerError(f"ONNX Runtime failed on this feed: {first_line(exc)}") from None
        return dict(zip(self._outputs, values))


def _numpy_dtype(ort_type: str) -> np.dtype:
    if ort_type not in ORT_TYPES:
        raise RunnerError(f"unsupported ONNX tensor type {ort_type}")
    return np.dtype(ORT_TYPES[ort_type])
