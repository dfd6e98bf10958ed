"""VariFocal loss, the classification loss of YOLOv6 (arXiv:2209.02976, §2.3.1).

VFL (VarifocalNet, arXiv:2008.13367) trains an IoU-aware classification score: positives use the target
score q (the IoU-aligned score from the assigner) as a soft BCE target weighted by q, negatives are
down-weighted by ``alpha * p**gamma`` like focal loss. Reference: https://github.com/meituan/YOLOv6
(``yolov6/models/losses/loss.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["varifocal_loss"]


def varifocal_loss(
    pred_logits: Tensor, gt_score: Tensor, label: Tensor, alpha: float = 0.75, gamma: float = 2.0
) -> Tensor:
    """Summed VariFocal loss.

    ``loss = sum(BCE(sigmoid(z), q) * w)`` with ``w = q`` on positives (``label == 1``) and
    ``w = alpha * sigmoid(z)**gamma`` on negatives. The weight is treated as a constant (no gradient).

    Args:
        pred_logits: raw classification logits, shape (..., num_classes).
        gt_score: soft targets q in [0, 1], same shape (0 on negatives).
        label: one-hot of the assigned class (1 on the positive entry, 0 elsewhere), same shape.
        alpha: weight of the negatives.
        gamma: focusing exponent on the negatives' predicted probability.

    Returns:
        The scalar sum over all entries, computed in float32 (normalize by the target score sum outside).

    Example:
        >>> varifocal_loss(torch.zeros(1, 2), torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0, 0.0]]))
        tensor(0.4765)
    """
    pred_logits = pred_logits.float()
    gt_score = gt_score.float()
    label = label.float()
    with torch.no_grad():
        weight = alpha * pred_logits.sigmoid().pow(gamma) * (1 - label) + gt_score * label
    bce = F.binary_cross_entropy_with_logits(pred_logits, gt_score, reduction="none")
    return (bce * weight).sum()
