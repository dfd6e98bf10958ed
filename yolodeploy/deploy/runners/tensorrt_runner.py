"""TensorRT runner (TensorRT 10/11 Python API): named I/O tensors, ``set_tensor_address``, ``execute_async_v3``.

Device buffers are torch CUDA tensors (no pycuda): inputs are copied to the GPU on the runner's own CUDA
stream, outputs are allocated once per shape and reused. ``tensorrt`` is imported only at ``activate``.
Before loading a plan, the runner reads the sidecar ``<engine>.json`` written by ``build_engine`` and refuses an
engine built by another TensorRT version or for another GPU (one line, saying how to rebuild). A plan without a
sidecar (e.g. from trtexec) is loaded as is; TensorRT itself then rejects a version mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, EngineError, RunnerError
from ...utils.optional import version_of
from .. import tensorrt_build as _build  # a module reference: tensorrt_build imports this package too
from .base import Runner, ShapeBounds, TensorMeta

__all__ = ["TensorRTRunner", "is_available", "get_version", "unavailable_reason"]


def unavailable_reason() -> str | None:
    """Why TensorRT engines cannot run here (None when they can)."""
    try:
        _build.import_tensorrt()
        _build.require_cuda()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def is_available() -> bool:
    """TensorRT imports and torch sees a CUDA device."""
    return unavailable_reason() is None


def get_version() -> str | None:
    return version_of(_build.import_tensorrt)


class TensorRTRunner(Runner):
    """Run a serialized TensorRT engine (plan file) on a CUDA device.

    Args:
        engine_path: the plan written by ``build_engine`` (``.engine`` / ``.plan``).
        device: the CUDA device (``"cuda"`` or ``"cuda:N"``); the engine must have been built for its GPU.
        check_sidecar: refuse an engine whose sidecar names another TensorRT version or GPU (default).

    Example:
        >>> with TensorRTRunner("yolov6n.engine") as runner:
        ...     out = runner.infer({"images": np.zeros((32, 3, 640, 640), np.float32)})["outputs"]
    """

    backend = "trt"

    def __init__(self, engine_path: str | os.PathLike, *, device: str = "cuda", check_sidecar: bool = True) -> None:
        super().__init__(str(device))
        self.engine_path = Path(engine_path)
        self.check_sidecar = check_sidecar
        self._runtime = self._engine = self._context = self._stream = None
        self._inputs: dict[str, TensorMeta] = {}
        self._bounds: dict[str, ShapeBounds] = {}
        self._outputs: list[str] = []
        self._output_buffers: dict[str, object] = {}

    def _activate(self) -> None:
        import torch

        trt = _build.import_tensorrt()
        _build.require_cuda()
        device = torch.device(self.device)
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        self.device = str(device)
        if not self.engine_path.is_file():
            raise EngineError(f"{self.engine_path}: no such engine file")
        sidecar = _build.read_sidecar(self.engine_path)
        if sidecar is not None and self.check_sidecar:
            gpu = torch.cuda.get_device_name(device)
            _build.validate_sidecar(
                sidecar, tensorrt_version=trt.__version__, gpu_name=gpu, engine_path=self.engine_path
            )
        with torch.cuda.device(device):
            self._load_engine(trt)
            self._stream = torch.cuda.Stream(device)
        self._read_io(trt)

    def _load_engine(self, trt) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT (the --nms trt export) lives there
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise EngineError(
                f"{self.engine_path}: TensorRT {trt.__version__} cannot load this plan (corrupt, or built by another "
                f"TensorRT version or for another GPU); rebuild it with `yolodeploy build-engine`"
            )
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"{self.engine_path}: TensorRT could not create an execution context (out of memory?)")
        self._runtime, self._engine, self._context = runtime, engine, context

    def _read_io(self, trt) -> None:
        """Input metadata, profile-0 shape bounds of dynamic inputs, and output names, from the engine."""
        engine = self._engine
        self._inputs, self._bounds, self._outputs = {}, {}, []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                self._outputs.append(name)
                continue
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(name))
            self._inputs[name] = TensorMeta(name, dtype, shape)
            if any(d is None for d in shape):
                low, _, high = engine.get_tensor_profile_shape(name, 0)
                self._bounds[name] = ShapeBounds(tuple(low), tuple(high))

    def _deactivate(self) -> None:
        self._output_buffers.clear()
        self._context = self._engine = self._runtime = self._stream = None

    def _input_metadata(self) -> Mapping[str, TensorMeta]:
        return self._inputs

    def _input_profiles(self) -> Mapping[str, ShapeBounds]:
        return self._bounds

    def _output_names(self) -> Sequence[str]:
        return self._outputs

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        context, stream = self._context, self._stream
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            staged = {}  # keeps the device copies of the inputs alive until the engine has run
            for name, array in feed.items():
                tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
                staged[name] = tensor
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = {name: self._output_buffer(name) for name in self._outputs}
            if not context.execute_async_v3(stream.cuda_stream):
                raise RunnerError(f"{self.engine_path}: TensorRT execution failed (its log above says why)")
            return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}  # D2H on `stream`, synchronous

    def _output_buffer(self, name: str):
        """A device tensor of the output's current shape (reused while the shape stays the same)."""
        import torch

        shape = tuple(self._context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise RunnerError(f"output {name!r} has a data-dependent shape {shape}, which this runner does not support")
        buffer = self._output_buffers.get(name)
        if buffer is None or tuple(buffer.shape) != shape:
            trt = _build.import_tensorrt()
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self._engine.get_tensor_dtype(name)))).dtype
            buffer = torch.empty(shape, dtype=dtype, device=self.device)
            self._output_buffers[name] = buffer
        self._context.set_tensor_address(name, buffer.data_ptr())
        return buffer
