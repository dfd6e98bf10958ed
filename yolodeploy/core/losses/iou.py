"""IoU family for xyxy boxes: IoU, GIoU, DIoU, CIoU and SIoU, plus the ``1 - IoU`` box regression loss.

YOLOv6 (arXiv:2209.02976, §2.3.2) regresses boxes with SIoU for the small models and GIoU for the larger ones.
References: GIoU (arXiv:1902.09630), DIoU/CIoU (arXiv:1911.08287), SIoU (arXiv:2205.12740);
reference implementation https://github.com/meituan/YOLOv6 (``yolov6/utils/figure_iou.py``).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import Tensor

__all__ = ["IoUKind", "Reduction", "box_iou", "bbox_iou", "iou_loss"]


class IoUKind(Enum):
    """Which IoU variant :func:`bbox_iou` computes."""

    IOU = "iou"
    GIOU = "giou"
    DIOU = "diou"
    CIOU = "ciou"
    SIOU = "siou"


class Reduction(Enum):
    """How :func:`iou_loss` reduces the per-box losses."""

    NONE = "none"
    MEAN = "mean"
    SUM = "sum"


def box_iou(boxes_a: Tensor, boxes_b: Tensor, eps: float = 1e-9) -> Tensor:
    """Pairwise plain IoU between two sets of xyxy boxes.

    Args:
        boxes_a: boxes of shape (..., M, 4).
        boxes_b: boxes of shape (..., N, 4); leading dimensions broadcast with ``boxes_a``.
        eps: added to the union so that empty boxes give 0 instead of NaN.

    Returns:
        IoU matrix of shape (..., M, N).

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]]))
        tensor([[0.1429]])
    """
    a = boxes_a.unsqueeze(-2)
    b = boxes_b.unsqueeze(-3)
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


def _siou_penalty(
    center_dx: Tensor, center_dy: Tensor, enclose_w: Tensor, enclose_h: Tensor, sizes: tuple[Tensor, ...], eps: float
) -> Tensor:
    """SIoU's ``(distance_cost + shape_cost) / 2`` with the angle cost folded into the distance cost."""
    width_a, height_a, width_b, height_b = sizes
    center_dx = center_dx + eps
    center_dy = center_dy + eps
    sigma = torch.sqrt(center_dx**2 + center_dy**2)
    sin_x = center_dx.abs() / sigma
    sin_y = center_dy.abs() / sigma
    # Align with the nearer axis: the angle cost is 0 along an axis and 1 on the diagonal.
    sin_alpha = torch.where(sin_x > math.sqrt(2) / 2, sin_y, sin_x)
    angle_cost = torch.cos(torch.arcsin(sin_alpha) * 2 - math.pi / 2)
    gamma = angle_cost - 2
    rho_x = (center_dx / (enclose_w + eps)) ** 2
    rho_y = (center_dy / (enclose_h + eps)) ** 2
    distance_cost = 2 - torch.exp(gamma * rho_x) - torch.exp(gamma * rho_y)
    omega_w = (width_a - width_b).abs() / (torch.maximum(width_a, width_b) + eps)
    omega_h = (height_a - height_b).abs() / (torch.maximum(height_a, height_b) + eps)
    shape_cost = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    return 0.5 * (distance_cost + shape_cost)


def bbox_iou(boxes_a: Tensor, boxes_b: Tensor, kind: IoUKind = IoUKind.IOU, eps: float = 1e-7) -> Tensor:
    """Elementwise IoU variant between matching xyxy boxes.

    Args:
        boxes_a: boxes of shape (..., 4), e.g. predictions.
        boxes_b: boxes of shape (..., 4) broadcastable with ``boxes_a``, e.g. targets.
        kind: the variant; GIoU/DIoU/CIoU/SIoU subtract their penalty from the plain IoU, so they lie in [-1, 1].
        eps: numerical guard for empty boxes and zero-size enclosures.

    Returns:
        The IoU variant, shape (...).

    Example:
        >>> bbox_iou(torch.tensor([0.0, 0, 2, 2]), torch.tensor([1.0, 1, 3, 3]), IoUKind.GIOU)
        tensor(-0.0794)
    """
    ax1, ay1, ax2, ay2 = boxes_a.unbind(-1)
    bx1, by1, bx2, by2 = boxes_b.unbind(-1)
    width_a, height_a = (ax2 - ax1).clamp(min=0), (ay2 - ay1).clamp(min=0)
    width_b, height_b = (bx2 - bx1).clamp(min=0), (by2 - by1).clamp(min=0)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(min=0)
    union = width_a * height_a + width_b * height_b - inter + eps
    iou = inter / union
    if kind is IoUKind.IOU:
        return iou
    enclose_w = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    enclose_h = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    if kind is IoUKind.GIOU:
        enclose_area = enclose_w * enclose_h + eps
        return iou - (enclose_area - union) / enclose_area
    center_dx = (bx1 + bx2 - ax1 - ax2) / 2
    center_dy = (by1 + by2 - ay1 - ay2) / 2
    if kind is IoUKind.SIOU:
        sizes = (width_a, height_a, width_b, height_b)
        return iou - _siou_penalty(center_dx, center_dy, enclose_w, enclose_h, sizes, eps)
    diagonal2 = enclose_w**2 + enclose_h**2 + eps
    distance_term = (center_dx**2 + center_dy**2) / diagonal2
    if kind is IoUKind.DIOU:
        return iou - distance_term
    if kind is IoUKind.CIOU:
        aspect = torch.atan(width_b / (height_b + eps)) - torch.atan(width_a / (height_a + eps))
        v = (4 / math.pi**2) * aspect**2
        with torch.no_grad():
            alpha = v / (v - iou + 1 + eps)
        return iou - (distance_term + alpha * v)
    raise ValueError(f"unknown IoU kind {kind!r}; valid: {[k.name for k in IoUKind]}")


def iou_loss(
    pred: Tensor, target: Tensor, kind: IoUKind = IoUKind.GIOU, reduction: Reduction = Reduction.NONE
) -> Tensor:
    """Box regression loss ``1 - IoU_kind(pred, target)`` for matching xyxy boxes.

    Args:
        pred: predicted boxes (..., 4).
        target: target boxes (..., 4).
        kind: the IoU variant.
        reduction: ``NONE`` keeps shape (...), ``MEAN``/``SUM`` reduce to a scalar.

    Returns:
        The loss.

    Example:
        >>> iou_loss(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[0.0, 0, 2, 2]]), IoUKind.SIOU)
        tensor([0.])
    """
    loss = 1.0 - bbox_iou(pred, target, kind)
    if reduction is Reduction.MEAN:
        return loss.mean()
    if reduction is Reduction.SUM:
        return loss.sum()
    return loss
