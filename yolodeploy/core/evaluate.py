"""COCO evaluation (pure functions): raw model output -> per-image detections -> COCO results JSON -> mAP.

The pipeline every backend shares (so that PyTorch, ONNX Runtime and TensorRT are scored identically):

1. ``postprocess_predictions``: class-aware NMS of the raw ``(B, N, 4 + C)`` output with ``batched_nms``, then
   the kept boxes mapped from letterboxed pixels back to the original image with ``scale_boxes_back``;
2. ``detections_to_coco_json``: contiguous class indices -> COCO category ids, xyxy -> ``[x, y, w, h]``;
3. ``evaluate_coco``: pycocotools' ``COCOeval`` (bbox), its printing silenced, summarized in ``COCOMetrics``.

No dataset loading happens here: the ground truth is a COCO instances JSON (path or already-loaded dict).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import EvaluationError
from .nms import batched_nms
from .preprocess import scale_boxes_back

__all__ = ["COCOMetrics", "Detections", "detections_to_coco_json", "evaluate_coco", "postprocess_predictions"]

BOX_DECIMALS = 2  # pixels: 0.01 px is far below any IoU threshold's sensitivity
SCORE_DECIMALS = 5


@dataclass(frozen=True)
class COCOMetrics:
    """The COCO bbox summary (``COCOeval.stats``): AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@100.

    As in pycocotools, a value is ``-1.0`` when the ground truth has no object of that kind (e.g. no small
    objects). ``note`` explains special cases (e.g. no detections at all).
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar100: float
    note: str = ""

    @classmethod
    def from_stats(cls, stats: Sequence[float], note: str = "") -> COCOMetrics:
        """From pycocotools' 12-element ``COCOeval.stats`` (AR@100 is ``stats[8]``)."""
        s = [float(v) for v in stats]
        return cls(s[0], s[1], s[2], s[3], s[4], s[5], s[8], note)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Detections(NamedTuple):
    """One image's detections in original-image pixels: ``boxes`` (K, 4) xyxy float32, ``scores`` (K,) float32,
    ``labels`` (K,) int64 contiguous class indices, by descending score."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def postprocess_predictions(
    raw: torch.Tensor | np.ndarray,
    conf: float = 0.001,
    iou: float = 0.65,
    max_det: int = 300,
    ratios: Sequence[float] | None = None,
    pads: Sequence[tuple[float, float]] | None = None,
    image_shapes: Sequence[tuple[int, int] | None] | None = None,
) -> list[Detections]:
    """NMS a raw batch output and map each image's boxes back to its original coordinates.

    Args:
        raw: ``(B, N, 4 + C)`` xyxy boxes (letterboxed pixels) followed by per-class scores.
        conf, iou, max_det: the ``batched_nms`` score threshold, IoU threshold and detections per image.
        ratios, pads: per image, what ``letterbox`` returned (``None``: boxes are left in network pixels).
        image_shapes: per image, the original ``(height, width)`` to clip boxes to (``None``: no clipping).

    Returns:
        One ``Detections`` per image.

    Example:
        >>> padded, ratio, pad = letterbox(image, 640)
        >>> dets = postprocess_predictions(model(batch), ratios=[ratio], pads=[pad], image_shapes=[image.shape[:2]])
    """
    raw = torch.as_tensor(raw)
    if raw.ndim != 3 or raw.shape[-1] < 5:
        raise ValueError(f"expected a raw output of shape (B, N, 4 + C), got {tuple(raw.shape)}")
    batch = raw.shape[0]
    if (ratios is None) != (pads is None):
        raise ValueError("give both ratios and pads (what letterbox returned) or neither")
    for name, seq in (("ratios", ratios), ("pads", pads), ("image_shapes", image_shapes)):
        if seq is not None and len(seq) != batch:
            raise ValueError(f"{name} has {len(seq)} entries for a batch of {batch} images")
    raw = raw.detach().float().cpu()
    num_dets, boxes, scores, classes = batched_nms(raw[..., :4], raw[..., 4:], iou=iou, conf=conf, topk=max_det)
    out = []
    for i in range(batch):
        count = int(num_dets[i, 0])
        img_boxes = boxes[i, :count].numpy().astype(np.float32)
        if ratios is not None:
            shape = image_shapes[i] if image_shapes is not None else None
            img_boxes = scale_boxes_back(img_boxes, ratios[i], pads[i], shape)
        elif image_shapes is not None and image_shapes[i] is not None:
            height, width = image_shapes[i]
            img_boxes[:, 0::2] = img_boxes[:, 0::2].clip(0, width)
            img_boxes[:, 1::2] = img_boxes[:, 1::2].clip(0, height)
        out.append(
            Detections(
                img_boxes.reshape(count, 4),
                scores[i, :count].numpy().astype(np.float32),
                classes[i, :count].numpy().astype(np.int64),
            )
        )
    return out


def detections_to_coco_json(
    per_image: Sequence[tuple[int, Any, Any, Any]], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO results entries (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``).

    Args:
        per_image: ``(image_id, boxes, scores, labels)`` per image; boxes ``(K, 4)`` xyxy in original-image
            pixels, labels contiguous class indices (``0 .. len(category_ids) - 1``).
        category_ids: the COCO category id of each contiguous label (e.g. COCO's 80 ids from 1 to 90).

    Raises:
        EvaluationError: a label outside ``category_ids``.
    """
    results = []
    for image_id, boxes, scores, labels in per_image:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels differ"
            )
        bad = labels[(labels < 0) | (labels >= len(category_ids))]
        if bad.size:
            raise EvaluationError(
                f"image {image_id}: label {int(bad[0])} has no category id ({len(category_ids)} categories known)"
            )
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(BOX_DECIMALS)
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[label]),
                    "bbox": [float(v) for v in box],
                    "score": round(float(score), SCORE_DECIMALS),
                }
            )
    return results


