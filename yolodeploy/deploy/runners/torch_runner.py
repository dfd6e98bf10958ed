"""PyTorch runner: eager (CPU or CUDA, fp32 or fp16) with optional CUDA-graph capture for a fixed shape.

The reference every other backend is compared against. By default the model is put in eval mode and
re-parameterized into its deploy form (``reparameterize=False`` keeps it as given).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...errors import BackendUnavailableError, ConfigError
from .base import Runner, TensorMeta

__all__ = ["TorchRunner", "is_available", "get_version"]

INPUT_NAME = "images"
OUTPUT_NAME = "outputs"


def is_available() -> bool:
    """PyTorch is a core dependency: always True."""
    return True


def get_version() -> str | None:
    return torch.__version__


def _resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {device} requested but CUDA is not available (CPU build of torch or no NVIDIA GPU/driver); "
                f"use device='cpu' or install a CUDA build of torch on a machine with an NVIDIA GPU"
            )
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device.type != "cpu":
        raise ConfigError(f"unsupported device {str(device)!r}; use 'cpu' or 'cuda[:N]'")
    return device


class TorchRunner(Runner):
    """Run a PyTorch model (a module, or a checkpoint path loaded with ``load_checkpoint``).

    Args:
        model_or_checkpoint: an ``nn.Module`` (copied before any change) or a checkpoint path.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        half: run in fp16 (input ``images`` is then float16; CUDA recommended).
        cuda_graph: capture a CUDA graph on the first ``infer`` (or at ``activate`` when ``input_shape`` is
            given) and replay it; the input shape is then fixed. CUDA only.
        input_shape: the fixed input shape for ``cuda_graph`` (optional).
        reparameterize: convert to the deploy form first (default); False runs the module as given.

    Example:
        >>> with TorchRunner("yolov6n.safetensors", device="cuda", half=True) as runner:
        ...     out = runner.infer({"images": np.zeros((1, 3, 640, 640), np.float16)})["outputs"]
    """

    backend = "torch"

    def __init__(
        self,
        model_or_checkpoint: nn.Module | str | os.PathLike,
        device: str = "cpu",
        half: bool = False,
        cuda_graph: bool = False,
        *,
        input_shape: Sequence[int] | None = None,
        reparameterize: bool = True,
    ) -> None:
        super().__init__(str(device))
        if cuda_graph and torch.device(device).type != "cuda":
            raise ConfigError("cuda_graph=True needs a CUDA device (device='cuda')")
        if input_shape is not None and len(input_shape) != 4:
            raise ConfigError(f"input_shape must be (B, 3, H, W), got {tuple(input_shape)}")
        self._source = model_or_checkpoint
        self.half = half
        self.cuda_graph = cuda_graph
        self.reparameterize = reparameterize
        self._input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        self._model: nn.Module | None = None
        self._graph = None  # (CUDAGraph, static input, static outputs) once captured
        self._output_list: list[str] = [OUTPUT_NAME]

    # -- lifecycle ---------------------------------------------------------------------------------
    def _activate(self) -> None:
        device = _resolve_device(self.device)
        self.device = str(device)
        model = self._load_model()
        model = model.to(device=device, dtype=torch.float16 if self.half else torch.float32)
        self._model = model
        if self.cuda_graph and self._input_shape is not None:
            self._capture(self._input_shape)

    def _load_model(self) -> nn.Module:
        from ...core.reparam import reparameterize_model

        if isinstance(self._source, nn.Module):
            model = copy.deepcopy(self._source)  # never change the caller's module (mode, device, dtype, fusion)
        else:
            from ...models import load_checkpoint

            model = load_checkpoint(self._source)
        model.eval()
        return reparameterize_model(model, inplace=True) if self.reparameterize else model

    def _deactivate(self) -> None:
        self._model = None
        self._graph = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- metadata ----------------------------------------------------------------------------------
    def _input_metadata(self) -> Mapping[str, TensorMeta]:
        dtype = np.float16 if self.half else np.float32
        shape = self._input_shape if (self.cuda_graph and self._input_shape) else ("batch", 3, "height", "width")
        return {INPUT_NAME: TensorMeta(INPUT_NAME, dtype, shape)}

    def _output_names(self) -> Sequence[str]:
        return list(self._output_list)

    # -- inference ---------------------------------------------------------------------------------
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        array = feed[INPUT_NAME]
        if self.cuda_graph:
            if self._graph is None:
                self._capture(tuple(array.shape))
            return self._replay(array)
        x = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        with torch.inference_mode():
            outputs = self._model(x)
        return self._to_numpy(outputs)

    def _to_numpy(self, outputs) -> dict[str, np.ndarray]:
        named = _name_outputs(outputs)
        self._output_list = list(named)
        return {name: tensor.detach().cpu().numpy() for name, tensor in named.items()}

    def _capture(self, shape: tuple[int, ...]) -> None:
        """Warm up on a side stream, then capture one forward pass into a CUDA graph (static buffers)."""
        self._input_shape = tuple(shape)
        device = torch.device(self.device)
        dtype = torch.float16 if self.half else torch.float32
        static_input = torch.zeros(shape, device=device, dtype=dtype)
        with torch.inference_mode():
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):  # cuDNN autotuning and lazy allocations happen outside the capture
                    self._model(static_input)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_outputs = self._model(static_input)
        self._graph = (graph, static_input, static_outputs)

    def _replay(self, array: np.ndarray) -> dict[str, np.ndarray]:
        graph, static_input, static_outputs = self._graph
        with torch.inference_mode():
            static_input.copy_(torch.from_numpy(np.ascontiguousarray(array)), non_blocking=False)
            graph.replay()
        return self._to_numpy(static_outputs)  # .cpu() copies (and synchronizes) before the next replay


def _name_outputs(outputs) -> dict[str, torch.Tensor]:
    """A tensor -> ``{"outputs": t}``; a dict stays; a tuple/list -> ``outputs``, ``outputs_1``, ..."""
    if isinstance(outputs, torch.Tensor):
        return {OUTPUT_NAME: outputs}
    if isinstance(outputs, Mapping):
        return {str(k): v for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return {OUTPUT_NAME if i == 0 else f"{OUTPUT_NAME}_{i}": t for i, t in enumerate(outputs)}
    raise TypeError(f"model returned {type(outputs).__name__}; expected a tensor, tuple or dict of tensors")
