"""Box and anchor-point helpers shared by every detection head (pure functions)."""

from __future__ import annotations

import torch
from torch import Tensor

from .shapes import halves

__all__ = ["make_anchor_points", "dist2bbox", "decode_ltrb_channels", "cxcywh_to_xyxy", "xyxy_to_cxcywh"]


def make_anchor_points(
    sizes: list[tuple[int, int]], strides: list[int], offset: float = 0.5, *, dtype=None, device=None
) -> tuple[Tensor, Tensor]:
    """Cell-centre points of every level, in grid units, and their strides.

    Args:
        sizes: ``(height, width)`` of each level's feature map.
        strides: the stride of each level in input pixels.
        offset: position of the point inside its cell (0.5 = centre).

    Returns:
        ``points`` (N, 2) as (x, y) in grid units of their level, ordered level, then row y, then column x;
        ``stride_per_point`` (N, 1).
    """
    points, point_strides = [], []
    for (height, width), stride in zip(sizes, strides):
        ys = torch.arange(height, dtype=dtype, device=device) + offset
        xs = torch.arange(width, dtype=dtype, device=device) + offset
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y), -1).reshape(-1, 2))
        point_strides.append(torch.full((height * width, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(point_strides)


def dist2bbox(distance: Tensor, points: Tensor, *, xywh: bool = False, dim: int = -1) -> Tensor:
    """Boxes from (left, top, right, bottom) distances around ``points``: xyxy, or cxcywh if ``xywh``."""
    left_top, right_bottom = halves(distance, dim)
    x1y1 = points - left_top
    x2y2 = points + right_bottom
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def decode_ltrb_channels(distances: Tensor, points: Tensor, point_strides: Tensor) -> Tensor:
    """(B, 4, N) xyxy boxes in input pixels from (B, 4, N) left, top, right, bottom distances in grid units.

    ``points`` (N, 2) and ``point_strides`` (N, 1) as :func:`make_anchor_points` returns them. The heads' exported
    decoding: one ``Mul`` and one ``Add`` with constant (4, N) tables on the channel-first maps, so the graph needs a
    single transpose to (B, N, 4 + C) at the very end instead of transposing, splitting and re-concatenating the
    distances. Bit for bit ``dist2bbox(distances.transpose(1, 2), points) * point_strides`` when the strides are
    powers of two (scaling by one commutes with rounding), as every zoo model's are.
    """
    signs = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=distances.dtype, device=distances.device).view(4, 1)
    scales = signs * point_strides.reshape(1, -1)
    offsets = (points * point_strides).transpose(0, 1).repeat(2, 1)
    return distances * scales + offsets


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((centre - size / 2, centre + size / 2), -1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:4]
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), -1)
