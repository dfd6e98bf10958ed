"""Calibration: accumulate activation statistics, then choose an ``amax`` (clipping range) from them.

Layer two of ``primitives -> calibrators -> quantizer`` (YOLOv6 paper §2.5, issue 6). ``Histogram`` only
accumulates ``|x|`` counts; the range searches are pure functions of a histogram:

* ``max_amax``: the largest ``|x|`` seen (exact, tracked beside the histogram).
* ``percentile_amax``: the ``|x|`` below which ``percentile`` % of the values lie (linear inside a bin).
* ``entropy_amax``: TensorRT's KL-divergence calibration (the algorithm of pytorch-quantization's
  ``_compute_amax_entropy``, https://github.com/NVIDIA/TensorRT/blob/main/tools/pytorch-quantization/
  pytorch_quantization/calib/histogram.py), written here with numpy and with MXNet/TVM-style smoothing.
* ``mse_amax``: the bin edge that minimises the expected squared quantization error, computed exactly for a
  density that is uniform inside each bin (rounding noise below amax, clipping error above it).

Weights need no histogram: their amax is the per-output-channel ``max |w|`` (``per_channel_amax``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from ..utils.choices import Choice
from .primitives import qrange, unsigned_qrange

__all__ = [
    "CalibMethod",
    "Histogram",
    "max_amax",
    "percentile_amax",
    "entropy_amax",
    "mse_amax",
    "compute_amax",
    "per_channel_amax",
]


class CalibMethod(Choice):
    """How an activation amax is chosen from its histogram."""

    MAX = "max"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"

    @classmethod
    def label(cls) -> str:
        return "calibration method"


class Histogram:
    """A histogram of ``|x|`` over calibration batches, with bins of equal width starting at 0.

    The first batch with a non-zero value sets the bin width to ``max|x| / num_bins``. A later batch whose max
    exceeds the covered range ``num_bins * width`` grows it by the smallest integer factor ``k`` that covers
    the new max: every ``k`` adjacent bins are summed into one (exact, counts are never interpolated), so the
    number of bins stays ``num_bins`` and the range stays below twice the overall max. The result therefore
    depends on batch order only through the bin width, which is at most 2x coarser than a single batch holding
    all the data would give. Counts are int64 (exact). ``counts``/``edges`` drop the empty bins above the last
    non-zero one.

    Example:
        >>> hist = Histogram()
        >>> for batch in batches:
        ...     hist.collect(batch)
        >>> compute_amax(hist, "entropy")
    """

    def __init__(self, num_bins: int = 2048) -> None:
        if num_bins < 2:
            raise ConfigError(f"a histogram needs at least 2 bins, got num_bins={num_bins}")
        self.num_bins = num_bins
        self.width: float | None = None
        self.amax = 0.0
        self.num_values = 0
        self._counts = torch.zeros(num_bins, dtype=torch.int64)

    @classmethod
    def from_counts(cls, counts: np.ndarray | Tensor, edges: np.ndarray | Tensor) -> Histogram:
        """A histogram from counts and their ``len(counts) + 1`` equally spaced edges starting at 0."""
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.int64).reshape(-1)
        edges = np.asarray(edges, dtype=np.float64).reshape(-1)
        width = float(edges[1] - edges[0]) if edges.size > 1 else 0.0
        if edges.size != counts.numel() + 1 or edges[0] != 0 or width <= 0 or not np.allclose(np.diff(edges), width):
            raise ConfigError("histogram edges must be len(counts) + 1 equally spaced values starting at 0")
        hist = cls(max(counts.numel(), 2))
        hist._counts = torch.cat([counts, torch.zeros(hist.num_bins - counts.numel(), dtype=torch.int64)])
        hist.width, hist.num_values = width, int(counts.sum())
        nonzero = torch.nonzero(counts).reshape(-1)
        hist.amax = float(edges[int(nonzero[-1]) + 1]) if nonzero.numel() else 0.0
        return hist

    def collect(self, x: Tensor) -> None:
        """Add the absolute values of ``x`` (any shape; detached, counted on ``x``'s device).

        Raises:
            ConfigError: ``x`` holds NaN or infinity.
        """
        x = x.detach().reshape(-1).abs().float()
        if x.numel() == 0:
            return
        batch_max = float(x.max())
        if not math.isfinite(batch_max):
            raise ConfigError("calibration data holds NaN/inf values (check the model weights and the inputs)")
        self.amax = max(self.amax, batch_max)
        self.num_values += x.numel()
        if self.width is None:
            if batch_max == 0:  # no scale yet: keep the zeros in bin 0
                self._counts[0] += x.numel()
                return
            self.width = batch_max / self.num_bins
        elif batch_max > self.width * self.num_bins:
            self._grow(batch_max)
        index = (x / self.width).floor().clamp_(max=self.num_bins - 1).long()
        self._counts += torch.bincount(index, minlength=self.num_bins).cpu()

    def _grow(self, new_max: float) -> None:
        """Widen the bins by an integer factor so that the range covers ``new_max``."""
        factor = math.ceil(new_max / (self.width * self.num_bins))
        padded = torch.zeros(math.ceil(self.num_bins / factor) * factor, dtype=torch.int64)
        padded[: self.num_bins] = self._counts
        merged = padded.reshape(-1, factor).sum(dim=1)
        self._counts = torch.zeros(self.num_bins, dtype=torch.int64)
        self._counts[: merged.numel()] = merged
        self.width *= factor

    @property
    def counts(self) -> np.ndarray:
        """Counts up to the last non-empty bin (float64)."""
        nonzero = torch.nonzero(self._counts).reshape(-1)
        last = int(nonzero[-1]) + 1 if nonzero.numel() else 0
        return self._counts[:last].numpy().astype(np.float64)

    @property
    def edges(self) -> np.ndarray:
        """The ``len(counts) + 1`` bin edges, ``0, width, 2*width, ...``."""
        return np.arange(len(self.counts) + 1, dtype=np.float64) * (self.width or 0.0)

    def __repr__(self) -> str:
        return f"Histogram(num_bins={self.num_bins}, width={self.width}, amax={self.amax}, values={self.num_values})"


def _checked(hist: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, edges)`` of a histogram with data, else a ConfigError (all zeros gives edges ``[0, 0]``)."""
    if hist.num_values == 0:
        raise ConfigError("the histogram is empty: run calibration batches before computing amax")
    return hist.counts, hist.edges


def max_amax(hist: Histogram) -> float:
    """The largest ``|x|`` collected."""
    _checked(hist)
    return hist.amax


def percentile_amax(hist: Histogram, percentile: float = 99.99) -> float:
    """The ``|x|`` below which ``percentile`` % of the collected values lie (linear interpolation in the bin).

    Raises:
        ConfigError: ``percentile`` not in (0, 100].
    """
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    counts, edges = _checked(hist)
    cumulative = np.cumsum(counts)
    target = percentile / 100 * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, target)), len(counts) - 1)
    before = cumulative[index - 1] if index > 0 else 0.0
    fraction = (target - before) / counts[index] if counts[index] > 0 else 1.0
    return float(min(edges[index] + fraction * (edges[index + 1] - edges[index]), hist.amax))


