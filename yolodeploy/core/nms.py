"""Reference non-maximum suppression in pure torch (no torchvision): the oracle the exported NMS tails are
tested against, and the CPU post-processing of raw-output models.

Semantics (the same as ONNX ``NonMaxSuppression`` in ONNX Runtime and TensorRT's ``EfficientNMS_TRT``):

* class-aware: boxes of different classes never suppress each other; one box may be kept for several classes;
* a candidate is a (box, class) pair whose score is strictly greater than ``conf``;
* within a class, greedy by descending score (ties: lower box index first); a box is suppressed when its IoU
  with a kept box is strictly greater than ``iou``; at most ``topk`` boxes per class;
* per image, the ``topk`` highest-scoring survivors over all classes, padded with zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..utils.threads import torch_threads

__all__ = ["batched_nms", "box_iou"]


def box_iou(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU of one box (4,) with boxes (M, 4), corners in any order (normalized with min/max as ONNX Runtime
    does). Degenerate boxes (zero area) have IoU 0 with everything."""
    box = torch.cat((torch.minimum(box[:2], box[2:]), torch.maximum(box[:2], box[2:])))
    boxes = torch.cat((torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])), 1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    size = (torch.minimum(box[2:], boxes[:, 2:]) - torch.maximum(box[:2], boxes[:, :2])).clamp_min(0)
    inter = size[:, 0] * size[:, 1]
    iou = inter / (area + areas - inter)
    return torch.where((area > 0) & (areas > 0) & (inter > 0), iou, torch.zeros_like(iou))


def _nms_image(boxes: Tensor, scores: Tensor, iou: float, conf: float, topk: int) -> tuple[Tensor, Tensor]:
    """(box indices, class indices) of one image's detections, by descending score.

    Greedy over all (box, class) candidates in global score order: the best remaining candidate is kept and
    the remaining candidates of its class that overlap it by more than ``iou`` are dropped. That is exactly
    per-class greedy NMS (a candidate is only ever suppressed by higher-scoring boxes of its own class), and it
    stops after ``topk`` detections instead of running NMS to the end in every class.
    """
    box_idx, cls_idx = torch.nonzero(scores > conf, as_tuple=True)  # row-major: ties keep the lower box index
    order = torch.sort(scores[box_idx, cls_idx], descending=True, stable=True).indices
    box_idx, cls_idx = box_idx[order], cls_idx[order]
    kept_box, kept_cls = [], []
    while box_idx.numel() and len(kept_box) < topk:
        best_box, best_cls = box_idx[0], cls_idx[0]
        kept_box.append(best_box)
        kept_cls.append(best_cls)
        box_idx, cls_idx = box_idx[1:], cls_idx[1:]
        same = torch.nonzero(cls_idx == best_cls).flatten()
        if same.numel():
            overlapping = same[box_iou(boxes[best_box], boxes[box_idx[same]]) > iou]
            alive = torch.ones_like(box_idx, dtype=torch.bool)
            alive[overlapping] = False
            box_idx, cls_idx = box_idx[alive], cls_idx[alive]
    empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
    return (torch.stack(kept_box), torch.stack(kept_cls)) if kept_box else (empty, empty)


def batched_nms(
    boxes: Tensor, scores: Tensor, iou: float = 0.65, conf: float = 0.001, topk: int = 100
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class-aware NMS of a batch, returned as the four fixed-size tensors of the exported NMS models.

    Args:
        boxes: (B, N, 4) xyxy boxes (the first 4 columns of a raw model output).
        scores: (B, N, C) per-class scores (the remaining columns).
        iou: IoU threshold (suppress above it).
        conf: score threshold (keep above it).
        topk: detections kept per image (and per class).

    Returns:
        ``num_dets`` (B, 1) int32, ``boxes`` (B, topk, 4), ``scores`` (B, topk) (both in the input dtype),
        ``classes`` (B, topk) int32; rows beyond ``num_dets`` are zero.

    Example:
        >>> raw = model(images)  # (B, N, 4 + C)
        >>> num_dets, det_boxes, det_scores, det_classes = batched_nms(raw[..., :4], raw[..., 4:])
    """
    if boxes.ndim != 3 or scores.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[:2] != scores.shape[:2]:
        raise ValueError(
            f"expected boxes (B, N, 4) and scores (B, N, C), got {tuple(boxes.shape)} and {tuple(scores.shape)}"
        )
    batch, device = boxes.shape[0], boxes.device
    num_dets = torch.zeros(batch, 1, dtype=torch.int32, device=device)
    det_boxes = torch.zeros(batch, topk, 4, dtype=boxes.dtype, device=device)
    det_scores = torch.zeros(batch, topk, dtype=scores.dtype, device=device)
    det_classes = torch.zeros(batch, topk, dtype=torch.int32, device=device)
    with torch_threads(1 if device.type == "cpu" else None):  # a loop of tiny ops: see utils.threads
        kept = [_nms_image(boxes[image], scores[image], iou, conf, topk) for image in range(batch)]
    for image, (box_idx, cls_idx) in enumerate(kept):
        count = box_idx.numel()
        num_dets[image, 0] = count
        det_boxes[image, :count] = boxes[image, box_idx]
        det_scores[image, :count] = scores[image, box_idx, cls_idx]
        det_classes[image, :count] = cls_idx.to(torch.int32)
    return num_dets, det_boxes, det_scores, det_classes
