"""Self-distillation (YOLOv6 §2.4.2) and feature distillation losses."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from yolodeploy.models import create_model
from yolodeploy.train.distill import (
    SelfDistillationLoss,
    channel_wise_distillation,
    distillation_weight,
    mse_feature_distillation,
    teacher_forward,
)
from yolodeploy.train.objective import build_objective

TARGETS = torch.tensor([[0.0, 0, 8, 8, 40, 40], [0.0, 2, 30, 10, 60, 50]])


def _dfl_model(head: str = "default", width: float | None = None):
    torch.manual_seed(0)
    overrides = {"width_multiple": width} if width else {}
    model = create_model("yolov6n", num_classes=3, head=head, use_dfl=True, reg_max=16, **overrides)
    with torch.no_grad():  # the official init zeroes the prediction convs; give them some signal
        for name in ("cls_preds", "reg_preds", "reg_preds_dist"):
            for conv in getattr(model.head, name, ()):
                conv.weight.normal_(0, 0.05)
    return model


def _image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _student_like_teacher(model):
    """The student's forward with the teacher's BatchNorm behaviour, keeping the graph."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return model(_image())


def test_teacher_forward_is_train_form_and_leaves_the_teacher_unchanged():
    teacher = _dfl_model().eval()
    stats = {k: v.clone() for k, v in teacher.state_dict().items()}
    head_outputs, features = teacher_forward(teacher, _image())
    assert len(head_outputs) == 3 and head_outputs[2].shape == (1, 84, 68)
    assert len(features) == 3
    assert not head_outputs[1].requires_grad
    assert not teacher.training  # modes restored
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, stats[key], rtol=0, atol=0, msg=key)


