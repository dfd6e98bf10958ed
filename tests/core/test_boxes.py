"""Box decoding: the channel-first form the heads export equals the (B, N, 4) reference bit for bit."""

from __future__ import annotations

import torch

from yolodeploy.core.boxes import decode_ltrb_channels, dist2bbox, make_anchor_points


def _reference(distances: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """The heads' earlier decoding: (B, N, 4) distances, subtract/add around the points, then scale."""
    return (dist2bbox(distances.transpose(1, 2), points) * strides).transpose(1, 2)


def test_decode_ltrb_channels_is_bitwise_equal_to_dist2bbox_for_power_of_two_strides():
    sizes, level_strides = [(8, 10), (4, 5), (2, 3), (1, 2)], [8, 16, 32, 64]
    points, strides = make_anchor_points(sizes, level_strides, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    distances = torch.rand(3, 4, points.shape[0], generator=generator) * 40 - 5  # some negative, some large

    boxes = decode_ltrb_channels(distances, points, strides)

    assert boxes.shape == (3, 4, points.shape[0])
    assert torch.equal(boxes, _reference(distances, points, strides))


def test_decode_ltrb_channels_hand_computed():
    points = torch.tensor([[0.5, 0.5], [1.5, 0.5]])
    strides = torch.tensor([[8.0], [8.0]])
    distances = torch.tensor([[[0.5, 1.0], [0.25, 0.5], [1.0, 2.0], [0.75, 0.5]]])  # l, t, r, b per point

    boxes = decode_ltrb_channels(distances, points, strides)

    expected = torch.tensor([[[0.0, 4.0], [2.0, 0.0], [12.0, 28.0], [10.0, 8.0]]])  # x1, y1, x2, y2 per point
    assert torch.equal(boxes, expected)


def test_decode_ltrb_channels_keeps_an_empty_batch():
    points, strides = make_anchor_points([(2, 2)], [8], dtype=torch.float32)
    assert decode_ltrb_channels(torch.zeros(0, 4, 4), points, strides).shape == (0, 4, 4)
