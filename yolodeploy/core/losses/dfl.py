"""Distribution Focal Loss and the box-to-distance encoding it trains against.

YOLOv6 (arXiv:2209.02976, §2.3.2) and YOLOv9 predict each box side as a discrete distribution over
``reg_max + 1`` bins; DFL (Generalized Focal Loss, arXiv:2006.04388) pushes mass onto the two bins that
bracket the continuous target y: ``(y_r - y) * CE(p, y_l) + (y - y_l) * CE(p, y_r)``.
Reference: https://github.com/meituan/YOLOv6 (``yolov6/models/losses/loss.py``, ``yolov6/utils/general.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["distribution_focal_loss", "bbox_to_distance"]


def bbox_to_distance(points: Tensor, boxes: Tensor, reg_max: int) -> Tensor:
    """Encode xyxy boxes as (left, top, right, bottom) distances from ``points``, clipped to the bin range.

    Args:
        points: anchor points (..., 2) in the same units as ``boxes`` (grid units for DFL targets).
        boxes: xyxy boxes (..., 4).
        reg_max: index of the last bin; distances are clipped to ``[0, reg_max - 0.01]`` so the right bin exists.

    Returns:
        Distances (..., 4).

    Example:
        >>> bbox_to_distance(torch.tensor([[2.0, 2.0]]), torch.tensor([[0.5, 1.0, 3.0, 20.0]]), reg_max=16)
        tensor([[ 1.5000,  1.0000,  1.0000, 15.9900]])
    """
    top_left, bottom_right = boxes.chunk(2, -1)
    distance = torch.cat((points - top_left, bottom_right - points), -1)
    return distance.clamp(0, reg_max - 0.01)


def distribution_focal_loss(pred_logits: Tensor, target_ltrb: Tensor) -> Tensor:
    """Per-box DFL, averaged over the four sides.

    Args:
        pred_logits: bin logits, shape (N, 4, reg_max + 1) or (N, 4 * (reg_max + 1)).
        target_ltrb: continuous targets (N, 4) in bin units, within ``[0, reg_max)`` (see :func:`bbox_to_distance`).

    Returns:
        Loss per box, shape (N,). Weight and reduce it outside (YOLOv6 weights by the target score).

    Raises:
        ValueError: if the shapes do not match.

    Example:
        >>> logits = torch.full((1, 4, 17), -1e4)
        >>> logits[:, :, 3] = 0.0
        >>> distribution_focal_loss(logits, torch.full((1, 4), 3.0))
        tensor([0.])
    """
    if target_ltrb.ndim != 2 or target_ltrb.shape[-1] != 4:
        raise ValueError(f"target_ltrb must have shape (N, 4), got {tuple(target_ltrb.shape)}")
    num_boxes = target_ltrb.shape[0]
    if pred_logits.ndim == 2:
        if pred_logits.shape[-1] % 4:
            raise ValueError(f"pred_logits' last dim must be 4 * (reg_max + 1), got {pred_logits.shape[-1]}")
        pred_logits = pred_logits.reshape(num_boxes, 4, -1)
    if pred_logits.shape[:2] != (num_boxes, 4):
        raise ValueError(f"pred_logits shape {tuple(pred_logits.shape)} does not match {num_boxes} boxes x 4 sides")
    num_bins = pred_logits.shape[-1]
    target = target_ltrb.float()
    left = target.long().clamp(0, num_bins - 2)
    right = left + 1
    weight_left = right.float() - target
    weight_right = 1.0 - weight_left
    logits = pred_logits.float().reshape(-1, num_bins)
    loss_left = F.cross_entropy(logits, left.reshape(-1), reduction="none").view_as(target) * weight_left
    loss_right = F.cross_entropy(logits, right.reshape(-1), reduction="none").view_as(target) * weight_right
    return (loss_left + loss_right).mean(-1)