def _kl_divergence(bins: np.ndarray, stop: int, num_levels: int, eps: float) -> float:
    """KL(P || Q) of the candidate range ``bins[:stop]`` (TensorRT entropy calibration).

    P is ``bins[:stop]`` with the clipped counts added to its last bin. Q merges ``bins[:stop]`` into
    ``num_levels`` groups and spreads each group's count evenly over its non-empty bins. Where P > 0 but Q = 0
    (clipped counts landing in an empty bin) Q gets ``eps`` counts, as MXNet/TVM smooth it; without that the
    divergence is infinite and every candidate below an isolated outlier would be ruled out.
    """
    head = bins[:stop]
    p = head.copy()
    p[-1] += bins[stop:].sum()
    nonzero = (head > 0).astype(np.float64)
    level = (np.arange(stop) * num_levels) // stop
    level_sum = np.bincount(level, weights=head, minlength=num_levels)
    level_nonzero = np.bincount(level, weights=nonzero, minlength=num_levels)
    q = nonzero * level_sum[level] / np.maximum(level_nonzero[level], 1.0)
    q[(p > 0) & (q == 0)] = eps
    mask = p > 0
    p, q = p[mask] / p.sum(), q[mask] / q.sum()
    return float(np.sum(p * np.log(p / q)))


