"""TAL and ATSS picks on toy layouts with hand-derived expectations."""

import pytest
import torch

from yolodeploy.core.assigners import ATSSAssigner, TaskAlignedAssigner

NUM_CLASSES = 3


def _grid_points():
    # 4x4 grid of cell centres (x+0.5, y+0.5); anchor index = 4 * y + x.
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    return torch.stack((xs, ys), -1).reshape(-1, 2) + 0.5


def _tal_inputs(scores_for_class, gt_boxes, gt_labels, mask_gt, pred_boxes=None, cls=1):
    points = _grid_points()
    pred_scores = torch.zeros(1, 16, NUM_CLASSES)
    pred_scores[0, :, cls] = scores_for_class
    if pred_boxes is None:
        pred_boxes = gt_boxes[:, :1].expand(1, 16, 4).clone()
    return pred_scores, pred_boxes, points, gt_labels, gt_boxes, mask_gt


def test_tal_picks_topk_aligned_points_inside_box():
    # gt [0,0,2.6,2.6] contains the 9 points with x, y in {0.5, 1.5, 2.5}: indices 0,1,2,4,5,6,8,9,10.
    # Every predicted box equals the gt (IoU 1), so alignment = score; score grows with the index, and the
    # outside points (3, 7, 11, 12..15) score highest but must never be chosen. Top-4 inside: 10, 9, 8, 6.
    scores = (torch.arange(16.0) + 1) / 20
    gt_boxes = torch.tensor([[[0.0, 0.0, 2.6, 2.6]]])
    inputs = _tal_inputs(scores, gt_boxes, torch.tensor([[[1]]]), torch.ones(1, 1, 1))
    labels, boxes, target_scores, fg = TaskAlignedAssigner(topk=4, num_classes=NUM_CLASSES)(*inputs)

    chosen = [6, 8, 9, 10]
    assert fg[0].nonzero().flatten().tolist() == chosen
    assert labels[0, chosen].tolist() == [1] * 4
    assert (labels[0, ~fg[0]] == NUM_CLASSES).all()  # background label
    torch.testing.assert_close(boxes[0, chosen], gt_boxes[0].expand(4, 4))
    # Target score = t / max_t * max_iou = score / 0.55 on the gt's class, 0 elsewhere.
    torch.testing.assert_close(target_scores[0, chosen, 1], scores[chosen] / 0.55)
    assert target_scores[0, :, [0, 2]].abs().max() == 0
    assert target_scores[0, ~fg[0]].abs().max() == 0


def test_tal_alignment_trades_score_against_iou():
    # With alpha=1, beta=6: point A (index 5) has score 0.9 but IoU 0.5 -> t = 0.9 / 64 = 0.0141;
    # point B (index 0) has score 0.3 and IoU 0.9 -> t = 0.3 * 0.531 = 0.159. Top-1 picks B.
    gt = torch.tensor([0.0, 0.0, 2.0, 2.0])
    pred_boxes = torch.zeros(1, 16, 4)  # empty boxes: IoU 0 everywhere else
    pred_boxes[0, 5] = torch.tensor([0.0, 0.0, 2.0, 1.0])  # IoU 2/4 = 0.5
    pred_boxes[0, 0] = torch.tensor([0.0, 0.0, 2.0, 1.8])  # IoU 3.6/4 = 0.9
    scores = torch.zeros(16)
    scores[5], scores[0] = 0.9, 0.3
    inputs = _tal_inputs(scores, gt[None, None], torch.tensor([[[1]]]), torch.ones(1, 1, 1), pred_boxes)
    labels, _, target_scores, fg = TaskAlignedAssigner(topk=1, num_classes=NUM_CLASSES)(*inputs)
    assert fg[0].nonzero().flatten().tolist() == [0]
    # Normalised target: t / max_t * max_iou over the positives = 1 * 0.9.
    assert target_scores[0, 0, 1].item() == pytest.approx(0.9, abs=1e-5)


def test_tal_point_claimed_by_two_gts_goes_to_higher_iou():
    # gt0 [0,0,2.6,2.6] (class 0) and gt1 [1,1,4,4] (class 2) both contain points 5, 6, 9, 10.
    # topk=16 makes every inside point a candidate of each gt. Predicted boxes equal gt1 at 6, 9, 10 and gt0 at 5,
    # so the shared points go to the gt their prediction overlaps most: 5 -> gt0, 6/9/10 -> gt1.
    gt_boxes = torch.tensor([[[0.0, 0.0, 2.6, 2.6], [1.0, 1.0, 4.0, 4.0]]])
    pred_boxes = gt_boxes[:, 0:1].expand(1, 16, 4).clone()
    pred_boxes[0, [6, 9, 10, 11, 13, 14, 15, 7]] = gt_boxes[0, 1]
    pred_scores = torch.full((1, 16, NUM_CLASSES), 0.5)
    labels, boxes, _, fg = TaskAlignedAssigner(topk=16, num_classes=NUM_CLASSES)(
        pred_scores, pred_boxes, _grid_points(), torch.tensor([[[0], [2]]]), gt_boxes, torch.ones(1, 2, 1)
    )
    assert labels[0, [0, 1, 2, 4, 5, 8]].tolist() == [0] * 6
    assert labels[0, [6, 9, 10, 7, 11, 13, 14, 15]].tolist() == [2] * 8
    assert not fg[0, [3, 12]].any()  # (3.5, 0.5) and (0.5, 3.5) lie in neither box
    torch.testing.assert_close(boxes[0, 6], gt_boxes[0, 1])
    torch.testing.assert_close(boxes[0, 5], gt_boxes[0, 0])


