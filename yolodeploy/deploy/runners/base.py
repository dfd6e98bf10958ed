"""The one ``Runner`` interface every backend implements (after Polygraphy's ``BaseRunner``).

A runner is a context manager: ``activate()`` loads the model onto its device, ``infer(feed)`` maps a dict of
numpy arrays to a dict of numpy arrays, ``deactivate()`` frees it. The base class validates every feed
(input names, dtypes, ranks, static dimensions, and the shape range of a TensorRT optimization profile)
before a subclass sees it, so every backend rejects a bad feed with the same one-line ``FeedError``.
Subclasses implement only ``_activate``, ``_deactivate``, ``_infer``, ``_input_metadata`` and
``_output_names`` (and ``_input_profiles`` where shapes are bounded). Timing is not a runner concern: see
``yolodeploy.bench``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ...errors import FeedError, RunnerError

__all__ = ["Runner", "TensorMeta", "ShapeBounds", "validate_feed", "format_shape"]

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class TensorMeta:
    """Name, numpy dtype and shape of one model input or output; a dim is an int (static), a str (named
    dynamic dim, e.g. ``"batch"``) or None (dynamic, unnamed)."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))


@dataclasses.dataclass(frozen=True)
class ShapeBounds:
    """The smallest and largest shape an input accepts (a TensorRT optimization profile's min and max)."""

    min: tuple[int, ...]
    max: tuple[int, ...]


def format_shape(shape: Sequence[Dim]) -> str:
    """``(1, 3, 640, 640)`` -> ``1x3x640x640``; dynamic dims show as their name or ``?``."""
    return "x".join("?" if d is None else str(d) for d in shape)


def validate_feed(
    feed: Mapping[str, object],
    metadata: Mapping[str, TensorMeta],
    bounds: Mapping[str, ShapeBounds] | None = None,
) -> None:
    """Raise a one-line ``FeedError`` unless ``feed`` fits the inputs described by ``metadata``.

    Checks, in order: feed is a mapping of numpy arrays; no unknown and no missing input names; each
    array's dtype, rank and static dims; and, where ``bounds`` names an input, that its shape lies within
    them (e.g. a batch larger than the engine profile's maximum).
    """
    if not isinstance(feed, Mapping):
        raise FeedError(f"feed must be a dict of input name -> numpy array, got {type(feed).__name__}")
    expected = ", ".join(metadata) or "(none)"
    unknown = [name for name in feed if name not in metadata]
    if unknown:
        raise FeedError(f"unknown input {unknown[0]!r}; the model's inputs are: {expected}")
    missing = [name for name in metadata if name not in feed]
    if missing:
        raise FeedError(f"missing input {missing[0]!r}; the model's inputs are: {expected}")
    for name, meta in metadata.items():
        _check_array(name, feed[name], meta)
        if bounds and name in bounds:
            _check_bounds(name, tuple(feed[name].shape), bounds[name])


def _check_array(name: str, array: object, meta: TensorMeta) -> None:
    if not isinstance(array, np.ndarray):
        raise FeedError(f"input {name!r} must be a numpy array, got {type(array).__name__}")
    if array.dtype != meta.dtype:
        raise FeedError(
            f"input {name!r} has dtype {array.dtype}, the model expects {meta.dtype} "
            f"(convert with .astype(np.{meta.dtype.name}))"
        )
    if array.ndim != len(meta.shape):
        raise FeedError(
            f"input {name!r} has rank {array.ndim} (shape {format_shape(array.shape)}), the model expects rank "
            f"{len(meta.shape)} ({format_shape(meta.shape)})"
        )
    for axis, (got, want) in enumerate(zip(array.shape, meta.shape)):
        if isinstance(want, int) and want >= 0 and got != want:
            raise FeedError(
                f"input {name!r} has shape {format_shape(array.shape)}, the model expects {format_shape(meta.shape)} "
                f"(dim {axis} must be {want})"
            )


def _check_bounds(name: str, shape: tuple[int, ...], bounds: ShapeBounds) -> None:
    for axis, (got, low, high) in enumerate(zip(shape, bounds.min, bounds.max)):
        if got > high or got < low:
            what = "batch" if axis == 0 else f"dim {axis}"
            side = f"larger than the maximum {high}" if got > high else f"smaller than the minimum {low}"
            raise FeedError(
                f"input {name!r}: {what} {got} is {side} the engine's profile allows "
                f"({format_shape(bounds.min)} .. {format_shape(bounds.max)}); rebuild the engine with a "
                f"wider profile (e.g. `yolodeploy build-engine --bs` up to {got})"
            )


class Runner(abc.ABC):
    """Base class of every backend runner: a context manager with validated ``infer``.

    Attributes:
        backend: short backend name (``"torch"``, ``"ort"``, ``"trt"``).
        device: where the model runs (``"cpu"``, ``"cuda:0"``).

    Example:
        >>> with OnnxRuntimeRunner("model.onnx") as runner:
        ...     outputs = runner.infer({"images": np.zeros((1, 3, 640, 640), np.float32)})
    """

    backend: str = "base"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._active = False

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> Runner:
        """Load the model onto the device (idempotent). Returns the runner itself."""
        if not self._active:
            self._activate()
            self._active = True
        return self

    def deactivate(self) -> None:
        """Release the model and its device memory (idempotent)."""
        if self._active:
            try:
                self._deactivate()
            finally:
                self._active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc_info) -> None:
        self.deactivate()

    # -- queries -----------------------------------------------------------------------------------
    def input_metadata(self) -> dict[str, TensorMeta]:
        """Name -> ``TensorMeta`` of every model input, in the model's order (needs an active runner)."""
        self._require_active("input_metadata")
        return dict(self._input_metadata())

    def output_names(self) -> list[str]:
        """Names of the model outputs, in the model's order (needs an active runner)."""
        self._require_active("output_names")
        return list(self._output_names())

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feed`` (input name -> numpy array) and return output name -> numpy array.

        Raises:
            RunnerError: the runner is not active.
            FeedError: unknown or missing input, wrong dtype, rank or static dim, or a shape outside the
                engine's optimization profile.
        """
        self._require_active("infer")
        validate_feed(feed, self._input_metadata(), self._input_profiles())
        return self._infer(dict(feed))

    def _require_active(self, what: str) -> None:
        if not self._active:
            raise RunnerError(
                f"{type(self).__name__}.{what}() needs an active runner: call activate() first or use `with runner:`"
            )

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"{type(self).__name__}(backend={self.backend!r}, device={self.device!r}, {state})"

    # -- what subclasses implement -----------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _input_metadata(self) -> Mapping[str, TensorMeta]: ...

    @abc.abstractmethod
    def _output_names(self) -> Sequence[str]: ...

    def _input_profiles(self) -> Mapping[str, ShapeBounds]:
        """Shape bounds per input (only backends with optimization profiles override this)."""
        return {}
