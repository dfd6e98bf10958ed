"""Training objectives of the two YOLOv6 training heads: anchor-aided (``fuse_ab``) and ``distill_ns``.

YOLOv6 v3.0 (arXiv:2301.05586) §2.3 trains an auxiliary anchor-based branch beside the anchor-free one and drops
it at inference; the small models (N/S) distill from a DFL branch that inference also drops (§2.4.2). The rules
follow github.com/meituan/YOLOv6 (commit e86a483): ``yolov6/models/losses/loss_fuseab.py``,
``loss_distill_ns.py`` and how ``yolov6/core/engine.py`` combines them.

* ``yolov6:fuse_ab``: the anchor-free branch with :class:`~.loss.DenseDetectionLoss` (as ``yolov6:default``)
  plus the anchor-based branch: TAL (top-k 26) over the 3 anchors of every cell, VariFocal on its class
  scores and IoU on its (x, y offset, w, h) boxes, no DFL (the engine builds that loss with ``use_dfl=False``),
  both normalized by the sum of target scores; the two totals are added.
* ``yolov6:distill_ns``: TAL (top-k 13) on the boxes decoded from the DFL distribution, VariFocal on the class
  scores, DFL on the distribution and the IoU loss on *both* box outputs (DFL-decoded and the direct
  l, t, r, b distances that inference uses), added with the IoU weight. The teacher terms of that file are
  :class:`~yolodeploy.train.distill.SelfDistillationLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.assigners import ATSSAssigner, TaskAlignedAssigner
from ..core.boxes import cxcywh_to_xyxy, dist2bbox, make_anchor_points
from ..core.losses import IoUKind, bbox_to_distance, distribution_focal_loss, iou_loss
from .loss import DenseDetectionLoss, DensePredictions, LossOutput, LossSpec, decode_distances
from .objective import Objective, register_objective
from .targets import pad_targets

__all__ = ["AnchorBasedLoss", "FuseABObjective", "DistillNSObjective", "ANCHOR_BASED_TOPK"]

ANCHOR_BASED_TOPK = 26  # TaskAlignedAssigner top-k of the official anchor-based loss (loss_fuseab.py)


def _loss_spec(options: dict, **defaults) -> LossSpec:
    spec = LossSpec(**defaults)
    for name, value in options.items():
        if not hasattr(spec, name):
            raise ValueError(f"unknown loss option {name!r}; valid: {', '.join(sorted(vars(spec)))}")
        setattr(spec, name, value)
    return spec


def _head_outputs(output) -> tuple:
    """The head's training outputs from a model's train-mode ``(head_outputs, features)`` (or the outputs)."""
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], (tuple, list)):
        return tuple(output[0])
    return tuple(output)


def _varifocal(scores: Tensor, labels: Tensor, target_scores: Tensor, num_classes: int) -> Tensor:
    """Summed VariFocal loss on probabilities (the heads emit sigmoid scores); the weight is a constant."""
    one_hot = F.one_hot(labels.long(), num_classes + 1)[..., :-1].float()
    scores = scores.float()
    with torch.no_grad():
        weight = 0.75 * scores.pow(2.0) * (1 - one_hot) + target_scores * one_hot
    with torch.autocast(device_type=scores.device.type, enabled=False):
        bce = F.binary_cross_entropy(scores, target_scores, reduction="none")
    return (bce * weight).sum()


def _normalizer(target_scores: Tensor) -> Tensor:
    """The official divisor: the sum of target scores, or 1 when it is 0 (no positives)."""
    total = target_scores.sum()
    return torch.where(total > 0, total, torch.ones_like(total))


@dataclass
class _Assignment:
    labels: Tensor  # (B, A), background = num_classes
    boxes: Tensor  # (B, A, 4) xyxy in grid units of each anchor's level
    scores: Tensor  # (B, A, C)
    fg_mask: Tensor  # (B, A) bool
    normalizer: Tensor  # scalar

    def box_weight(self) -> Tensor:
        return self.scores.sum(-1)[self.fg_mask]


def _assign(assigner, scores, pred_boxes, points, strides, targets, *, atss=None, counts=None, cell=5.0):
    """Run the assigner in pixels and return targets with boxes back in grid units.

    ``atss`` (with per-level ``counts`` and the anchor-box side ``cell`` in strides) replaces TAL when given.
    """
    gt_labels, gt_boxes, mask_gt = pad_targets(targets.to(scores.device).float(), scores.shape[0])
    points_px = points * strides
    if atss is not None:
        half = cell * strides * 0.5
        anchor_boxes = torch.cat((points_px - half, points_px + half), -1)
        result = atss(anchor_boxes, counts, gt_labels, gt_boxes, mask_gt, (pred_boxes * strides).detach())
    else:
        result = assigner(scores.detach(), (pred_boxes * strides).detach(), points_px, gt_labels, gt_boxes, mask_gt)
    labels, target_boxes, target_scores, fg_mask = result
    return _Assignment(labels, target_boxes / strides, target_scores, fg_mask.bool(), _normalizer(target_scores))


def _iou_term(pred_boxes: Tensor, assignment: _Assignment, kind: IoUKind) -> Tensor:
    if not assignment.fg_mask.any():
        return pred_boxes.sum() * 0.0
    fg = assignment.fg_mask
    loss = iou_loss(pred_boxes[fg], assignment.boxes[fg], kind) * assignment.box_weight()
    return loss.sum() / assignment.normalizer


class AnchorBasedLoss(nn.Module):
    """The anchor-based branch loss of anchor-aided training (official ``loss_fuseab.py``).

    Args:
        num_classes: number of classes.
        num_anchors: anchors per cell (3 in the official configs).
        iou_kind: IoU variant of the box loss (the model config's ``iou_type``).
        weights: ``cls`` and ``iou`` weights (official 1.0 and 2.5; the DFL term is off for this branch).
        topk: positives per gt of the TaskAlignedAssigner (official 26).

    ``forward(scores, boxes, sizes, strides, targets)`` takes the head's ``class_scores_ab`` (B, A, C) and
    ``box_ab`` (B, A, 4) ordered level, anchor, row, column, with x, y offsets from the cell centre and decoded
    w, h, all in grid units; it returns a :class:`~.loss.LossOutput` with parts ``cls`` and ``iou``.
    """

    def __init__(
        self,
        num_classes: int,
        num_anchors: int = 3,
        iou_kind: IoUKind = IoUKind.GIOU,
        weights: dict[str, float] | None = None,
        topk: int = ANCHOR_BASED_TOPK,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_anchors, self.iou_kind = num_classes, num_anchors, iou_kind
        self.weights = {"cls": 1.0, "iou": 2.5, **(weights or {})}
        self.assigner = TaskAlignedAssigner(topk, num_classes, alpha=1.0, beta=6.0)

    def anchor_points(self, sizes, strides, *, device=None) -> tuple[Tensor, Tensor]:
        """Cell centres (grid units) and strides, each level's cells repeated once per anchor."""
        points, point_strides = [], []
        for size, stride in zip(sizes, strides):
            level_points, level_strides = make_anchor_points([size], [stride], dtype=torch.float32, device=device)
            points.append(level_points.repeat(self.num_anchors, 1))
            point_strides.append(level_strides.repeat(self.num_anchors, 1))
        return torch.cat(points), torch.cat(point_strides)

    def forward(self, scores: Tensor, boxes: Tensor, sizes, strides, targets: Tensor) -> LossOutput:
        points, point_strides = self.anchor_points(sizes, strides, device=boxes.device)
        if boxes.shape[1] != points.shape[0]:
            raise ValueError(f"anchor-based outputs have {boxes.shape[1]} anchors, the maps give {points.shape[0]}")
        boxes = boxes.float()
        pred_boxes = cxcywh_to_xyxy(torch.cat((boxes[..., :2] + points, boxes[..., 2:4]), -1))
        assignment = _assign(self.assigner, scores.float(), pred_boxes, points, point_strides, targets)
        loss_cls = _varifocal(scores, assignment.labels, assignment.scores, self.num_classes) / assignment.normalizer
        loss_iou = _iou_term(pred_boxes, assignment, self.iou_kind)
        total = self.weights["cls"] * loss_cls + self.weights["iou"] * loss_iou
        parts = {"cls": loss_cls.detach(), "iou": loss_iou.detach()}
        return LossOutput(total, parts, assignment.fg_mask, assignment.normalizer)


class FuseABObjective(Objective):
    """Anchor-aided training: the anchor-free loss plus :class:`AnchorBasedLoss`, summed as the official engine.

    Args:
        model: a YOLOv6 model whose head variant is ``fuse_ab``.
        **options: :class:`~.loss.LossSpec` fields for the anchor-free part; ``iou_kind`` also sets the
            anchor-based branch's IoU (both follow the config's ``iou_type`` in the official code).

    The result's parts are the anchor-free ``cls``/``iou``/``dfl`` and the anchor-based ``cls_ab``/``iou_ab``;
    ``fg_mask`` and ``target_scores_sum`` are the anchor-free branch's (the one distillation and inference use).

    Example:
        >>> model = create_model("yolov6n", num_classes=3, head="fuse_ab").train()
        >>> objective = build_objective(model)
        >>> result = objective(model(images), targets)
    """

    def __init__(self, model: nn.Module, **options) -> None:
        super().__init__()
        head = model.head
        if head.variant != "fuse_ab":
            raise ValueError(f"FuseABObjective needs a fuse_ab head, got {head.variant!r}")
        spec = _loss_spec(options, dfl_bins=head.reg_max + 1 if head.use_dfl else 0)
        self.strides = list(model.strides)
        self.anchor_free = DenseDetectionLoss(model.num_classes, spec)
        self.anchor_based = AnchorBasedLoss(model.num_classes, head.num_anchors, spec.iou_kind)

    def forward(self, output, targets: Tensor, epoch: int = 0) -> LossOutput:
        stems, scores_ab, boxes_ab, scores, box = _head_outputs(output)
        sizes = [tuple(stem.shape[-2:]) for stem in stems]
        strides = self.strides[: len(sizes)]
        free = self.anchor_free(DensePredictions(scores, box, sizes, strides), targets, epoch)
        based = self.anchor_based(scores_ab, boxes_ab, sizes, strides, targets)
        parts = {**free.parts, **{f"{name}_ab": value for name, value in based.parts.items()}}
        return LossOutput(free.total + based.total, parts, free.fg_mask, free.target_scores_sum)


class DistillNSObjective(Objective):
    """The ground-truth part of the official ``loss_distill_ns.py`` for the ``distill_ns`` head.

    Assignment uses the DFL-decoded boxes; the class scores get VariFocal, the distribution gets DFL, and the
    IoU loss is applied to the DFL-decoded boxes and to the direct-distance boxes (``reg_preds``), summed under
    the one IoU weight. Add :class:`~yolodeploy.train.distill.SelfDistillationLoss` for the teacher terms.

    Args:
        model: a YOLOv6 model whose head variant is ``distill_ns`` (with DFL, as the official recipe).
        **options: :class:`~.loss.LossSpec` fields (``iou_kind``, ``weights``, ``tal_topk``, ``warmup_epochs``...).

    Example:
        >>> model = create_model("yolov6n", num_classes=3, head="distill_ns").train()
        >>> result = build_objective(model)(model(images), targets)
    """

    def __init__(self, model: nn.Module, **options) -> None:
        super().__init__()
        head = model.head
        if head.variant != "distill_ns" or not head.use_dfl:
            raise ValueError("DistillNSObjective needs a distill_ns head with use_dfl=True (reg_max 16)")
        self.num_classes = model.num_classes
        self.strides = list(model.strides)
        self.spec = _loss_spec(options, dfl_bins=head.reg_max + 1)
        spec = self.spec
        self.tal = TaskAlignedAssigner(spec.tal_topk, self.num_classes, spec.tal_alpha, spec.tal_beta)
        self.atss = ATSSAssigner(spec.atss_topk, self.num_classes)

    def forward(self, output, targets: Tensor, epoch: int = 0) -> LossOutput:
        stems, scores, distribution, distances = _head_outputs(output)[:4]
        spec, bins = self.spec, self.spec.dfl_bins
        sizes = [tuple(stem.shape[-2:]) for stem in stems]
        level_strides = self.strides[: len(sizes)]
        points, strides = make_anchor_points(sizes, level_strides, dtype=torch.float32, device=scores.device)
        boxes_dfl = dist2bbox(decode_distances(distribution.float(), bins), points)
        boxes_direct = dist2bbox(distances.float(), points)
        warmup = epoch < spec.warmup_epochs
        assignment = _assign(
            self.tal,
            scores.float(),
            boxes_dfl,
            points,
            strides,
            targets,
            atss=self.atss if warmup else None,
            counts=[h * w for h, w in sizes],
            cell=spec.grid_cell_size,
        )
        loss_cls = _varifocal(scores, assignment.labels, assignment.scores, self.num_classes) / assignment.normalizer
        loss_iou = _iou_term(boxes_dfl, assignment, spec.iou_kind) + _iou_term(boxes_direct, assignment, spec.iou_kind)
        loss_dfl = self._dfl_term(distribution, points, assignment)
        weights = spec.weights
        total = weights["cls"] * loss_cls + weights["iou"] * loss_iou + weights["dfl"] * loss_dfl
        parts = {"cls": loss_cls.detach(), "iou": loss_iou.detach(), "dfl": loss_dfl.detach()}
        return LossOutput(total, parts, assignment.fg_mask, assignment.normalizer)

    def _dfl_term(self, distribution: Tensor, points: Tensor, assignment: _Assignment) -> Tensor:
        fg = assignment.fg_mask
        if not fg.any():
            return distribution.sum() * 0.0
        anchor_points = points.unsqueeze(0).expand(fg.shape[0], -1, -1)[fg]
        target_ltrb = bbox_to_distance(anchor_points, assignment.boxes[fg], self.spec.dfl_bins - 1)
        loss = distribution_focal_loss(distribution[fg].float(), target_ltrb) * assignment.box_weight()
        return loss.sum() / assignment.normalizer


register_objective("yolov6:fuse_ab")(FuseABObjective)
register_objective("yolov6:distill_ns")(DistillNSObjective)
