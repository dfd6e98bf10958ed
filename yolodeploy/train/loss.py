"""Dense anchor-free detection loss: assignment (TAL, or ATSS during warm-up) + class + IoU + DFL terms.

One implementation serves the YOLOv6 head (VariFocal classification, GIoU/SIoU, 17-bin DFL or direct distances;
``yolov6/models/losses/loss.py`` of github.com/meituan/YOLOv6) and, with BCE classification, CIoU and 16-bin DFL,
each branch of a YOLOv9 head. The model-specific part is only the adapter that flattens a head's training
outputs into :class:`DensePredictions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.assigners import ATSSAssigner, TaskAlignedAssigner
from ..core.boxes import dist2bbox, make_anchor_points
from ..core.losses import IoUKind, bbox_to_distance, distribution_focal_loss, iou_loss
from .targets import pad_targets

__all__ = ["DensePredictions", "LossSpec", "DenseDetectionLoss", "decode_distances", "LossOutput"]


@dataclass
class DensePredictions:
    """Flattened per-anchor predictions of one head branch.

    Attributes:
        scores: (B, A, C) class scores: probabilities, or logits if ``scores_are_logits``.
        box: (B, A, 4 * bins) DFL bin logits (side-major), or (B, A, 4) l, t, r, b distances in grid units.
        sizes: (height, width) of every level, in anchor order.
        strides: stride of every level in input pixels.
        scores_are_logits: whether ``scores`` are pre-sigmoid.
    """

    scores: Tensor
    box: Tensor
    sizes: list[tuple[int, int]]
    strides: list[int]
    scores_are_logits: bool = False

    def probabilities(self) -> Tensor:
        return self.scores.sigmoid() if self.scores_are_logits else self.scores


@dataclass
class LossSpec:
    """Which terms and weights; the defaults are YOLOv6's (VFL 1.0, IoU 2.5, DFL 0.5; TAL topk 13, alpha 1, beta 6).

    ``dfl_bins`` 0 means the box output is 4 direct distances (YOLOv6 without DFL). YOLOv9: see :meth:`yolov9`.
    """

    classification: str = "vfl"  # "vfl" | "bce"
    iou_kind: IoUKind = IoUKind.GIOU
    dfl_bins: int = 17
    weights: dict[str, float] = field(default_factory=lambda: {"cls": 1.0, "iou": 2.5, "dfl": 0.5})
    tal_topk: int = 13
    tal_alpha: float = 1.0
    tal_beta: float = 6.0
    warmup_epochs: int = 0  # epochs assigned by ATSS instead of TAL
    atss_topk: int = 9
    grid_cell_size: float = 5.0  # ATSS anchor box side, in strides

    @classmethod
    def yolov9(cls) -> LossSpec:
        """YOLOv9's per-branch loss: BCE 0.5, CIoU 7.5, 16-bin DFL 1.5, TAL topk 10, alpha 0.5, beta 6."""
        return cls(
            classification="bce",
            iou_kind=IoUKind.CIOU,
            dfl_bins=16,
            weights={"cls": 0.5, "iou": 7.5, "dfl": 1.5},
            tal_topk=10,
            tal_alpha=0.5,
        )


@dataclass
class LossOutput:
    """The weighted total and its detached parts (``cls``, ``iou``, ``dfl``), plus what distillation reuses."""

    total: Tensor
    parts: dict[str, Tensor]
    fg_mask: Tensor | None = None
    target_scores_sum: Tensor | None = None


def decode_distances(box: Tensor, bins: int) -> Tensor:
    """(B, A, 4) l, t, r, b distances from bin logits (softmax expectation), or the box output itself if ``bins`` 0."""
    if not bins:
        return box
    batch, anchors, _ = box.shape
    probabilities = box.reshape(batch, anchors, 4, bins).softmax(-1)
    return probabilities @ torch.arange(bins, dtype=box.dtype, device=box.device)


