"""Shape helpers that keep an exported graph static where only the batch is dynamic.

Under ``torch.onnx.export`` tracing, every size read from a tensor (``x.shape[2]``, ``x.flatten(2)``,
``x.chunk(2, 1)``) becomes Shape / Gather / arithmetic nodes that ONNX Runtime evaluates on every call, and that
keep the anchor grid of a head from being folded into a constant. Our exports fix the image size and leave only
the batch dynamic, so heights, widths and channel counts can be plain ints. ``yolodeploy export MODEL -o F.onnx
--img 192 --dynamic-batch`` before and after: YOLOv6-N 393 -> 181 nodes, YOLOv6-lite-S 1131 -> 431, YOLOv7-tiny
492 -> 273, GELAN-T 952 -> 668, none of them a Shape node any more (``tests/deploy/test_export.py``). In eager
mode the helpers compute exactly what the tensor methods they replace do.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["static_size", "batch_dim", "flatten_spatial", "halves"]


def static_size(feature: Tensor) -> tuple[int, int]:
    """``(height, width)`` of a (..., H, W) map as plain ints."""
    return int(feature.shape[-2]), int(feature.shape[-1])


def batch_dim(x: Tensor) -> int:
    """The batch size to reshape ``x`` with: ``-1`` under ONNX export (inferred, no Shape node), else the size
    (``-1`` cannot be inferred for an empty batch)."""
    return -1 if torch.onnx.is_in_onnx_export() else int(x.shape[0])


def flatten_spatial(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H * W), ``x.flatten(2)`` with constant sizes under export."""
    height, width = static_size(x)
    return x.reshape(batch_dim(x), int(x.shape[1]), height * width)


def halves(x: Tensor, dim: int = 1) -> tuple[Tensor, Tensor]:
    """``x.chunk(2, dim)`` (the first half takes the odd element) with constant split sizes under export."""
    size = int(x.shape[dim])
    first = (size + 1) // 2
    return tuple(x.split((first, size - first), dim))
