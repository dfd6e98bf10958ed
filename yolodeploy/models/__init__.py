"""The model zoo: registry, checkpoint I/O (portable format and safe import of official checkpoints)."""

from __future__ import annotations

from ._registry import create_model, is_model, list_models, register_model, register_model_class
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "create_model",
    "list_models",
    "is_model",
    "register_model",
    "register_model_class",
    "load_checkpoint",
    "save_checkpoint",
]
