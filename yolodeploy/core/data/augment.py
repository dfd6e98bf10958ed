"""Training-time augmentations (HSV, flips, random affine, mosaic, mixup) as pure numpy/Pillow functions.

Follows the YOLOv5 / YOLOv6 augmentations (``utils/augmentations.py`` of https://github.com/ultralytics/yolov5,
``yolov6/data/data_augment.py`` of https://github.com/meituan/YOLOv6), without OpenCV:

- every function takes an explicit ``rng: np.random.Generator`` (no global RNG), so a data loader can derive one
  generator per (seed, epoch, index) and reproduce a run exactly;
- images are HWC uint8 RGB arrays, boxes ``(n, 4)`` float32 xyxy in *continuous* pixel coordinates (pixel ``i``
  spans ``[i, i + 1]``), labels ``(n,)`` int64. Pillow's affine transform samples at pixel centres in the same
  convention, so a box and the pixels it encloses move together exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from ...errors import ConfigError

__all__ = [
    "AugmentConfig",
    "hsv_jitter",
    "flip_lr",
    "flip_ud",
    "affine_matrix",
    "warp_affine",
    "random_affine",
    "box_candidates",
    "resize_long_side",
    "load_mosaic",
    "mixup",
]

Item = tuple[np.ndarray, np.ndarray, np.ndarray]

_PROBABILITIES = ("flip_ud", "flip_lr", "mosaic", "mixup")
# (field, exclusive upper bound or None, inclusive upper bound or None): all ranges are also >= 0
_RANGES = {
    "hsv_h": (None, 1.0),
    "hsv_s": (None, 1.0),
    "hsv_v": (None, 1.0),
    "degrees": (None, 180.0),
    "translate": (None, 0.5),
    "scale": (1.0, None),
    "shear": (90.0, None),
}


@dataclass(kw_only=True)
class AugmentConfig:
    """Augmentation strengths (YOLOv6 defaults): HSV gains, affine ranges, and flip / mosaic / mixup probabilities.

    Ranges: ``hsv_*`` gains in [0, 1]; ``degrees`` in [0, 180]; ``translate`` in [0, 0.5] (fraction of the output
    size); ``scale`` in [0, 1) (zoom drawn from ``1 +- scale``); ``shear`` in [0, 90) degrees.

    Example:
        >>> AugmentConfig(mixup=0.1).to_dict()["mixup"]
        0.1
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    flip_ud: float = 0.0
    flip_lr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment {name} is a probability and must be in [0, 1], got {value}")
        for name, (below, at_most) in _RANGES.items():
            value = getattr(self, name)
            if value < 0 or (below is not None and value >= below) or (at_most is not None and value > at_most):
                bound = f"[0, {below})" if below is not None else f"[0, {at_most}]"
                raise ConfigError(f"augment {name} must be in {bound}, got {value}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every augmentation off (the output is the plain letterbox)."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name != "version"})

    @property
    def affine_is_identity(self) -> bool:
        return self.degrees == self.translate == self.scale == self.shear == 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown augment options {unknown}; valid: {sorted(known)}")
        return cls(**data)


def hsv_jitter(image: np.ndarray, hgain: float, sgain: float, vgain: float, rng: np.random.Generator) -> np.ndarray:
    """Scale hue, saturation and value by random gains ``1 + uniform(-1, 1) * gain`` (lookup tables, as YOLOv5).

    Pillow's HSV has hue in 0..255 for the full circle, so the hue table wraps modulo 256. Zero gains return an
    unchanged copy (the RGB -> HSV -> RGB round trip is not lossless, so it is skipped).
    """
    from PIL import Image

    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1
    if np.all(gains == 1):
        return image.copy()
    x = np.arange(256, dtype=np.float64)
    lut_h = ((x * gains[0]) % 256).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    hsv = np.stack([lut_h[hsv[..., 0]], lut_s[hsv[..., 1]], lut_v[hsv[..., 2]]], axis=-1)
    return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))


