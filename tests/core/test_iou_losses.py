"""IoU variants on known boxes; every expected value is derived by hand in the comments."""

import math

import pytest
import torch

from yolodeploy.core.losses import IoUKind, Reduction, bbox_iou, box_iou, iou_loss


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _check(box_a, box_b, expected):
    for kind, value in expected.items():
        got = bbox_iou(_t(*box_a), _t(*box_b), kind)
        assert got.item() == pytest.approx(value, abs=1e-5), kind


@pytest.mark.parametrize("kind", list(IoUKind))
def test_identical_boxes_give_one(kind):
    box = _t(1.0, 2.0, 5.0, 4.0)
    assert bbox_iou(box, box, kind).item() == pytest.approx(1.0, abs=1e-6)
    assert iou_loss(box[None], box[None], kind).abs().max().item() < 1e-6


def test_diagonal_offset():
    # A=[0,0,2,2], B=[1,1,3,3]: inter 1, union 4+4-1=7 -> IoU 1/7.
    # Enclosure 3x3=9 -> GIoU = 1/7 - (9-7)/9 = -5/63.
    # Centres (1,1),(2,2): rho^2 = 2; enclosure diagonal^2 = 18 -> DIoU = 1/7 - 1/9 = 2/63.
    # Same aspect ratio -> v = 0 -> CIoU = DIoU.
    # SIoU: dx=dy=1 -> alpha=45deg -> angle cost cos(0)=1, gamma=-1; rho_x=rho_y=(1/3)^2
    #   distance cost 2-2exp(-1/9); same size -> shape cost 0 -> SIoU = 1/7 - (1 - exp(-1/9)).
    _check(
        (0, 0, 2, 2),
        (1, 1, 3, 3),
        {
            IoUKind.IOU: 1 / 7,
            IoUKind.GIOU: -5 / 63,
            IoUKind.DIOU: 2 / 63,
            IoUKind.CIOU: 2 / 63,
            IoUKind.SIOU: 1 / 7 - (1 - math.exp(-1 / 9)),
        },
    )


def test_disjoint_boxes():
    # A=[0,0,1,1], B=[2,0,3,1]: IoU 0; enclosure 3x1=3, union 2 -> GIoU = -1/3.
    # Centres 0.5 and 2.5 -> rho^2 = 4; diagonal^2 = 9+1 = 10 -> DIoU = CIoU = -0.4.
    # SIoU: dx=2, dy=0 -> the angle is measured to the x axis -> angle cost 0, gamma=-2;
    #   rho_x = (2/3)^2 -> distance cost = 1 - exp(-8/9); shape cost 0 -> SIoU = -(1 - exp(-8/9))/2.
    _check(
        (0, 0, 1, 1),
        (2, 0, 3, 1),
        {
            IoUKind.IOU: 0.0,
            IoUKind.GIOU: -1 / 3,
            IoUKind.DIOU: -0.4,
            IoUKind.CIOU: -0.4,
            IoUKind.SIOU: -(1 - math.exp(-8 / 9)) / 2,
        },
    )


def test_nested_boxes():
    # A=[0,0,4,4] contains B=[1,1,3,3], same centre: IoU 4/16; enclosure = union -> GIoU = IoU;
    # rho = 0 and equal aspect -> DIoU = CIoU = IoU.
    # SIoU: distance cost 0; omega_w = omega_h = |4-2|/4 = 1/2 -> shape cost 2(1-exp(-1/2))^4
    #   -> SIoU = 1/4 - (1-e^-.5)^4.
    _check(
        (0, 0, 4, 4),
        (1, 1, 3, 3),
        {
            IoUKind.IOU: 0.25,
            IoUKind.GIOU: 0.25,
            IoUKind.DIOU: 0.25,
            IoUKind.CIOU: 0.25,
            IoUKind.SIOU: 0.25 - (1 - math.exp(-0.5)) ** 4,
        },
    )


def test_horizontal_offset_siou():
    # A=[0,0,2,2], B=[1,0,3,2]: IoU 2/6 = 1/3. SIoU: dx=1, dy=0 -> angle cost 0, gamma=-2, cw=3 -> rho_x = 1/9
    #   -> distance cost 1 - exp(-2/9); shape cost 0 -> SIoU = 1/3 - (1 - exp(-2/9))/2.
    # GIoU: enclosure 3x2=6 = union -> 1/3. DIoU: rho^2=1, diagonal^2=9+4=13 -> 1/3 - 1/13.
    _check(
        (0, 0, 2, 2),
        (1, 0, 3, 2),
        {
            IoUKind.IOU: 1 / 3,
            IoUKind.GIOU: 1 / 3,
            IoUKind.DIOU: 1 / 3 - 1 / 13,
            IoUKind.SIOU: 1 / 3 - (1 - math.exp(-2 / 9)) / 2,
        },
    )


def test_ciou_aspect_term():
    # A=[0,0,2,2] (w=h=2), B=[0,0,4,2]: IoU 4/8 = 0.5; centres (1,1),(2,1): rho^2=1; diagonal^2 = 16+4 -> DIoU 0.45.
    # v = 4/pi^2 (atan(2) - atan(1))^2; alpha = v / (v - IoU + 1) -> CIoU = 0.45 - alpha v.
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    alpha = v / (v + 0.5)
    _check((0, 0, 2, 2), (0, 0, 4, 2), {IoUKind.GIOU: 0.5, IoUKind.DIOU: 0.45, IoUKind.CIOU: 0.45 - alpha * v})
    assert 0.45 - alpha * v == pytest.approx(0.446752, abs=1e-6)


def test_box_iou_pairwise():
    a = _t(0, 0, 2, 2, 0, 0, 4, 4).reshape(2, 4)
    b = _t(1, 1, 3, 3, 0, 0, 2, 2, 10, 10, 11, 11).reshape(3, 4)
    # [0,0,4,4] vs [1,1,3,3]: 4/16; vs [0,0,2,2]: 4/16.
    expected = _t(1 / 7, 1.0, 0.0, 0.25, 0.25, 0.0).reshape(2, 3)
    torch.testing.assert_close(box_iou(a, b), expected, atol=1e-6, rtol=0)
    for i in range(2):
        for j in range(3):
            assert bbox_iou(a[i], b[j]).item() == pytest.approx(expected[i, j].item(), abs=1e-6)


def test_iou_loss_reduction():
    pred = _t(0, 0, 2, 2, 0, 0, 1, 1).reshape(2, 4)
    target = _t(1, 1, 3, 3, 2, 0, 3, 1).reshape(2, 4)
    per_box = iou_loss(pred, target, IoUKind.GIOU)
    # 1 - GIoU: 1 + 5/63 and 1 + 1/3 (from the offset and disjoint cases above).
    torch.testing.assert_close(per_box, _t(1 + 5 / 63, 4 / 3), atol=1e-6, rtol=0)
    assert iou_loss(pred, target, IoUKind.GIOU, Reduction.SUM).item() == pytest.approx(per_box.sum().item())
    assert iou_loss(pred, target, IoUKind.GIOU, Reduction.MEAN).item() == pytest.approx(per_box.mean().item())


@pytest.mark.parametrize("kind", list(IoUKind))
def test_gradients_finite_including_identical_boxes(kind):
    pred = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1], [1, 1, 3, 3]], requires_grad=True)
    target = torch.tensor([[0.0, 0, 2, 2], [2, 0, 3, 1], [0, 0, 4, 4]])
    iou_loss(pred, target, kind, Reduction.SUM).backward()
    assert torch.isfinite(pred.grad).all()
