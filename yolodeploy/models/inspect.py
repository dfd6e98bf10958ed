"""Describe a checkpoint file for ``yolodeploy info``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint, read_metadata, sniff_format
from .summary import count_parameters

__all__ = ["describe_checkpoint"]


def describe_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Architecture, form, classes, parameter count and file facts of a yolodeploy or official checkpoint."""
    path = Path(path)
    model = load_checkpoint(path)
    info: dict[str, Any] = {
        "file": str(path),
        "format": "yolodeploy (safetensors)" if sniff_format(path) == "safetensors" else "official (pickle)",
        "size": f"{path.stat().st_size / 1e6:.2f} MB",
        "arch": model.arch,
        "model_class": type(model).__name__,
        "form": model.form,
        "num_classes": model.num_classes,
        "class_names": _abbreviate(model.class_names),
        "input_size": "x".join(map(str, model.input_size)),
        "strides": ",".join(map(str, model.strides)),
        "params": f"{count_parameters(model):,}",
    }
    if info["format"].startswith("yolodeploy"):
        meta = read_metadata(path)
        info["saved_by"] = f"yolodeploy {meta.get('yolodeploy_version')}"
        if meta.get("user"):
            info["metadata"] = meta["user"]
    return info


def _abbreviate(names: list[str] | None, limit: int = 6) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} total)" if len(names) > limit else "")