def flip_lr(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: ``x -> width - x`` (x1 and x2 swap roles)."""
    width = image.shape[1]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    flipped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return np.ascontiguousarray(image[:, ::-1]), flipped.astype(np.float32)


def flip_ud(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror up-down: ``y -> height - y`` (y1 and y2 swap roles)."""
    height = image.shape[0]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    flipped = np.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], axis=1)
    return np.ascontiguousarray(image[::-1]), flipped.astype(np.float32)


def affine_matrix(
    in_size: tuple[int, int],
    out_size: int,
    *,
    angle: float = 0.0,
    scale: float = 1.0,
    shear: tuple[float, float] = (0.0, 0.0),
    translate: tuple[float, float] = (0.5, 0.5),
) -> np.ndarray:
    """The 3x3 forward matrix of YOLOv5's ``random_perspective`` (without perspective), for given parameters.

    Moves the input centre to the origin, rotates by ``angle`` degrees (counter-clockwise on screen) and scales,
    shears by ``shear = (x, y)`` degrees, then moves the origin to ``translate * out_size``.

    Args:
        in_size: input ``(height, width)``.
        out_size: side of the square output.
    """
    height, width = in_size
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]], np.float64)
    radians = math.radians(angle)
    cos, sin = scale * math.cos(radians), scale * math.sin(radians)
    rotate = np.array([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]], np.float64)
    shx, shy = (math.tan(math.radians(s)) for s in shear)
    shear_m = np.array([[1, shx, 0], [shy, 1, 0], [0, 0, 1]], np.float64)
    move = np.array([[1, 0, translate[0] * out_size], [0, 1, translate[1] * out_size], [0, 0, 1]], np.float64)
    return move @ shear_m @ rotate @ centre


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    area_scale: float = 1.0,
    wh_thr: float = 2,
    ar_thr: float = 20,
    area_thr: float = 0.1,
) -> np.ndarray:
    """Keep mask of YOLOv5's ``box_candidates``.

    A box survives if both sides exceed ``wh_thr`` pixels, its aspect ratio is below ``ar_thr`` and
    ``area_after / (area_before * area_scale) > area_thr``.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    eps = 1e-16
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 * area_scale + eps) > area_thr) & (aspect < ar_thr)


def warp_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    matrix: np.ndarray,
    out_size: int,
    border_value: int = 114,
) -> Item:
    """Warp ``image`` by the forward 3x3 ``matrix`` into an ``out_size`` square and move the boxes with it.

    Boxes become the enclosing xyxy of their 4 transformed corners, clipped to the output, then filtered by
    ``box_candidates`` (area compared after scaling by the matrix's area factor ``|det|``). An identity matrix
    on an ``out_size`` input returns unchanged copies (no box is dropped).
    """
    from PIL import Image

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if image.shape[:2] == (out_size, out_size) and np.array_equal(matrix, np.eye(3)):
        return image.copy(), boxes.copy(), labels.copy()
    # Rounding the inverse removes float noise (cos 90 = 6e-17): Pillow truncates the interpolated value, so a
    # sample 1e-16 off a pixel centre would turn 114 into 113.
    inverse = np.linalg.inv(matrix).round(9)
    warped = Image.fromarray(image).transform(
        (out_size, out_size),
        Image.Transform.AFFINE,
        tuple(inverse[:2].reshape(-1)),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(border_value,) * 3,
    )
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2).astype(np.float64)
    moved = (corners @ matrix[:2, :2].T + matrix[:2, 2]).reshape(-1, 4, 2)
    new = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1).clip(0, out_size).astype(np.float32)
    keep = box_candidates(boxes, new, area_scale=abs(np.linalg.det(matrix[:2, :2])))
    return np.asarray(warped), new[keep], labels[keep]


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
    out_size: int,
    border_value: int = 114,
) -> Item:
    """Random rotation / scale / shear around the input centre, and translation, into an ``out_size`` square.

    The input may have any size: its centre lands at the output centre (``+- translate * out_size``), so a
    ``2 * out_size`` mosaic canvas is cropped back to ``out_size`` (YOLOv5's ``border = -out_size // 2``).
    All-zero ranges on an ``out_size`` input leave image and boxes unchanged.

    Example:
        >>> image, boxes, labels = random_affine(image, boxes, labels, np.random.default_rng(0), degrees=0,
        ...     translate=0.1, scale=0.5, shear=0, out_size=640)
    """
    angle = rng.uniform(-degrees, degrees)
    zoom = rng.uniform(1 - scale, 1 + scale)
    shears = (rng.uniform(-shear, shear), rng.uniform(-shear, shear))
    moves = (rng.uniform(0.5 - translate, 0.5 + translate), rng.uniform(0.5 - translate, 0.5 + translate))
    matrix = affine_matrix(image.shape[:2], out_size, angle=angle, scale=zoom, shear=shears, translate=moves)
    return warp_affine(image, boxes, labels, matrix, out_size, border_value)


def resize_long_side(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize (Pillow bilinear) so that the long side is ``size``; boxes scaled by the actual per-axis factors."""
    from PIL import Image

    height, width = image.shape[:2]
    ratio = size / max(height, width)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if (new_w, new_h) == (width, height):
        return image, boxes
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    return resized, boxes * np.array([new_w / width, new_h / height] * 2, np.float32)


def load_mosaic(items: Sequence[Item], out_size: int, rng: np.random.Generator, border_value: int = 114) -> Item:
    """Place 4 items around a random centre of a ``2 * out_size`` canvas (YOLOv5 ``load_mosaic``).

    Each image is first resized so its long side is ``out_size``; item 0 goes top-left of the centre, then
    top-right, bottom-left, bottom-right, each cut at the canvas edge. Boxes are shifted with their image and
    clipped to the part that was pasted (boxes cut away entirely are dropped). Follow with ``random_affine``
    (``out_size``) to crop back to ``out_size``.

    Returns:
        ``(canvas, boxes, labels)`` with a ``(2 * out_size, 2 * out_size, 3)`` canvas.
    """
    if len(items) != 4:
        raise ValueError(f"load_mosaic needs 4 items, got {len(items)}")
    s = out_size
    xc, yc = (int(rng.uniform(s // 2, 2 * s - s // 2)) for _ in range(2))
    canvas = np.full((2 * s, 2 * s, 3), border_value, np.uint8)
    all_boxes, all_labels = [], []
    for i, (image, boxes, labels) in enumerate(items):
        image, boxes = resize_long_side(image, boxes, s)
        h, w = image.shape[:2]
        x1a, x2a = (max(xc - w, 0), xc) if i in (0, 2) else (xc, min(xc + w, 2 * s))
        y1a, y2a = (max(yc - h, 0), yc) if i in (0, 1) else (yc, min(yc + h, 2 * s))
        x1b = w - (x2a - x1a) if i in (0, 2) else 0
        y1b = h - (y2a - y1a) if i in (0, 1) else 0
        canvas[y1a:y2a, x1a:x2a] = image[y1b : y1b + (y2a - y1a), x1b : x1b + (x2a - x1a)]
        shifted = boxes + np.array([x1a - x1b, y1a - y1b] * 2, np.float32)
        shifted[:, 0::2] = shifted[:, 0::2].clip(x1a, x2a)
        shifted[:, 1::2] = shifted[:, 1::2].clip(y1a, y2a)
        keep = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
        all_boxes.append(shifted[keep])
        all_labels.append(np.asarray(labels, np.int64).reshape(-1)[keep])
    return canvas, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_labels)


def mixup(a: Item, b: Item, rng: np.random.Generator, alpha: float = 32.0) -> Item:
    """Blend two same-size images with a ``beta(alpha, alpha)`` ratio and keep the boxes of both (YOLOv5)."""
    if a[0].shape != b[0].shape:
        raise ValueError(f"mixup needs images of one size, got {a[0].shape} and {b[0].shape}")
    ratio = rng.beta(alpha, alpha)
    image = (a[0].astype(np.float32) * ratio + b[0].astype(np.float32) * (1 - ratio)).astype(np.uint8)
    boxes = np.concatenate([np.asarray(a[1], np.float32).reshape(-1, 4), np.asarray(b[1], np.float32).reshape(-1, 4)])
    labels = np.concatenate([np.asarray(a[2], np.int64).reshape(-1), np.asarray(b[2], np.int64).reshape(-1)])
    return image, boxes, labels
