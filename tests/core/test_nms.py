"""The pure-torch reference NMS on hand-made boxes, and against a naive per-class oracle on random ones."""

from __future__ import annotations

import pytest
import torch

from yolodeploy.core.nms import batched_nms, box_iou
from yolodeploy.utils.threads import torch_threads


def one_image(boxes, scores):
    return torch.tensor([boxes], dtype=torch.float32), torch.tensor([scores], dtype=torch.float32)


def test_box_iou_hand_computed():
    box = torch.tensor([0.0, 0.0, 2.0, 2.0])
    others = torch.tensor(
        [[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [2.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 3.0]]
    )
    # 1/7 overlap; identical; disjoint; same box with swapped corners; degenerate (zero width) -> 0
    torch.testing.assert_close(box_iou(box, others), torch.tensor([1 / 7, 1.0, 0.0, 1.0, 0.0]))


def test_overlapping_same_class_suppressed_different_class_kept():
    boxes, scores = one_image(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]],
        [[0.9, 0.0], [0.8, 0.7], [0.0, 0.6]],
    )
    num, det_boxes, det_scores, det_classes = batched_nms(boxes, scores, iou=0.5, conf=0.1, topk=5)
    # box 1 overlaps box 0 (IoU 81/119 = 0.68) in class 0 and is dropped there, but kept in class 1
    assert num.tolist() == [[3]] and num.dtype == torch.int32 and det_classes.dtype == torch.int32
    torch.testing.assert_close(det_scores[0], torch.tensor([0.9, 0.7, 0.6, 0.0, 0.0]))
    assert det_classes[0].tolist() == [0, 1, 1, 0, 0]
    torch.testing.assert_close(det_boxes[0, :3], boxes[0, [0, 1, 2]])
    assert not det_boxes[0, 3:].any()


def test_thresholds_are_strict():
    # IoU exactly 0.5 is not suppressed; a score equal to conf is not a candidate (ONNX Runtime's semantics)
    boxes, scores = one_image([[0, 0, 2, 1], [0, 0, 1, 1], [10, 10, 11, 11]], [[0.9], [0.8], [0.3]])
    num, _, det_scores, _ = batched_nms(boxes, scores, iou=0.5, conf=0.3, topk=10)
    assert num.item() == 2
    torch.testing.assert_close(det_scores[0, :2], torch.tensor([0.9, 0.8]))
    num, *_ = batched_nms(boxes, scores, iou=0.49, conf=0.3, topk=10)
    assert num.item() == 1


def test_topk_truncates_by_score_and_images_are_independent():
    boxes = torch.tensor([[[i * 20.0, 0, i * 20.0 + 10, 10] for i in range(6)]] * 2)
    scores = torch.tensor([[[0.1 * (i + 1)] for i in range(6)], [[0.0]] * 6])
    num, det_boxes, det_scores, _ = batched_nms(boxes, scores, iou=0.5, conf=0.05, topk=4)
    assert num.flatten().tolist() == [4, 0]
    torch.testing.assert_close(det_scores[0], torch.tensor([0.6, 0.5, 0.4, 0.3]))
    torch.testing.assert_close(det_boxes[0, 0], boxes[0, 5])
    assert not det_scores[1].any() and not det_boxes[1].any()


def test_shape_errors():
    with pytest.raises(ValueError, match="expected boxes"):
        batched_nms(torch.zeros(1, 5, 4), torch.zeros(1, 6, 2))


def naive_batched_nms(boxes, scores, iou, conf, topk):
    """Textbook per-class greedy NMS (full IoU matrix), then the topk best over classes."""
    results = []
    for image in range(boxes.shape[0]):
        kept = []
        for cls in range(scores.shape[2]):
            s = scores[image, :, cls]
            order = [int(i) for i in torch.sort(s, descending=True, stable=True).indices if s[i] > conf]
            suppressed = set()
            for rank, i in enumerate(order):
                if i in suppressed:
                    continue
                kept.append((float(s[i]), i, cls))
                for j in order[rank + 1 :]:
                    if box_iou(boxes[image, i], boxes[image, j : j + 1])[0] > iou:
                        suppressed.add(j)
        kept.sort(key=lambda item: -item[0])
        results.append(kept[:topk])
    return results


def test_equals_naive_oracle_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 60, 2, generator=gen) * 80
    boxes = torch.cat((xy, xy + torch.rand(3, 60, 2, generator=gen) * 40 + 1), -1)
    scores = torch.rand(3, 60, 4, generator=gen)
    num, det_boxes, det_scores, det_classes = batched_nms(boxes, scores, iou=0.4, conf=0.3, topk=25)
    for image, expected in enumerate(naive_batched_nms(boxes, scores, 0.4, 0.3, 25)):
        assert num[image].item() == len(expected)
        assert det_classes[image, : len(expected)].tolist() == [cls for _, _, cls in expected]
        torch.testing.assert_close(det_boxes[image, : len(expected)], boxes[image, [i for _, i, _ in expected]])
        torch.testing.assert_close(det_scores[image, : len(expected)], torch.tensor([s for s, _, _ in expected]))


def test_batched_nms_runs_its_loop_on_one_thread_and_restores_the_count(monkeypatch):
    seen = []
    import yolodeploy.core.nms as nms

    original = nms._nms_image
    monkeypatch.setattr(nms, "_nms_image", lambda *args: seen.append(torch.get_num_threads()) or original(*args))
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 50, 2, generator=g) * 100
    boxes, scores = torch.cat([xy, xy + 20], -1), torch.rand(2, 50, 3, generator=g)
    with torch_threads(2):
        multi = batched_nms(boxes, scores)
        assert seen == [1, 1] and torch.get_num_threads() == 2  # one thread inside, the caller's count after
        with torch_threads(1):
            assert all(torch.equal(a, b) for a, b in zip(multi, batched_nms(boxes, scores)))
