"""User-facing errors.

Every error a user can cause (bad path, unknown model, unsafe checkpoint...) is a ``YoloDeployError``
subclass whose message says what is wrong and how to fix it. The CLI catches only these and prints one
line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "YoloDeployError",
    "UnknownModelError",
    "ConfigError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "ArchitectureMismatchError",
    "BackendUnavailableError",
    "ExportError",
    "OnnxModelError",
    "RunnerError",
    "FeedError",
    "EngineError",
    "EngineMismatchError",
    "ImageError",
    "BenchmarkResultError",
    "EvaluationError",
    "DatasetError",
    "first_line",
]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (backends raise multi-line reports), cut at ``limit``."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class YoloDeployError(Exception):
    """Base class of every error caused by user input or the environment (not by a bug)."""

    exit_code: int = 1


class UnknownModelError(YoloDeployError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(YoloDeployError, ValueError):
    """An invalid option or config value (e.g. ``num_classes=0``)."""


class CheckpointError(YoloDeployError):
    """A file that is missing, truncated, or not a checkpoint we can read."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that references code we do not allow (it could execute on load)."""


class ArchitectureMismatchError(CheckpointError):
    """Weights whose keys/shapes do not fit the architecture they claim (or any we know)."""


class BackendUnavailableError(YoloDeployError):
    """An optional backend (TensorRT, ONNX Runtime, CUDA...) that is not installed or has no device."""


class ImageError(YoloDeployError, ValueError):
    """An image file that is missing or unreadable, or an array that is not an HWC RGB image."""


class BenchmarkResultError(YoloDeployError):
    """A benchmark result JSON that is missing, corrupt, or lacks what a comparison needs."""


class RunnerError(YoloDeployError):
    """A runner used the wrong way (e.g. ``infer`` before ``activate``) or unable to start."""


class FeedError(RunnerError, ValueError):
    """An inference feed that does not fit the model: unknown/missing input, wrong dtype, rank or shape."""


class EngineError(YoloDeployError):
    """A TensorRT engine (or ORT-optimized model) that cannot be built or loaded, or an invalid build option."""


class EngineMismatchError(EngineError):
    """An engine whose sidecar names another TensorRT version or GPU than the one it would run on."""


class ExportError(YoloDeployError):
    """An ONNX export that failed or produced a wrong graph (wrong opset, parity above tolerance...)."""


class OnnxModelError(YoloDeployError, ValueError):
    """An ONNX file that is missing, corrupt, invalid, or whose I/O does not fit (e.g. input not an image)."""


class EvaluationError(YoloDeployError, ValueError):
    """COCO ground truth or detections that cannot be evaluated (unreadable JSON, unknown image/category ids)."""


class DatasetError(YoloDeployError, ValueError):
    """A dataset folder or annotation file that cannot be used (no images, unreadable JSON, bad split fractions)."""


class CalibrationError(ConfigError):
    """Calibration that cannot run: no calibration images, an empty batch stream, a model with nothing to calibrate."""


__all__.append("CalibrationError")
