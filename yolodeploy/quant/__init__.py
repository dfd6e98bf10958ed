"""INT8 quantization: primitives -> calibrators -> fake-quant modules (issue 6; YOLOv6 paper §2.5)."""

from __future__ import annotations

from .calibrators import (
    CalibMethod,
    Histogram,
    compute_amax,
    entropy_amax,
    max_amax,
    mse_amax,
    per_channel_amax,
    percentile_amax,
)
from .primitives import (
    MIN_SCALE,
    dequantize,
    fake_quantize,
    fake_quantize_scaled,
    quant_error_stats,
    quantize,
    symmetric_scale,
)
from .quantizer import QuantConv2d, QuantState, TensorQuantizer

__all__ = [
    "CalibMethod",
    "Histogram",
    "compute_amax",
    "entropy_amax",
    "max_amax",
    "mse_amax",
    "per_channel_amax",
    "percentile_amax",
    "dequantize",
    "fake_quantize",
    "fake_quantize_scaled",
    "MIN_SCALE",
    "quant_error_stats",
    "quantize",
    "symmetric_scale",
    "QuantConv2d",
    "QuantState",
    "TensorQuantizer",
]
