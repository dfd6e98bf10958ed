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

# the quantized model and its calibration (issue 6 items 1-2); Q/DQ export and parity live in
# ``yolodeploy.quant.export``, not imported here so that ``import yolodeploy.quant`` does not load onnx
from .calibrate import (  # noqa: E402
    CalibrationManifest,
    CalibrationResult,
    apply_amax,
    calibrate,
    calibrate_cached,
    calibration_batches,
    calibration_images,
)
from .model import (  # noqa: E402
    disable_all,
    enable_all,
    float_layers,
    keep_float,
    load_quantized,
    quant_layers,
    quantize_model,
    save_quantized,
    set_layer_enabled,
)

__all__ += [
    "CalibrationManifest",
    "CalibrationResult",
    "apply_amax",
    "calibrate",
    "calibrate_cached",
    "calibration_batches",
    "calibration_images",
    "disable_all",
    "enable_all",
    "float_layers",
    "keep_float",
    "load_quantized",
    "quant_layers",
    "quantize_model",
    "save_quantized",
    "set_layer_enabled",
]

# quantization-aware training (issue 6 item 5)
from .qat import DistillMethod, QATConfig, QATLoss, QATResult, run_qat  # noqa: E402

__all__ += ["DistillMethod", "QATConfig", "QATLoss", "QATResult", "run_qat"]
