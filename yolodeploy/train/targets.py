"""Ground-truth batching: the flat ``(N, 6)`` rows of the collate functions -> padded per-image tensors."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pad_targets"]


def pad_targets(targets: Tensor, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pad ``(N, 6)`` rows ``(image_index, class, x1, y1, x2, y2)`` to per-image tensors.

    Returns:
        ``labels`` (B, M, 1) float, ``boxes`` (B, M, 4) xyxy, ``mask`` (B, M, 1) 1.0 for real boxes; M is the
        largest box count of any image (at least 1, so that the assigners always see a gt axis).

    Example:
        >>> labels, boxes, mask = pad_targets(torch.tensor([[1.0, 2, 0, 0, 4, 4]]), batch_size=2)
        >>> mask.squeeze(-1)
        tensor([[0.],
                [1.]])
    """
    image_index = targets[:, 0].long()
    counts = torch.bincount(image_index, minlength=batch_size) if len(targets) else torch.zeros(batch_size)
    width = max(int(counts.max()) if len(targets) else 0, 1)
    labels = targets.new_zeros(batch_size, width, 1)
    boxes = targets.new_zeros(batch_size, width, 4)
    mask = targets.new_zeros(batch_size, width, 1)
    for image in range(batch_size):
        rows = targets[image_index == image]
        labels[image, : len(rows), 0] = rows[:, 1]
        boxes[image, : len(rows)] = rows[:, 2:6]
        mask[image, : len(rows)] = 1.0
    return labels, boxes, mask