def entropy_amax(
    hist: Histogram, num_bits: int = 8, start_bin: int = 128, stride: int = 1, eps: float = 1e-4, unsigned: bool = False
) -> float:
    """The amax (a bin edge) that minimises KL(P || Q) between the histogram and its quantized version.

    Candidates are the edges ``edges[i]`` for ``i`` from ``start_bin`` to ``len(counts)`` (every ``stride``-th,
    the last always included). As in TensorRT/pytorch-quantization, the count of bin 0 is replaced by that of
    bin 1 (the zeros after a ReLU would otherwise dominate), and among equal divergences the largest amax wins.
    With at most ``2**(num_bits-1)`` bins the quantization is lossless at this resolution: the max edge is used.
    The smallest candidate is ``start_bin`` bins, so the result is at least ``start_bin / len(counts)`` of the max.
    ``unsigned``: the values are non-negative and get ``2**num_bits`` levels (uint8: 256) instead of 128.
    """
    counts, edges = _checked(hist)
    _, num_levels = unsigned_qrange(num_bits) if unsigned else qrange(num_bits)
    num_levels += 1  # 128 magnitudes for int8, 256 for uint8
    bins = counts.copy()
    if len(bins) > 1:
        bins[0] = bins[1]
    if len(bins) <= num_levels:
        return float(min(edges[-1], hist.amax))
    candidates = list(range(max(start_bin, num_levels), len(bins) + 1, max(stride, 1)))
    if candidates[-1] != len(bins):
        candidates.append(len(bins))
    divergences = np.array([_kl_divergence(bins, i, num_levels, eps) for i in candidates])
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return float(min(edges[candidates[best]], hist.amax))


def _squared_error_integral(x: np.ndarray, amax: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``integral_0^x (t - fake_quant(t))^2 dt`` for symmetric quantization clipped at ``amax = qmax * scale``.

    Below amax the error is a sawtooth of period ``scale`` (each full period integrates to ``scale^3 / 12``);
    above it the error is ``t - amax``.
    """
    inside = np.minimum(x, amax)
    steps = np.round(inside / scale)
    rest = inside - steps * scale
    return steps * scale**3 / 12 + rest**3 / 3 + np.maximum(x - amax, 0.0) ** 3 / 3


def mse_amax(hist: Histogram, num_bits: int = 8, chunk: int = 256, unsigned: bool = False) -> float:
    """The bin edge that minimises the expected squared quantization error of the collected values.

    Each bin is taken as uniformly filled, and its error for a candidate amax is integrated exactly (rounding
    error below amax, clipping error above), so the estimate holds both when bins are wider than the
    quantization step and when they are narrower. Only ``|x|`` is known, so the clipping is taken as symmetric
    at ``amax`` (the extra code -128 of the full range is ignored). Every right bin edge is a candidate.
    ``unsigned``: non-negative values on ``2**num_bits - 1`` steps (uint8: scale ``amax / 255``).
    """
    counts, edges = _checked(hist)
    if hist.amax == 0:
        return 0.0
    _, quant_max = unsigned_qrange(num_bits) if unsigned else qrange(num_bits)
    weights = counts / counts.sum() / np.diff(edges)
    candidates = edges[1:]
    errors = []
    for start in range(0, len(candidates), chunk):
        amax = candidates[start : start + chunk, None]
        integral = _squared_error_integral(edges[None, :], amax, amax / quant_max)
        errors.append((np.diff(integral, axis=1) * weights).sum(axis=1))
    return float(min(candidates[int(np.argmin(np.concatenate(errors)))], hist.amax))


_AMAX_FUNCTIONS: dict[CalibMethod, Callable[..., float]] = {
    CalibMethod.MAX: max_amax,
    CalibMethod.PERCENTILE: percentile_amax,
    CalibMethod.ENTROPY: entropy_amax,
    CalibMethod.MSE: mse_amax,
}


def compute_amax(hist: Histogram, method: CalibMethod | str = CalibMethod.ENTROPY, **kwargs: float) -> float:
    """The amax chosen by ``method`` ("max", "percentile", "entropy" or "mse") from ``hist``.

    Args:
        hist: the collected histogram.
        method: a ``CalibMethod`` or its name.
        **kwargs: passed on, e.g. ``percentile=99.999`` or ``num_bits=8``.

    Raises:
        ConfigError: an unknown method, or an empty histogram.

    Example:
        >>> compute_amax(hist, "percentile", percentile=99.99)
    """
    return _AMAX_FUNCTIONS[CalibMethod.parse(method)](hist, **kwargs)


def per_channel_amax(weight: Tensor, axis: int = 0) -> Tensor:
    """``max |weight|`` over every dimension but ``axis`` (float32, one value per channel)."""
    dims = [d for d in range(weight.dim()) if d != axis % weight.dim()]
    return weight.detach().abs().amax(dim=dims).float() if dims else weight.detach().abs().float()
