"""VariFocal and Distribution Focal Loss against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from yolodeploy.core.losses import bbox_to_distance, distribution_focal_loss, varifocal_loss


def test_varifocal_hand_computed():
    # Logits ln 3 and 0 -> p = 0.75, 0.5. Positive entry: q = 0.6, weight q;
    #   BCE(0.75, 0.6) = -(0.6 ln 0.75 + 0.4 ln 0.25) = 0.727127 -> 0.6 * 0.727127 = 0.436276.
    # Negative entry: q = 0, weight alpha p^gamma = 0.75 * 0.25 = 0.1875; BCE = ln 2 -> 0.129965.
    logits = torch.tensor([[math.log(3.0), 0.0]])
    loss = varifocal_loss(logits, torch.tensor([[0.6, 0.0]]), torch.tensor([[1.0, 0.0]]))
    expected = 0.6 * -(0.6 * math.log(0.75) + 0.4 * math.log(0.25)) + 0.1875 * math.log(2)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.566241, abs=1e-6)


def test_varifocal_negatives_vanish_when_confidently_background():
    logits = torch.full((3, 4), -30.0)
    assert varifocal_loss(logits, torch.zeros(3, 4), torch.zeros(3, 4)).item() < 1e-12


def test_varifocal_weight_is_not_differentiated():
    # d/dz of w * BCE(sigmoid(z), 0) with w constant is w * sigmoid(z) = 0.1875 * 0.5 at z = 0.
    logits = torch.zeros(1, 1, requires_grad=True)
    varifocal_loss(logits, torch.zeros(1, 1), torch.zeros(1, 1)).backward()
    assert logits.grad.item() == pytest.approx(0.1875 * 0.5)


def test_dfl_uniform_logits_is_log_bins():
    # Uniform over 17 bins: both cross-entropies equal ln 17, and the weights sum to 1.
    loss = distribution_focal_loss(torch.zeros(2, 4, 17), torch.tensor([[3.3, 0.0, 7.5, 15.99]] * 2))
    torch.testing.assert_close(loss, torch.full((2,), math.log(17)))


def test_dfl_matches_interpolation_formula():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 17)
    target = torch.tensor([[3.3, 0.25, 9.0, 15.5]])
    log_probs = F.log_softmax(logits, -1)[0]
    # (y_r - y) * CE(y_l) + (y - y_l) * CE(y_r), e.g. 3.3 -> 0.7 * CE(3) + 0.3 * CE(4).
    sides = [
        -(0.7 * log_probs[0, 3] + 0.3 * log_probs[0, 4]),
        -(0.75 * log_probs[1, 0] + 0.25 * log_probs[1, 1]),
        -(1.0 * log_probs[2, 9] + 0.0 * log_probs[2, 10]),
        -(0.5 * log_probs[3, 15] + 0.5 * log_probs[3, 16]),
    ]
    expected = torch.stack(sides).mean()
    torch.testing.assert_close(distribution_focal_loss(logits, target), expected[None], atol=1e-6, rtol=0)
    # The flat (N, 4 * (reg_max + 1)) head layout gives the same value.
    torch.testing.assert_close(distribution_focal_loss(logits.reshape(1, 68), target), expected[None])


def test_dfl_perfect_sharp_prediction_is_zero():
    logits = torch.full((1, 4, 17), -50.0)
    target = torch.tensor([[3.0, 0.0, 8.0, 12.0]])
    for side, bin_index in enumerate([3, 0, 8, 12]):
        logits[0, side, bin_index] = 50.0
    assert distribution_focal_loss(logits, target).item() < 1e-6


def test_dfl_two_bin_optimum():
    # Target 3.5 is best matched by half the mass on bins 3 and 4: loss = 0.5 ln 2 + 0.5 ln 2 = ln 2 (DFL's minimum).
    logits = torch.full((1, 4, 17), -1e4)
    logits[..., 3:5] = 0.0
    assert distribution_focal_loss(logits, torch.full((1, 4), 3.5)).item() == pytest.approx(math.log(2), abs=1e-6)


def test_dfl_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        distribution_focal_loss(torch.zeros(2, 4, 17), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="4 \\* \\(reg_max"):
        distribution_focal_loss(torch.zeros(2, 66), torch.zeros(2, 4))


def test_bbox_to_distance():
    points = torch.tensor([[2.0, 2.0], [5.0, 5.0]])
    boxes = torch.tensor([[0.5, 1.0, 3.0, 20.0], [6.0, 0.0, 7.0, 9.0]])
    # Row 1: left 1.5, top 1, right 1, bottom 18 -> clipped to reg_max - 0.01 = 15.99.
    # Row 2: point left of the box -> left distance -1 clipped to 0.
    expected = torch.tensor([[1.5, 1.0, 1.0, 15.99], [0.0, 5.0, 2.0, 4.0]])
    torch.testing.assert_close(bbox_to_distance(points, boxes, reg_max=16), expected)
