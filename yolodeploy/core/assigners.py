"""Label assignment for anchor-free YOLO heads: Task-Aligned (TAL) and ATSS assigners.

YOLOv6 (arXiv:2209.02976, §2.3.1, "Label Assignment") warms up with ATSS (arXiv:1912.02424) for the first
epochs, then switches to TAL from TOOD (arXiv:2108.07755), whose alignment metric ``t = s**alpha * u**beta``
couples the predicted class score s and the predicted box IoU u. Reference implementation:
https://github.com/meituan/YOLOv6 (``yolov6/assigners/``).

Both assigners share one output contract, per image b and anchor a:
``target_labels`` (B, A) long, the assigned class, ``num_classes`` for background;
``target_bboxes`` (B, A, 4) xyxy, the assigned gt box (meaningless where ``fg_mask`` is False);
``target_scores`` (B, A, C) float, the soft classification target (one-hot scaled by an IoU-like quality);
``fg_mask`` (B, A) bool, which anchors are positives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolodeploy.core.losses.iou import box_iou

__all__ = ["TaskAlignedAssigner", "ATSSAssigner", "AssignResult"]

AssignResult = tuple[Tensor, Tensor, Tensor, Tensor]


def _points_in_boxes(points: Tensor, gt_boxes: Tensor, eps: float = 1e-9) -> Tensor:
    """(B, M, A) bool: anchor point a lies strictly inside gt box m of image b."""
    top_left = points[None, None] - gt_boxes[..., None, :2]
    bottom_right = gt_boxes[..., None, 2:] - points[None, None]
    return torch.cat((top_left, bottom_right), -1).amin(-1) > eps


def _resolve_multiple_gts(mask_pos: Tensor, overlaps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep, for every anchor claimed by several gts, only the claiming gt with the highest IoU.

    Returns ``target_gt_idx`` (B, A), ``fg_mask`` (B, A) bool and the cleaned ``mask_pos`` (B, M, A) bool.
    """
    num_gts = mask_pos.shape[1]
    claims = mask_pos.sum(1)
    if claims.max() > 1:
        best_gt = overlaps.masked_fill(~mask_pos, -1.0).argmax(1)
        best_one_hot = F.one_hot(best_gt, num_gts).permute(0, 2, 1).bool()
        mask_pos = torch.where((claims > 1)[:, None], best_one_hot, mask_pos)
    fg_mask = mask_pos.any(1)
    target_gt_idx = mask_pos.float().argmax(1)
    return target_gt_idx, fg_mask, mask_pos


