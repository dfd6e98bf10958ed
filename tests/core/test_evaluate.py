"""COCO evaluation: our metrics equal pycocotools' own on fixed JSON files, perfect/shifted/empty predictions,
category id mapping, and NMS + letterbox mapping back to original pixels on hand-computed boxes."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from yolodeploy.core.evaluate import (
    COCOMetrics,
    detections_to_coco_json,
    evaluate_coco,
    postprocess_predictions,
)
from yolodeploy.core.preprocess import letterbox
from yolodeploy.errors import EvaluationError, YoloDeployError

CATEGORY_IDS = [3, 7, 12]  # contiguous label 0, 1, 2 -> non-contiguous COCO ids

# (image_id, category_id, [x, y, w, h]); areas: small < 32^2 <= medium < 96^2 <= large
GT_BOXES = [
    (1, 3, [10, 10, 20, 20]),  # small (400)
    (1, 7, [50, 60, 60, 50]),  # medium (3000)
    (1, 12, [200, 100, 150, 200]),  # large (30000)
    (2, 3, [30, 40, 100, 120]),  # large (12000)
    (2, 3, [300, 300, 25, 30]),  # small (750)
    (2, 12, [150, 20, 70, 80]),  # medium (5600)
    (3, 7, [5, 5, 300, 200]),  # large (60000)
    (3, 7, [400, 50, 40, 40]),  # medium (1600)
]

# a fixed set of predictions: good, jittered, duplicated, wrong-class and false-positive boxes, a missed object
FIXED_PREDICTIONS = [
    {"image_id": 1, "category_id": 3, "bbox": [11.0, 10.5, 19.0, 21.0], "score": 0.91},
    {"image_id": 1, "category_id": 7, "bbox": [52.0, 58.0, 60.0, 55.0], "score": 0.85},
    {"image_id": 1, "category_id": 7, "bbox": [55.0, 65.0, 50.0, 40.0], "score": 0.40},
    {"image_id": 1, "category_id": 12, "bbox": [190.0, 110.0, 160.0, 180.0], "score": 0.77},
    {"image_id": 1, "category_id": 3, "bbox": [400.0, 400.0, 30.0, 30.0], "score": 0.65},
    {"image_id": 2, "category_id": 3, "bbox": [30.0, 40.0, 100.0, 120.0], "score": 0.95},
    {"image_id": 2, "category_id": 12, "bbox": [160.0, 30.0, 70.0, 80.0], "score": 0.55},
    {"image_id": 2, "category_id": 7, "bbox": [150.0, 20.0, 70.0, 80.0], "score": 0.60},
    {"image_id": 3, "category_id": 7, "bbox": [10.0, 0.0, 290.0, 210.0], "score": 0.88},
    {"image_id": 3, "category_id": 7, "bbox": [402.0, 52.0, 38.0, 39.0], "score": 0.30},
    {"image_id": 3, "category_id": 12, "bbox": [100.0, 300.0, 50.0, 60.0], "score": 0.20},
]


def make_gt() -> dict:
    return {
        "info": {"description": "hand-made test set"},
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "b.jpg", "width": 500, "height": 400},
            {"id": 3, "file_name": "c.jpg", "width": 480, "height": 360},
        ],
        "categories": [{"id": cid, "name": f"cat{cid}"} for cid in CATEGORY_IDS],
        "annotations": [
            {"id": i + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            for i, (img, cat, box) in enumerate(GT_BOXES)
        ],
    }


def perfect_per_image() -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """The ground truth as (image_id, xyxy boxes, scores, contiguous labels)."""
    per_image = []
    for image_id in (1, 2, 3):
        rows = [(box, CATEGORY_IDS.index(cat)) for img, cat, box in GT_BOXES if img == image_id]
        boxes = np.array([[x, y, x + w, y + h] for (x, y, w, h), _ in rows], dtype=np.float32)
        labels = np.array([label for _, label in rows])
        per_image.append((image_id, boxes, np.full(len(rows), 0.9, np.float32), labels))
    return per_image


def pycocotools_stats(gt_path, dt_path) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dt_path))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_matches_pycocotools_on_the_same_json(tmp_path, capsys):
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(make_gt()))
    dt_path.write_text(json.dumps(FIXED_PREDICTIONS))
    reference = pycocotools_stats(gt_path, dt_path)
    for gt, dets in ((gt_path, dt_path), (make_gt(), FIXED_PREDICTIONS)):  # paths and in-memory objects
        metrics = evaluate_coco(gt, dets)
        got = [metrics.ap, metrics.ap50, metrics.ap75, metrics.ap_small, metrics.ap_medium, metrics.ap_large]
        assert got == [float(v) for v in reference[:6]]
        assert metrics.ar100 == float(reference[8])
        assert metrics.note == ""
    assert 0.0 < metrics.ap < 1.0 and metrics.ap50 > metrics.ap
    assert capsys.readouterr().out == ""  # pycocotools' printing is silenced


def test_does_not_mutate_inputs():
    gt, dets = make_gt(), json.loads(json.dumps(FIXED_PREDICTIONS))
    evaluate_coco(gt, dets)
    assert gt == make_gt() and dets == FIXED_PREDICTIONS


def test_perfect_predictions_give_ap_one():
    metrics = evaluate_coco(make_gt(), detections_to_coco_json(perfect_per_image(), CATEGORY_IDS))
    values = metrics.to_dict()
    assert values.pop("note") == ""
    # pycocotools averages over classes and IoU thresholds in float64: 1.0 up to rounding (e.g. 0.9999999999999999)
    assert values == pytest.approx(dict.fromkeys(values, 1.0), abs=1e-12)


def test_shifted_boxes_lower_ap():
    perfect = evaluate_coco(make_gt(), detections_to_coco_json(perfect_per_image(), CATEGORY_IDS))
    aps = [perfect.ap]
    for shift in (3.0, 6.0):
        shifted = [(i, b + np.float32(shift), s, lab) for i, b, s, lab in perfect_per_image()]
        aps.append(evaluate_coco(make_gt(), detections_to_coco_json(shifted, CATEGORY_IDS)).ap)
    assert aps[0] > aps[1] > aps[2]


def test_category_id_mapping_round_trips():
    per_image = perfect_per_image()
    results = detections_to_coco_json(per_image, CATEGORY_IDS)
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in results] == [
        (img, cat, [float(v) for v in box]) for img, cat, box in GT_BOXES
    ]
    assert all(r["score"] == 0.9 for r in results)
    # back to contiguous labels through the inverse mapping
    inverse = {cid: label for label, cid in enumerate(CATEGORY_IDS)}
    assert [inverse[r["category_id"]] for r in results] == [lab for *_, labels in per_image for lab in labels]
    json.dumps(results)  # plain Python types only


def test_coco_json_rounding_and_label_errors():
    boxes = np.array([[1.23456, 2.0, 11.0, 22.987654]], dtype=np.float32)
    (entry,) = detections_to_coco_json([(5, boxes, [0.123456789], [1])], CATEGORY_IDS)
    assert entry == {"image_id": 5, "category_id": 7, "bbox": [1.23, 2.0, 9.77, 20.99], "score": 0.12346}
    with pytest.raises(EvaluationError, match="label 3 has no category id"):
        detections_to_coco_json([(5, boxes, [0.5], [3])], CATEGORY_IDS)
    assert detections_to_coco_json([(5, np.zeros((0, 4)), [], [])], CATEGORY_IDS) == []


def test_empty_detections_give_zeros(tmp_path):
    for dets in ([], detections_to_coco_json([(1, np.zeros((0, 4)), [], [])], CATEGORY_IDS)):
        metrics = evaluate_coco(make_gt(), dets)
        assert isinstance(metrics, COCOMetrics)
        assert [v for k, v in metrics.to_dict().items() if k != "note"] == [0.0] * 7
        assert "no detections" in metrics.note
    path = tmp_path / "empty.json"
    path.write_text("[]")
    assert evaluate_coco(make_gt(), path).ap == 0.0


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(EvaluationError, match="image ids absent"):
        evaluate_coco(make_gt(), [{**FIXED_PREDICTIONS[0], "image_id": 99}])
    with pytest.raises(EvaluationError, match="category ids absent"):
        evaluate_coco(make_gt(), [{**FIXED_PREDICTIONS[0], "category_id": 1}])
    with pytest.raises(EvaluationError, match="no such ground-truth"):
        evaluate_coco(tmp_path / "missing.json", FIXED_PREDICTIONS)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(YoloDeployError, match="cannot read detections"):
        evaluate_coco(make_gt(), tmp_path / "bad.json")
    with pytest.raises(EvaluationError, match="not a COCO instances JSON"):
        evaluate_coco({"images": []}, FIXED_PREDICTIONS)


def test_postprocess_maps_letterboxed_boxes_back_to_original_pixels():
    # image A: 320x160 (h, w) into 640 -> ratio 2, resized 320 wide, 320 columns of padding split 160/160
    # image B: 160x320 (h, w) into 640 -> ratio 2, resized 320 high, pad (0, 160)
    geometry = [letterbox(np.zeros(hw + (3,), np.uint8), 640)[1:] for hw in ((320, 160), (160, 320))]
    assert geometry == [(2.0, (160.0, 0.0)), (2.0, (0.0, 160.0))]
    ratios, pads = [g[0] for g in geometry], [g[1] for g in geometry]
    num_classes = 3
    raw = torch.zeros(2, 4, 4 + num_classes)
    # A: original box [10, 20, 50, 100] -> letterboxed [180, 40, 260, 200], class 2, score 0.9
    raw[0, 0, :4] = torch.tensor([180.0, 40.0, 260.0, 200.0])
    raw[0, 0, 4 + 2] = 0.9
    # A: a near-duplicate of it (IoU > 0.65) with a lower score: suppressed
    raw[0, 1, :4] = torch.tensor([182.0, 42.0, 262.0, 202.0])
    raw[0, 1, 4 + 2] = 0.8
    # A: a box crossing the padding -> clipped to the original width 160: [140, 10, 170, 50] -> [140, 10, 160, 50]
    raw[0, 2, :4] = torch.tensor([440.0, 20.0, 500.0, 100.0])
    raw[0, 2, 4 + 0] = 0.5
    # A: below the confidence threshold: dropped
    raw[0, 3, :4] = torch.tensor([300.0, 300.0, 340.0, 340.0])
    raw[0, 3, 4 + 1] = 0.05
    # B: original box [10, 20, 50, 100] -> letterboxed [20, 200, 100, 360], class 1
    raw[1, 0, :4] = torch.tensor([20.0, 200.0, 100.0, 360.0])
    raw[1, 0, 4 + 1] = 0.7

    dets = postprocess_predictions(
        raw, conf=0.1, iou=0.65, max_det=10, ratios=ratios, pads=pads, image_shapes=[(320, 160), (160, 320)]
    )
    assert len(dets) == 2
    np.testing.assert_allclose(dets[0].boxes, [[10, 20, 50, 100], [140, 10, 160, 50]])
    np.testing.assert_allclose(dets[0].scores, [0.9, 0.5])
    assert dets[0].labels.tolist() == [2, 0] and dets[0].labels.dtype == np.int64
    np.testing.assert_allclose(dets[1].boxes, [[10, 20, 50, 100]])
    assert dets[1].labels.tolist() == [1]

    # without letterbox info the boxes stay in network pixels; max_det caps the count
    (raw_dets,) = postprocess_predictions(raw[:1], conf=0.1, iou=0.65, max_det=1)
    np.testing.assert_allclose(raw_dets.boxes, [[180, 40, 260, 200]])

    # straight into COCO JSON with the original-pixel boxes
    results = detections_to_coco_json([(7, *dets[1])], CATEGORY_IDS)
    assert results == [{"image_id": 7, "category_id": 7, "bbox": [10.0, 20.0, 40.0, 80.0], "score": 0.7}]


def test_postprocess_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, N, 4 \+ C\)"):
        postprocess_predictions(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="ratios has 1 entries"):
        postprocess_predictions(torch.zeros(2, 3, 6), ratios=[1.0], pads=[(0, 0)])
    with pytest.raises(ValueError, match="both ratios and pads"):
        postprocess_predictions(torch.zeros(1, 3, 6), ratios=[1.0])
    assert [len(d.boxes) for d in postprocess_predictions(np.zeros((2, 3, 6), np.float32))] == [0, 0]