class DenseDetectionLoss(nn.Module):
    """Anchor-free detection loss over :class:`DensePredictions`.

    Args:
        num_classes: number of classes.
        spec: terms, weights and assigner settings.

    ``forward(pred, targets, epoch)`` takes the collate functions' ``(N, 6)`` pixel targets and returns a
    :class:`LossOutput`; the total is normalized by the sum of target scores, as in the reference.
    """

    def __init__(self, num_classes: int, spec: LossSpec | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.spec = spec or LossSpec()
        self.tal = TaskAlignedAssigner(self.spec.tal_topk, num_classes, self.spec.tal_alpha, self.spec.tal_beta)
        self.atss = ATSSAssigner(self.spec.atss_topk, num_classes)

    def forward(self, pred: DensePredictions, targets: Tensor, epoch: int = 0) -> LossOutput:
        spec = self.spec
        batch = pred.scores.shape[0]
        points, strides = make_anchor_points(pred.sizes, pred.strides, dtype=torch.float32, device=pred.box.device)
        gt_labels, gt_boxes, mask_gt = pad_targets(targets.to(pred.box.device).float(), batch)
        pred_boxes = dist2bbox(decode_distances(pred.box.float(), spec.dfl_bins), points)  # grid units
        scores = pred.probabilities().float()
        labels, target_boxes, target_scores, fg_mask = self._assign(
            pred,
            scores.detach(),
            (pred_boxes * strides).detach(),
            points * strides,
            strides,
            gt_labels,
            gt_boxes,
            mask_gt,
            epoch,
        )
        target_boxes = target_boxes / strides
        target_scores_sum = target_scores.sum().clamp(min=1.0)
        loss_cls = self._classification(pred, labels, target_scores) / target_scores_sum
        loss_iou, loss_dfl = self._box_terms(pred, pred_boxes, points, target_boxes, target_scores, fg_mask)
        loss_iou, loss_dfl = loss_iou / target_scores_sum, loss_dfl / target_scores_sum
        weights = spec.weights
        total = weights["cls"] * loss_cls + weights["iou"] * loss_iou + weights["dfl"] * loss_dfl
        parts = {"cls": loss_cls.detach(), "iou": loss_iou.detach(), "dfl": loss_dfl.detach()}
        return LossOutput(total, parts, fg_mask, target_scores_sum)

    def _assign(self, pred, scores, pred_boxes_px, points_px, strides, gt_labels, gt_boxes, mask_gt, epoch):
        if epoch < self.spec.warmup_epochs:
            half = self.spec.grid_cell_size * strides * 0.5
            anchor_boxes = torch.cat((points_px - half, points_px + half), -1)
            counts = [height * width for height, width in pred.sizes]
            return self.atss(anchor_boxes, counts, gt_labels, gt_boxes, mask_gt, pred_boxes_px)
        return self.tal(scores, pred_boxes_px, points_px, gt_labels, gt_boxes, mask_gt)

    def _classification(self, pred: DensePredictions, labels: Tensor, target_scores: Tensor) -> Tensor:
        if self.spec.classification == "bce":
            logits = pred.scores.float() if pred.scores_are_logits else torch.logit(pred.scores.float(), eps=1e-6)
            return F.binary_cross_entropy_with_logits(logits, target_scores, reduction="sum")
        one_hot = F.one_hot(labels.long(), self.num_classes + 1)[..., :-1].float()
        probabilities = pred.probabilities().float()
        with torch.no_grad():
            weight = 0.75 * probabilities.pow(2.0) * (1 - one_hot) + target_scores * one_hot
        with torch.autocast(device_type=probabilities.device.type, enabled=False):
            bce = F.binary_cross_entropy(probabilities, target_scores, reduction="none")
        return (bce * weight).sum()

    def _box_terms(self, pred, pred_boxes, points, target_boxes, target_scores, fg_mask) -> tuple[Tensor, Tensor]:
        zero = pred.box.sum() * 0.0
        if not fg_mask.any():
            return zero, zero
        weight = target_scores.sum(-1)[fg_mask]
        loss_iou = (iou_loss(pred_boxes[fg_mask], target_boxes[fg_mask], self.spec.iou_kind) * weight).sum()
        bins = self.spec.dfl_bins
        if not bins:
            return loss_iou, zero
        anchor_points = points.unsqueeze(0).expand(fg_mask.shape[0], -1, -1)[fg_mask]
        target_ltrb = bbox_to_distance(anchor_points, target_boxes[fg_mask], bins - 1)
        loss_dfl = (distribution_focal_loss(pred.box[fg_mask].float(), target_ltrb) * weight).sum()
        return loss_iou, loss_dfl
