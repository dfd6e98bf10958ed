"""yolodeploy: re-parameterize, quantize, export and benchmark real-time YOLO detectors."""

from __future__ import annotations

__version__ = "0.1.0"

from .core.reparam import reparameterize_model
from .errors import YoloDeployError

__all__ = ["__version__", "reparameterize_model", "YoloDeployError"]
