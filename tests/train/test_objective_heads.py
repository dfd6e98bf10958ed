"""The fuse_ab and distill_ns training objectives (official loss_fuseab.py / loss_distill_ns.py rules)."""

from __future__ import annotations

import pytest
import torch

from yolodeploy.core.boxes import make_anchor_points
from yolodeploy.core.losses import bbox_to_distance
from yolodeploy.models import create_model
from yolodeploy.train.loss import DensePredictions
from yolodeploy.train.objective import build_objective
from yolodeploy.train.objective_heads import AnchorBasedLoss, DistillNSObjective, FuseABObjective

TARGETS = torch.tensor([[0.0, 0, 8, 8, 40, 40], [0.0, 2, 30, 10, 60, 50]])
EMPTY = torch.zeros((0, 6))


def _model(head: str):
    torch.manual_seed(0)
    return create_model("yolov6n", num_classes=3, head=head).train()


def _image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _weight_grad(modules) -> float:
    return sum(float(conv.weight.grad.abs().sum()) for conv in modules if conv.weight.grad is not None)


@pytest.mark.parametrize(("head", "cls"), [("fuse_ab", FuseABObjective), ("distill_ns", DistillNSObjective)])
def test_build_objective_picks_the_head_variant(head, cls):
    assert isinstance(build_objective(_model(head)), cls)


def test_fuse_ab_loss_trains_both_branches():
    model = _model("fuse_ab")
    result = build_objective(model)(model(_image()), TARGETS)
    assert torch.isfinite(result.total) and result.total > 0
    assert {"cls", "iou", "dfl", "cls_ab", "iou_ab"} <= set(result.parts)
    assert result.parts["iou_ab"] > 0 and result.parts["iou"] > 0
    assert result.fg_mask.shape == (1, 84)  # the anchor-free branch's anchors
    result.total.backward()
    head = model.head
    for name in ("cls_preds_ab", "reg_preds_ab", "cls_preds", "reg_preds"):
        assert _weight_grad(getattr(head, name)) > 0, name


def test_fuse_ab_total_is_the_sum_of_the_branches():
    model = _model("fuse_ab")
    output = model(_image())
    objective = build_objective(model)
    combined = objective(output, TARGETS)
    stems, scores_ab, boxes_ab, scores, box = output[0]
    sizes = [tuple(s.shape[-2:]) for s in stems]
    free = objective.anchor_free(DensePredictions(scores, box, sizes, [8, 16, 32]), TARGETS)
    based = objective.anchor_based(scores_ab, boxes_ab, sizes, [8, 16, 32], TARGETS)
    torch.testing.assert_close(combined.total, free.total + based.total)
    torch.testing.assert_close(combined.parts["cls_ab"], based.parts["cls"])


def test_anchor_based_loss_prefers_a_matching_prediction():
    loss = AnchorBasedLoss(num_classes=2, num_anchors=1)
    sizes, strides = [(4, 4)], [8]
    gt = torch.tensor([[0.0, 1, 4, 4, 20, 28]])  # pixels
    points, _ = loss.anchor_points(sizes, strides)
    centre = torch.tensor([12.0, 16.0]) / 8
    size = torch.tensor([16.0, 24.0]) / 8
    perfect_boxes = torch.cat((centre - points, size.expand(16, 2)), -1)[None]
    perfect_scores = torch.full((1, 16, 2), 0.01)
    perfect_scores[..., 1] = 0.95
    generator = torch.Generator().manual_seed(0)
    random_boxes = torch.cat(
        (torch.randn(1, 16, 2, generator=generator), torch.rand(1, 16, 2, generator=generator) * 4), -1
    )
    random_scores = torch.rand(1, 16, 2, generator=generator)
    good = loss(perfect_scores, perfect_boxes, sizes, strides, gt)
    bad = loss(random_scores, random_boxes, sizes, strides, gt)
    assert good.parts["iou"] < 1e-4
    assert good.total < bad.total


def test_distill_ns_loss_trains_both_box_branches():
    model = _model("distill_ns")
    result = build_objective(model)(model(_image()), TARGETS)
    assert torch.isfinite(result.total) and result.total > 0
    assert result.parts["dfl"] > 0
    result.total.backward()
    head = model.head
    for name in ("cls_preds", "reg_preds", "reg_preds_dist"):
        assert _weight_grad(getattr(head, name)) > 0, name


def test_distill_ns_iou_covers_both_box_outputs():
    model = _model("distill_ns")
    objective = build_objective(model)
    stems, scores, distribution, distances = model(_image())[0]
    sizes = [tuple(s.shape[-2:]) for s in stems]
    points, strides = make_anchor_points(sizes, [8, 16, 32])
    gt = TARGETS[:1]
    exact = bbox_to_distance(points, gt[:, 2:6] / strides, 16)  # (A, 4) l, t, r, b of the one gt, grid units
    left = exact.floor()
    logits = torch.full((1, exact.shape[0], 4, 17), -30.0)
    logits.scatter_(-1, left.long()[None, ..., None], (left + 1 - exact).clamp(min=1e-6).log()[None, ..., None])
    logits.scatter_(-1, left.long()[None, ..., None] + 1, (exact - left).clamp(min=1e-6).log()[None, ..., None])
    scores = torch.full_like(scores, 0.01)
    scores[..., 0] = 0.9
    perfect = objective(((stems, scores, logits.flatten(2), exact[None]), None), gt)
    assert perfect.parts["iou"] < 1e-3  # both the DFL-decoded and the direct boxes are exact
    half_wrong = objective(((stems, scores, logits.flatten(2), exact[None] * 0.5), None), gt)
    assert half_wrong.parts["iou"] > perfect.parts["iou"] + 0.1
    assert half_wrong.parts["dfl"] == pytest.approx(perfect.parts["dfl"])


@pytest.mark.parametrize("head", ["fuse_ab", "distill_ns"])
def test_empty_targets(head):
    model = _model(head)
    result = build_objective(model)(model(_image()), EMPTY)
    assert torch.isfinite(result.total) and result.total > 0  # negatives still train the class scores
    assert not result.fg_mask.any()
    assert result.parts["iou"] == 0
    result.total.backward()


def test_wrong_head_and_unknown_option_raise():
    with pytest.raises(ValueError, match="fuse_ab"):
        FuseABObjective(_model("distill_ns"))
    with pytest.raises(ValueError, match="distill_ns"):
        DistillNSObjective(_model("fuse_ab"))
    with pytest.raises(ValueError, match="unknown loss option"):
        build_objective(_model("fuse_ab"), not_an_option=1)