def _load_json(source: str | os.PathLike, what: str) -> Any:
    try:
        with open(source) as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvaluationError(f"no such {what} file: {source}") from None
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read {what} {source}: {exc}") from None


def _load_gt(gt: str | os.PathLike | dict) -> Any:
    from pycocotools.coco import COCO

    dataset = gt if isinstance(gt, dict) else _load_json(gt, "ground-truth annotations")
    if not isinstance(dataset, dict) or not all(k in dataset for k in ("images", "annotations", "categories")):
        raise EvaluationError("ground truth is not a COCO instances JSON (needs images, annotations, categories)")
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)  # COCOeval adds fields; the caller's dict stays untouched
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(gt: str | os.PathLike | dict, detections: Sequence[dict] | str | os.PathLike) -> COCOMetrics:
    """COCO bbox mAP of ``detections`` against ``gt`` with pycocotools (its output silenced).

    Args:
        gt: a COCO instances JSON (path or loaded dict).
        detections: COCO results entries (as from ``detections_to_coco_json``) or a path to their JSON.

    Returns:
        ``COCOMetrics`` equal to ``COCOeval.stats`` of pycocotools run on the same files. With no detections
        at all (which pycocotools cannot load), every metric is 0.0 and ``note`` says so.

    Raises:
        EvaluationError: unreadable files, or detections naming an image or category absent from ``gt``.
    """
    from pycocotools.cocoeval import COCOeval

    coco_gt = _load_gt(gt)
    dets = detections if not isinstance(detections, str | os.PathLike) else _load_json(detections, "detections")
    if not isinstance(dets, list):
        raise EvaluationError(f"detections must be a list of COCO result entries, got {type(dets).__name__}")
    if not dets:
        return COCOMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, note="no detections: every metric is 0")
    try:
        image_ids = {d["image_id"] for d in dets}
        category_ids = {d["category_id"] for d in dets}
        if any(len(d["bbox"]) != 4 for d in dets) or any("score" not in d for d in dets):
            raise KeyError("bbox of 4 numbers and score")
    except (KeyError, TypeError) as exc:
        raise EvaluationError(f"detections are not COCO bbox results (need image_id, category_id, {exc})") from None
    unknown_images = image_ids - set(coco_gt.getImgIds())
    if unknown_images:
        raise EvaluationError(f"detections name image ids absent from the ground truth: {sorted(unknown_images)[:5]}")
    unknown_cats = category_ids - set(coco_gt.getCatIds())
    if unknown_cats:
        raise EvaluationError(
            f"detections name category ids absent from the ground truth: {sorted(unknown_cats)[:5]} "
            "(check the contiguous label -> category id mapping)"
        )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(dets)))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return COCOMetrics.from_stats(evaluator.stats)
