"""Dense detection loss and objectives: hand-made predictions, empty targets, ATSS warm-up, YOLOv9 dual weights."""

from __future__ import annotations

import math

import pytest
import torch

from yolodeploy.models import create_model
from yolodeploy.train.loss import DenseDetectionLoss, DensePredictions, LossSpec, decode_distances
from yolodeploy.train.objective import YOLOv9Objective, build_objective, yolov9_predictions
from yolodeploy.train.targets import pad_targets

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SIZES, STRIDES = [(4, 4), (2, 2)], [8, 16]  # a 32x32 input: 16 + 4 anchor points
TARGETS = torch.tensor([[0, 1, 4.0, 4.0, 20.0, 20.0], [1, 0, 16.0, 0.0, 32.0, 16.0]])


def _points_and_strides():
    from yolodeploy.core.boxes import make_anchor_points

    return make_anchor_points(SIZES, STRIDES)


def _perfect_predictions(num_classes: int = 2) -> DensePredictions:
    """Direct-distance predictions that put every anchor inside a gt on that gt's box with score 0.99."""
    points, strides = _points_and_strides()
    scores = torch.full((2, 20, num_classes), 0.01)
    box = torch.ones(2, 20, 4)
    for row in TARGETS:
        image, cls, box_px = int(row[0]), int(row[1]), row[2:]
        centres = points * strides
        inside = (centres[:, 0] > box_px[0]) & (centres[:, 0] < box_px[2])
        inside &= (centres[:, 1] > box_px[1]) & (centres[:, 1] < box_px[3])
        distances = torch.cat((centres - box_px[:2], box_px[2:] - centres), -1) / strides
        box[image, inside] = distances[inside]
        scores[image, inside, cls] = 0.99
    return DensePredictions(scores, box, SIZES, STRIDES)


def test_pad_targets_groups_rows_per_image():
    labels, boxes, mask = pad_targets(TARGETS, batch_size=3)
    assert labels.shape == (3, 1, 1) and boxes.shape == (3, 1, 4)
    assert mask.squeeze(-1).tolist() == [[1.0], [1.0], [0.0]]
    assert boxes[1, 0].tolist() == [16.0, 0.0, 32.0, 16.0] and labels[0, 0, 0] == 1


def test_decode_distances_is_the_softmax_expectation():
    logits = torch.full((1, 1, 4 * 17), -1e4)
    for side, target in enumerate((2, 5, 0, 16)):
        logits[0, 0, side * 17 + target] = 0.0
    assert decode_distances(logits, 17).tolist() == [[[2.0, 5.0, 0.0, 16.0]]]
    direct = torch.rand(1, 3, 4)
    assert decode_distances(direct, 0) is direct


def test_perfect_prediction_beats_random():
    loss = DenseDetectionLoss(2, LossSpec(dfl_bins=0))
    perfect = loss(_perfect_predictions(), TARGETS)
    torch.manual_seed(0)
    random = loss(DensePredictions(torch.rand(2, 20, 2), torch.rand(2, 20, 4) * 2, SIZES, STRIDES), TARGETS)
    assert perfect.parts["iou"] < 1e-4
    assert perfect.total < random.total and perfect.parts["cls"] < random.parts["cls"]
    assert int(perfect.fg_mask.sum()) > 0


def test_empty_targets_give_only_negative_classification():
    loss = DenseDetectionLoss(2, LossSpec(dfl_bins=0))
    scores = torch.full((2, 20, 2), 0.5, requires_grad=True)
    out = loss(DensePredictions(scores, torch.ones(2, 20, 4), SIZES, STRIDES), TARGETS[:0])
    # VFL on negatives: 0.75 * p^2 * BCE(p, 0) summed, normalized by max(sum of targets, 1) = 1
    assert out.total.item() == pytest.approx(80 * 0.75 * 0.25 * math.log(2), rel=1e-5)
    assert out.parts["iou"] == 0 and out.parts["dfl"] == 0
    out.total.backward()
    assert scores.grad.abs().sum() > 0


def test_atss_warmup_assigns_during_warmup_epochs_only():
    loss = DenseDetectionLoss(2, LossSpec(dfl_bins=0, warmup_epochs=1, grid_cell_size=2.0))  # 16-px anchor boxes
    pred = _perfect_predictions()
    warm, formal = loss(pred, TARGETS, epoch=0), loss(pred, TARGETS, epoch=1)
    assert warm.fg_mask.any() and formal.fg_mask.any()
    assert not torch.equal(warm.fg_mask, formal.fg_mask) or warm.total != formal.total


def test_yolov6_dfl_objective_trains_every_head_branch():
    model = create_model("yolov6m", num_classes=3).train()  # use_dfl: 17-bin distributions
    objective = build_objective(model)
    assert objective.loss.spec.dfl_bins == 17
    out = objective(model(torch.rand(2, 3, 64, 64)), torch.tensor([[0, 2, 8.0, 8, 40, 48], [1, 0, 0, 0, 30, 20]]))
    out.total.backward()
    assert out.parts["dfl"] > 0 and out.parts["iou"] > 0
    assert model.detect.reg_preds[0].weight.grad.abs().sum() > 0


def test_yolov9_dual_head_weights_the_auxiliary_branch():
    model = create_model("yolov9_t", num_classes=2).train()
    objective = build_objective(model)
    assert isinstance(objective, YOLOv9Objective) and objective.loss.spec.dfl_bins == 16
    output = model(torch.rand(1, 3, 64, 64))
    total = objective(output, TARGETS[:1] * torch.tensor([1, 1, 2, 2, 2, 2.0])).total
    targets = TARGETS[:1] * torch.tensor([1, 1, 2, 2, 2, 2.0])
    aux, main = (objective.loss(yolov9_predictions(levels, model.head), targets).total for levels in output)
    assert total.item() == pytest.approx((0.25 * aux + main).item(), rel=1e-6)