def _gather_targets(
    gt_labels: Tensor, gt_boxes: Tensor, target_gt_idx: Tensor, fg_mask: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Assigned labels (background = ``num_classes``), boxes and one-hot scores for every anchor."""
    labels = gt_labels.long().clamp(min=0).gather(1, target_gt_idx)
    labels = torch.where(fg_mask, labels, torch.full_like(labels, num_classes))
    boxes = gt_boxes.gather(1, target_gt_idx[..., None].expand(-1, -1, 4))
    scores = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(gt_boxes.dtype)
    return labels, boxes, scores


def _prepare_gts(gt_labels: Tensor, mask_gt: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten (B, M, 1) labels and pad masks to (B, M)."""
    return gt_labels.reshape(gt_labels.shape[:2]), mask_gt.reshape(mask_gt.shape[:2]).bool()


def _empty_result(batch: int, num_anchors: int, num_classes: int, like: Tensor) -> AssignResult:
    labels = torch.full((batch, num_anchors), num_classes, dtype=torch.long, device=like.device)
    boxes = like.new_zeros(batch, num_anchors, 4)
    scores = like.new_zeros(batch, num_anchors, num_classes)
    return labels, boxes, scores, torch.zeros(batch, num_anchors, dtype=torch.bool, device=like.device)


class TaskAlignedAssigner(nn.Module):
    """Task-aligned assigner (TOOD/TAL), the main YOLOv6 assigner.

    For each gt, the candidates are anchor points inside the gt box; the ``topk`` candidates with the largest
    alignment ``score**alpha * iou**beta`` become positives. Their target score is the one-hot class scaled by
    ``t / max_t * max_iou`` over the gt's positives.

    Args:
        topk: positives per gt.
        num_classes: number of classes C; also the background label.
        alpha: exponent of the predicted class score in the alignment metric.
        beta: exponent of the predicted-box IoU in the alignment metric.
        eps: numerical guard.

    Example:
        >>> points = torch.tensor([[0.5, 0.5], [1.5, 0.5], [5.5, 5.5]])
        >>> gt_boxes = torch.tensor([[[0.0, 0.0, 2.0, 1.0]]])
        >>> assigner = TaskAlignedAssigner(topk=2, num_classes=2)
        >>> labels, boxes, scores, fg = assigner(
        ...     torch.full((1, 3, 2), 0.5), gt_boxes.expand(1, 3, 4), points, torch.tensor([[[1]]]), gt_boxes,
        ...     torch.ones(1, 1, 1))
        >>> fg, labels
        (tensor([[ True,  True, False]]), tensor([[1, 1, 2]]))
    """

    def __init__(
        self, topk: int = 13, num_classes: int = 80, alpha: float = 1.0, beta: float = 6.0, eps: float = 1e-9
    ) -> None:
        super().__init__()
        self.topk = topk
        self.num_classes = num_classes
        self.alpha = alpha
        self.beta = beta
        self.eps = eps

    @torch.no_grad()
    def forward(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        mask_gt: Tensor,
    ) -> AssignResult:
        """Assign targets to every anchor point.

        Args:
            pred_scores: predicted class probabilities (after sigmoid), (B, A, C).
            pred_boxes: predicted xyxy boxes, (B, A, 4), in the same units as ``anchor_points`` and ``gt_boxes``.
            anchor_points: anchor centres (A, 2) as (x, y).
            gt_labels: gt class ids, (B, M, 1) or (B, M); padded entries may hold any value.
            gt_boxes: gt xyxy boxes, (B, M, 4).
            mask_gt: 1 for real gts and 0 for padding, (B, M, 1) or (B, M).

        Returns:
            ``(target_labels, target_bboxes, target_scores, fg_mask)`` as described in the module docstring.
        """
        batch, num_anchors, _ = pred_scores.shape
        if gt_boxes.shape[1] == 0:
            return _empty_result(batch, num_anchors, self.num_classes, pred_scores)
        gt_labels, mask_gt = _prepare_gts(gt_labels, mask_gt)
        overlaps = box_iou(gt_boxes, pred_boxes).clamp(min=0)  # (B, M, A)
        class_index = gt_labels.long().clamp(0, self.num_classes - 1)[..., None].expand(-1, -1, num_anchors)
        gt_class_scores = pred_scores.permute(0, 2, 1).gather(1, class_index)  # (B, M, A)
        align_metric = gt_class_scores.pow(self.alpha) * overlaps.pow(self.beta)
        in_gts = _points_in_boxes(anchor_points, gt_boxes, self.eps)
        mask_pos = self._select_topk(align_metric * in_gts, num_anchors) & in_gts & mask_gt[..., None]

        target_gt_idx, fg_mask, mask_pos = _resolve_multiple_gts(mask_pos, overlaps)
        labels, boxes, scores = _gather_targets(gt_labels, gt_boxes, target_gt_idx, fg_mask, self.num_classes)

        align_metric = align_metric * mask_pos
        max_metric_per_gt = align_metric.amax(-1, keepdim=True)
        max_iou_per_gt = (overlaps * mask_pos).amax(-1, keepdim=True)
        quality = (align_metric * max_iou_per_gt / (max_metric_per_gt + self.eps)).amax(1)  # (B, A)
        return labels, boxes, scores * quality[..., None], fg_mask

    def _select_topk(self, metric: Tensor, num_anchors: int) -> Tensor:
        """(B, M, A) bool mask of the ``topk`` largest metric entries per gt."""
        topk_indices = metric.topk(min(self.topk, num_anchors), dim=-1).indices
        return torch.zeros_like(metric, dtype=torch.bool).scatter_(-1, topk_indices, True)


class ATSSAssigner(nn.Module):
    """Adaptive Training Sample Selection, used by YOLOv6 for the warm-up epochs.

    For each gt and each pyramid level, the ``topk`` anchors whose centres are closest to the gt centre are
    candidates. Candidates with IoU (anchor box vs gt) above the gt's adaptive threshold ``mean + std`` of the
    candidates' IoUs, and whose centre lies inside the gt, become positives.

    Args:
        topk: candidates per gt per level.
        num_classes: number of classes C; also the background label.

    Example:
        >>> anchor_boxes = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [0, 0, 30, 10]])
        >>> assigner = ATSSAssigner(topk=3, num_classes=2)
        >>> labels, boxes, scores, fg = assigner(
        ...     anchor_boxes, [3, 1], torch.tensor([[[0]]]), torch.tensor([[[0.0, 0, 10, 10]]]), torch.ones(1, 1, 1))
        >>> fg
        tensor([[ True, False, False, False]])
    """

    def __init__(self, topk: int = 9, num_classes: int = 80) -> None:
        super().__init__()
        self.topk = topk
        self.num_classes = num_classes

    @torch.no_grad()
    def forward(
        self,
        anchor_boxes: Tensor,
        num_anchors_per_level: list[int],
        gt_labels: Tensor,
        gt_boxes: Tensor,
        mask_gt: Tensor,
        pred_boxes: Tensor | None = None,
    ) -> AssignResult:
        """Assign targets to every anchor box.

        Args:
            anchor_boxes: xyxy anchor boxes (A, 4), levels concatenated in order.
            num_anchors_per_level: anchors per level; sums to A.
            gt_labels: gt class ids, (B, M, 1) or (B, M).
            gt_boxes: gt xyxy boxes, (B, M, 4).
            mask_gt: 1 for real gts and 0 for padding, (B, M, 1) or (B, M).
            pred_boxes: optional predicted xyxy boxes (B, A, 4); when given, target scores are scaled by the
                IoU between the prediction and its assigned gt (soft labels), otherwise they stay one-hot.

        Returns:
            ``(target_labels, target_bboxes, target_scores, fg_mask)`` as described in the module docstring.

        Raises:
            ValueError: if ``num_anchors_per_level`` does not sum to the number of anchors.
        """
        num_anchors = anchor_boxes.shape[0]
        if sum(num_anchors_per_level) != num_anchors:
            raise ValueError(f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, expected {num_anchors}")
        batch = gt_boxes.shape[0]
        if gt_boxes.shape[1] == 0:
            return _empty_result(batch, num_anchors, self.num_classes, anchor_boxes)
        gt_labels, mask_gt = _prepare_gts(gt_labels, mask_gt)
        overlaps = box_iou(gt_boxes, anchor_boxes)  # (B, M, A)
        gt_centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        anchor_centres = (anchor_boxes[:, :2] + anchor_boxes[:, 2:]) / 2
        distances = (gt_centres[..., None, :] - anchor_centres).norm(dim=-1)  # (B, M, A)

        candidates = self._select_candidates(distances, num_anchors_per_level)
        candidate_ious = overlaps.masked_fill(~candidates, float("nan"))
        mean = candidate_ious.nanmean(-1, keepdim=True)
        count = candidates.sum(-1, keepdim=True)
        variance = ((candidate_ious - mean) ** 2).nansum(-1, keepdim=True) / (count - 1).clamp(min=1)
        threshold = mean + variance.sqrt()
        is_pos = candidates & (overlaps > threshold)
        in_gts = _points_in_boxes(anchor_centres, gt_boxes)
        mask_pos = is_pos & in_gts & mask_gt[..., None]

        target_gt_idx, fg_mask, mask_pos = _resolve_multiple_gts(mask_pos, overlaps)
        labels, boxes, scores = _gather_targets(gt_labels, gt_boxes, target_gt_idx, fg_mask, self.num_classes)
        if pred_boxes is not None:
            pred_ious = (box_iou(gt_boxes, pred_boxes) * mask_pos).amax(1)  # (B, A)
            scores = scores * pred_ious[..., None]
        return labels, boxes, scores, fg_mask

    def _select_candidates(self, distances: Tensor, num_anchors_per_level: list[int]) -> Tensor:
        """(B, M, A) bool: the ``topk`` closest anchors of every level for every gt."""
        masks = []
        for level_distances in distances.split(num_anchors_per_level, dim=-1):
            k = min(self.topk, level_distances.shape[-1])
            indices = level_distances.topk(k, dim=-1, largest=False).indices
            masks.append(torch.zeros_like(level_distances, dtype=torch.bool).scatter_(-1, indices, True))
        return torch.cat(masks, -1)