def test_tal_padding_gts_ignored():
    scores = (torch.arange(16.0) + 1) / 20
    real = torch.tensor([0.0, 0.0, 2.6, 2.6])
    assigner = TaskAlignedAssigner(topk=4, num_classes=NUM_CLASSES)
    single = assigner(*_tal_inputs(scores, real[None, None], torch.tensor([[[1]]]), torch.ones(1, 1, 1)))
    # A padded slot covering the whole image with label -1 and mask 0 must change nothing.
    padded_boxes = torch.stack((real, torch.tensor([0.0, 0.0, 4.0, 4.0])))[None]
    inputs = _tal_inputs(scores, padded_boxes, torch.tensor([[[1], [-1]]]), torch.tensor([[[1.0], [0.0]]]))
    padded = assigner(*inputs)
    for got, want in zip(padded, single):
        torch.testing.assert_close(got, want)


def test_tal_no_gts():
    labels, boxes, scores, fg = TaskAlignedAssigner(num_classes=NUM_CLASSES)(
        torch.rand(2, 16, NUM_CLASSES), torch.rand(2, 16, 4), _grid_points(), torch.zeros(2, 0, 1),
        torch.zeros(2, 0, 4), torch.zeros(2, 0, 1),
    )  # fmt: skip
    assert (labels == NUM_CLASSES).all() and not fg.any() and scores.abs().max() == 0
    assert boxes.shape == (2, 16, 4)


# ATSS toy layout, two levels along a 10-pixel-high strip:
#   level 0: A0..A3 = [0,10], [10,20], [20,30], [30,40] (centres x = 5, 15, 25, 35)
#   level 1: B0, B1 = [0,20], [20,40] (centres x = 10, 30)
_ATSS_ANCHORS = torch.tensor(
    [[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10], [0, 0, 20, 10], [20, 0, 40, 10]]
)
_ATSS_LEVELS = [4, 2]


def test_atss_toy_layout():
    # gt [0,0,12,10], centre (6,5). topk=2 closest per level: A0 (d=1), A1 (d=9); B0 (d=4), B1 (d=24).
    # IoUs: A0 100/120 = 0.8333, A1 20/200 = 0.1, B0 120/200 = 0.6, B1 0.
    # mean = 0.38333, sample std = sqrt(0.476667 / 3) = 0.39861 -> threshold 0.78194: only A0 passes,
    # and its centre (5,5) lies inside the gt.
    gt_boxes = torch.tensor([[[0.0, 0.0, 12.0, 10.0]]])
    labels, boxes, scores, fg = ATSSAssigner(topk=2, num_classes=NUM_CLASSES)(
        _ATSS_ANCHORS, _ATSS_LEVELS, torch.tensor([[[2]]]), gt_boxes, torch.ones(1, 1, 1)
    )
    assert fg[0].tolist() == [True, False, False, False, False, False]
    assert labels[0].tolist() == [2, 3, 3, 3, 3, 3]
    torch.testing.assert_close(boxes[0, 0], gt_boxes[0, 0])
    assert scores[0, 0].tolist() == [0.0, 0.0, 1.0]  # one-hot without predictions
    assert scores[0, 1:].abs().max() == 0


def test_atss_soft_scores_and_padding():
    # Same layout plus a padded gt covering everything; predictions make the positive's score its IoU with the gt:
    # pred [0,0,10,10] vs gt [0,0,12,10] -> 100/120.
    gt_boxes = torch.tensor([[[0.0, 0.0, 12.0, 10.0], [0.0, 0.0, 40.0, 10.0]]])
    pred_boxes = _ATSS_ANCHORS[None].clone()
    labels, _, scores, fg = ATSSAssigner(topk=2, num_classes=NUM_CLASSES)(
        _ATSS_ANCHORS, _ATSS_LEVELS, torch.tensor([[[2], [-1]]]), gt_boxes, torch.tensor([[[1.0], [0.0]]]), pred_boxes
    )
    assert fg[0].tolist() == [True, False, False, False, False, False]
    assert labels[0, 0].item() == 2
    assert scores[0, 0, 2].item() == pytest.approx(100 / 120, abs=1e-6)


def test_atss_rejects_wrong_level_counts():
    with pytest.raises(ValueError, match="sums to 5"):
        ATSSAssigner(num_classes=NUM_CLASSES)(
            _ATSS_ANCHORS, [4, 1], torch.zeros(1, 1, 1), torch.ones(1, 1, 4), torch.ones(1, 1, 1)
        )


def test_tal_batch_matches_per_image_runs():
    torch.manual_seed(0)
    assigner = TaskAlignedAssigner(topk=3, num_classes=NUM_CLASSES)
    pred_scores = torch.rand(2, 16, NUM_CLASSES)
    pred_boxes = torch.rand(2, 16, 2).mul(2).repeat(1, 1, 2) + torch.tensor([0.0, 0.0, 1.5, 1.5])
    gt_boxes = torch.tensor([[[0.0, 0.0, 2.6, 2.6], [1.0, 1.0, 4.0, 4.0]], [[0.2, 1.1, 3.9, 3.0], [0, 0, 0, 0]]])
    gt_labels = torch.tensor([[[0], [2]], [[1], [0]]])
    mask_gt = torch.tensor([[[1.0], [1.0]], [[1.0], [0.0]]])
    batched = assigner(pred_scores, pred_boxes, _grid_points(), gt_labels, gt_boxes, mask_gt)
    assert batched[3].sum(-1).tolist()[1] == 3
    for b in range(2):
        single = assigner(
            pred_scores[b : b + 1], pred_boxes[b : b + 1], _grid_points(), gt_labels[b : b + 1],
            gt_boxes[b : b + 1], mask_gt[b : b + 1],
        )  # fmt: skip
        for got, want in zip(batched, single):
            torch.testing.assert_close(got[b : b + 1], want)