def test_distillation_is_zero_for_the_same_model():
    student = _dfl_model()
    teacher = copy.deepcopy(student)
    loss = SelfDistillationLoss(num_classes=3)
    total, parts = loss(_student_like_teacher(student), teacher_forward(teacher, _image()), 0, 10)
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert parts["distill_cls"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["distill_dfl"].item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_gradient_reaches_only_the_student():
    student = _dfl_model()
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        student.head.reg_preds[0].weight[0, 0] += 0.5
        student.head.cls_preds[0].weight[0, 0] += 0.5
    loss = SelfDistillationLoss(num_classes=3)
    total, parts = loss(_student_like_teacher(student), teacher_forward(teacher, _image()), 0, 10)
    assert parts["distill_cls"] > 0 and parts["distill_dfl"] > 0 and total > 0
    total.backward()
    assert student.head.reg_preds[0].weight.grad.abs().sum() > 0
    assert student.head.cls_preds[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_weighting_follows_the_official_formula():
    student, teacher = _dfl_model(), _dfl_model()
    with torch.no_grad():
        for conv in teacher.head.reg_preds:
            conv.weight.normal_(0, 0.1)
    student_output, teacher_output = _student_like_teacher(student), teacher_forward(teacher, _image())
    loss = SelfDistillationLoss(num_classes=3, class_weight=0.8, dfl_weight=1.0)
    total, parts = loss(student_output, teacher_output, 5, 10)
    expected = 0.505 * (1.0 * 0.8 * parts["distill_cls"] + 0.5 * 1.0 * parts["distill_dfl"])
    torch.testing.assert_close(total.detach(), expected)
    # the class term by hand: T**2 * sum KL(softmax(t / T) || softmax(s / T)) over every anchor
    s, t = student_output[0][1].detach(), teacher_output[0][1]
    p_s, p_t = (s / 20).softmax(-1), (t / 20).softmax(-1)
    torch.testing.assert_close(parts["distill_cls"], (p_t * (p_t.log() - p_s.log())).sum() * 400)


def test_foreground_mask_selects_the_box_term():
    student, teacher = _dfl_model(), _dfl_model(width=0.5)  # a wider teacher: only head shapes must match
    student_output = _student_like_teacher(student)
    teacher_output = teacher_forward(teacher, _image())
    loss = SelfDistillationLoss(num_classes=3)
    empty = torch.zeros(1, 84, dtype=torch.bool)
    _, parts = loss(student_output, teacher_output, 0, 10, fg_mask=empty)
    assert parts["distill_dfl"] == 0
    fg = build_objective(student)(student_output, TARGETS).fg_mask
    _, fg_parts = loss(student_output, teacher_output, 0, 10, fg_mask=fg)
    assert fg.any() and fg_parts["distill_dfl"] > 0


def test_distill_ns_student_with_fuse_ab_teacher():
    """The official teacher of N/S is built with the fuse_ab head; the anchor-free outputs are distilled."""
    student, teacher = _dfl_model("distill_ns"), _dfl_model("fuse_ab")
    student_output = student(_image())
    result = build_objective(student)(student_output, TARGETS)
    total, parts = SelfDistillationLoss(num_classes=3)(
        student_output, teacher_forward(teacher, _image()), 0, 10, result.fg_mask
    )
    (result.total + total).backward()
    assert student.head.reg_preds_dist[0].weight.grad.abs().sum() > 0
    assert torch.isfinite(total)


def test_mismatched_outputs_raise():
    student = _dfl_model()
    loss = SelfDistillationLoss(num_classes=3)
    torch.manual_seed(0)
    no_dfl = create_model("yolov6n", num_classes=3)
    with pytest.raises(ValueError, match="DFL"):
        loss(_student_like_teacher(student), teacher_forward(no_dfl, _image()), 0, 10)
    other_classes = create_model("yolov6n", num_classes=5, use_dfl=True, reg_max=16)
    with pytest.raises(ValueError, match="class scores"):
        loss(_student_like_teacher(student), teacher_forward(other_classes, _image()), 0, 10)


def test_distillation_weight_schedule():
    assert distillation_weight(0, 100) == pytest.approx(1.0)
    assert distillation_weight(50, 100) == pytest.approx(1 - 0.99 / 2)
    assert distillation_weight(100, 100) == pytest.approx(0.01)
    assert distillation_weight(25, 100) == pytest.approx(1 - 0.99 * (1 - math.cos(math.pi / 4)) / 2)
    with pytest.raises(ValueError):
        distillation_weight(0, 0)


def test_channel_wise_distillation_values():
    maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    assert channel_wise_distillation(maps, [m.clone() for m in maps]).item() == pytest.approx(0.0, abs=1e-6)
    student = [torch.zeros(1, 1, 2, 1)]  # uniform (1/2, 1/2)
    teacher = [torch.tensor([0.0, math.log(3.0)]).view(1, 1, 2, 1)]  # (1/4, 3/4)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert channel_wise_distillation(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    # tau: softmax(x / 2) of (0, 2 ln 3) is again (1/4, 3/4), scaled by tau**2
    teacher_2 = [teacher[0] * 2]
    assert channel_wise_distillation(student, teacher_2, tau=2.0).item() == pytest.approx(4 * expected, rel=1e-5)
    other = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 5, 2, 2, requires_grad=True)]
    loss = channel_wise_distillation(other, maps)
    assert loss > 0
    loss.backward()
    assert other[0].grad is not None


def test_feature_losses_check_shapes():
    for function in (channel_wise_distillation, mse_feature_distillation):
        with pytest.raises(ValueError, match="differ"):
            function([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 3, 4, 4)])
        with pytest.raises(ValueError, match="matching"):
            function([torch.zeros(1, 2, 4, 4)], [])


def test_mse_feature_distillation_values():
    maps = [torch.randn(1, 2, 3, 3), torch.randn(1, 2, 2, 2)]
    assert mse_feature_distillation(maps, maps).item() == 0.0
    value = mse_feature_distillation(
        [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)], [torch.ones(1, 1, 2, 2), torch.full((1, 1, 1, 1), 2.0)]
    )
    assert value.item() == pytest.approx(1.0 + 4.0)
