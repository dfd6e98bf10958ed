"""Quantization primitives: pure tensor functions for symmetric int8 (fake) quantization and error metrics.

Layer one of ``primitives -> calibrators -> quantizer`` (YOLOv6 paper §2.5; issue 6). The scheme is symmetric,
zero point 0, full int8 range ``[-128, 127]`` (the narrow range ``[-127, 127]`` does not export through
``torch.onnx``) with ``scale = amax / 127``: ``+amax`` maps exactly to 127 and ``-amax`` to -127, so the extra
code -128 is only reached by values below ``-amax`` (clipped to ``-128 * scale``). Fake quantization calls torch's
own ``fake_quantize_per_{tensor,channel}_affine`` ops, which export as ONNX QuantizeLinear/DequantizeLinear.
Rounding is half to even, like ``torch.round`` and ONNX QuantizeLinear.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "MIN_SCALE",
    "qrange",
    "unsigned_qrange",
    "learnable_fake_quantize",
    "symmetric_scale",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_scaled",
    "quant_error_stats",
]

MIN_SCALE = 1e-12
"""Smallest scale: an all-zero tensor (amax 0) gets this instead of a zero scale (which would divide by zero)."""


def qrange(num_bits: int = 8) -> tuple[int, int]:
    """The full signed integer range ``(-2**(b-1), 2**(b-1) - 1)`` of ``num_bits``.

    Raises:
        ConfigError: ``num_bits`` outside 2..8.
    """
    if not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
        raise ConfigError(f"num_bits must be an int in 2..8 (torch fake-quant ops are at most 8-bit), got {num_bits!r}")
    return -(1 << (num_bits - 1)), (1 << (num_bits - 1)) - 1


def symmetric_scale(amax: Tensor | float, num_bits: int = 8) -> Tensor:
    """``amax / (2**(num_bits-1) - 1)`` as float32, floored at ``MIN_SCALE`` (so amax 0 still quantizes).

    Example:
        >>> symmetric_scale(1.27)  # tensor(0.0100)
    """
    _, quant_max = qrange(num_bits)
    amax = torch.as_tensor(amax, dtype=torch.float32)
    return (amax.abs() / quant_max).clamp(min=MIN_SCALE)


def _broadcast(scale: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """``scale`` shaped to broadcast along ``axis`` of ``x`` (a scalar scale when ``axis`` is None)."""
    if axis is None:
        return scale
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.reshape(shape)


def quantize(x: Tensor, scale: Tensor | float, axis: int | None = None, num_bits: int = 8) -> Tensor:
    """Integer codes ``clamp(round_half_even(x / scale), qmin, qmax)`` as int8 (per channel along ``axis``).

    This is ONNX QuantizeLinear with zero point 0.
    """
    quant_min, quant_max = qrange(num_bits)
    scale = _broadcast(torch.as_tensor(scale, dtype=torch.float32, device=x.device), x, axis)
    return torch.round(x / scale).clamp(quant_min, quant_max).to(torch.int8)


def dequantize(q: Tensor, scale: Tensor | float, axis: int | None = None) -> Tensor:
    """Float values ``q * scale`` (per channel along ``axis``); ONNX DequantizeLinear with zero point 0."""
    scale = _broadcast(torch.as_tensor(scale, dtype=torch.float32, device=q.device), q, axis)
    return q.to(torch.float32) * scale


def fake_quantize(x: Tensor, amax: Tensor | float, axis: int | None = None, num_bits: int = 8) -> Tensor:
    """Quantize-dequantize ``x`` with scale ``symmetric_scale(amax)`` using torch's exportable fake-quant ops.

    Args:
        x: float tensor.
        amax: scalar (per tensor) or one value per channel of ``x`` along ``axis``.
        axis: None for per-tensor, else the channel axis (0 for conv weights).
        num_bits: 2..8.

    Returns:
        A float tensor like ``x``; gradients pass straight through inside the clipping range.

    Example:
        >>> fake_quantize(torch.tensor([0.004, 0.016, 5.0]), 1.27)  # tensor([0.0000, 0.0200, 1.2700])
    """
    return fake_quantize_scaled(x, symmetric_scale(amax, num_bits).to(x.device), axis, num_bits)


def unsigned_qrange(num_bits: int = 8) -> tuple[int, int]:
    """The unsigned integer range ``(0, 2**b - 1)`` of ``num_bits`` (uint8: 0..255, zero point 0)."""
    _, quant_max = qrange(num_bits)
    return 0, 2 * quant_max + 1


def fake_quantize_scaled(
    x: Tensor, scale: Tensor, axis: int | None = None, num_bits: int = 8, unsigned: bool = False
) -> Tensor:
    """``fake_quantize`` from a ready float32 ``scale`` (shape ``()`` or ``(C,)``; must be > 0).

    It adds no op besides torch's fake-quant op, so ``scale = amax_buffer / 127`` constant-folds in the
    TorchScript ONNX exporter and the exported QuantizeLinear/DequantizeLinear get initializer scales.
    ``unsigned`` uses the range ``0..2**b - 1`` (zero point 0), which the exporter writes as uint8: the
    resolution a non-negative tensor (after ReLU) gets from ONNX Runtime's uint8 kernels.
    """
    quant_min, quant_max = unsigned_qrange(num_bits) if unsigned else qrange(num_bits)
    if axis is None:
        zero_point = torch.zeros((), dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)
    zero_point = torch.zeros(scale.shape, dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max)


def learnable_fake_quantize(
    x: Tensor, scale: Tensor, axis: int | None = None, num_bits: int = 8, unsigned: bool = False
) -> Tensor:
    """:func:`fake_quantize_scaled` whose gradient also reaches ``scale`` (LSQ, Esser et al. 2020, arXiv:1902.08153).

    Same forward values (round half to even, clamp to the integer range). Backward: straight-through for ``x``
    inside the range and zero where clipped; for ``scale``, ``round(x/s) - x/s`` inside the range and the clipped
    code (``quant_min`` or ``quant_max``) outside it. Plain torch ops, used only in training: export goes through
    :func:`fake_quantize_scaled` once the range is frozen again.
    """
    quant_min, quant_max = unsigned_qrange(num_bits) if unsigned else qrange(num_bits)
    scale = _broadcast(scale, x, axis)
    code = torch.clamp(x / scale, quant_min, quant_max)
    code = code + (torch.round(code) - code).detach()  # straight-through rounding
    return code * scale


def quant_error_stats(ref: Tensor, test: Tensor) -> dict[str, float]:
    """Error of ``test`` against ``ref`` over all elements (both flattened; computed in float64).

    Returns:
        ``mse`` (mean squared error), ``snr_db`` (``10*log10(sum ref^2 / sum err^2)``; ``inf`` when equal),
        ``cosine`` (cosine similarity of the flattened tensors; 1.0 when both are zero, 0.0 when only one is)
        and ``max_abs`` (largest absolute error).

    Raises:
        ConfigError: different element counts.
    """
    ref = ref.detach().reshape(-1).to(torch.float64)
    test = test.detach().reshape(-1).to(torch.float64)
    if ref.numel() != test.numel():
        raise ConfigError(f"quant_error_stats needs equally sized tensors, got {ref.numel()} and {test.numel()}")
    err = test - ref
    signal, noise = float((ref * ref).sum()), float((err * err).sum())
    snr_db = math.inf if noise == 0 else (-math.inf if signal == 0 else 10.0 * math.log10(signal / noise))
    norms = float(ref.norm() * test.norm())
    if norms == 0:
        cosine = 1.0 if float(ref.abs().sum() + test.abs().sum()) == 0 else 0.0
    else:
        cosine = float((ref * test).sum()) / norms
    return {
        "mse": noise / max(ref.numel(), 1),
        "snr_db": snr_db,
        "cosine": cosine,
        "max_abs": float(err.abs().max()) if err.numel() else 0.0,
    }
