"""Augmentations on tiny hand-built images: flips, HSV, affine (identity, translation, 90 degrees), mosaic, mixup."""

from __future__ import annotations

import numpy as np
import pytest

from yolodeploy.core.data.augment import (
    AugmentConfig,
    affine_matrix,
    flip_lr,
    flip_ud,
    hsv_jitter,
    load_mosaic,
    mixup,
    random_affine,
    warp_affine,
)
from yolodeploy.errors import ConfigError

GRAY = 114


def _scene(height, width, box, colour):
    """A gray image with one solid rectangle ``box`` (integer xyxy) of ``colour``."""
    image = np.full((height, width, 3), GRAY, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour
    return image, np.array([box], np.float32), np.array([3], np.int64)


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_flip_lr_moves_box_and_pixel():
    image, boxes, _ = _scene(8, 10, (1, 2, 4, 5), (255, 0, 0))
    flipped, new = flip_lr(image, boxes)
    np.testing.assert_array_equal(new, [[6, 2, 9, 5]])
    assert tuple(flipped[2, 6]) == (255, 0, 0) and tuple(flipped[2, 5]) == (GRAY,) * 3
    assert tuple(flipped[4, 8]) == (255, 0, 0) and tuple(flipped[4, 9]) == (GRAY,) * 3
    np.testing.assert_array_equal(flipped[:, ::-1], image)


def test_flip_ud_moves_box_and_pixel():
    image, boxes, _ = _scene(8, 10, (1, 2, 4, 5), (0, 255, 0))
    flipped, new = flip_ud(image, boxes)
    np.testing.assert_array_equal(new, [[1, 3, 4, 6]])
    assert tuple(flipped[3, 1]) == (0, 255, 0) and tuple(flipped[2, 1]) == (GRAY,) * 3
    np.testing.assert_array_equal(flipped[::-1], image)


def test_flips_of_no_boxes():
    image = np.zeros((4, 4, 3), np.uint8)
    for flip in (flip_lr, flip_ud):
        _, boxes = flip(image, np.zeros((0, 4), np.float32))
        assert boxes.shape == (0, 4) and boxes.dtype == np.float32


def test_hsv_zero_gains_is_identity_and_gains_change_pixels():
    image = _rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(hsv_jitter(image, 0, 0, 0, _rng()), image)
    jittered = hsv_jitter(image, 0.5, 0.7, 0.4, _rng())
    assert jittered.shape == image.shape and jittered.dtype == np.uint8
    assert np.abs(jittered.astype(int) - image).mean() > 5
    np.testing.assert_array_equal(jittered, hsv_jitter(image, 0.5, 0.7, 0.4, _rng()))


def test_random_affine_identity_leaves_everything_unchanged():
    image = _rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, 3, 4], [0, 0, 32, 32]], np.float32)  # the first one is tiny: still kept
    labels = np.array([0, 1], np.int64)
    out = random_affine(image, boxes, labels, _rng(), degrees=0, translate=0, scale=0, shear=0, out_size=32)
    for got, want in zip(out, (image, boxes, labels)):
        np.testing.assert_array_equal(got, want)


def test_pure_translation_moves_boxes_and_pixels_exactly():
    image, boxes, labels = _scene(32, 32, (4, 6, 14, 20), (10, 200, 30))
    shift = np.array([[1, 0, 5], [0, 1, -3], [0, 0, 1]], np.float64)
    warped, new, kept = warp_affine(image, boxes, labels, shift, 32)
    np.testing.assert_array_equal(new, [[9, 3, 19, 17]])
    np.testing.assert_array_equal(kept, labels)
    expected, _, _ = _scene(32, 32, (9, 3, 19, 17), (10, 200, 30))
    expected[29:] = GRAY  # the bottom 3 rows came from outside the source
    np.testing.assert_array_equal(warped, expected)


def test_random_translation_keeps_box_on_its_pixels():
    image, boxes, labels = _scene(40, 40, (8, 10, 20, 30), (250, 20, 20))
    for seed in range(5):
        warped, new, _ = random_affine(
            image, boxes, labels, _rng(seed), degrees=0, translate=0.2, scale=0, shear=0, out_size=40
        )
        ys, xs = np.nonzero(warped[..., 0] > (250 + GRAY) / 2)  # bilinear: pixels whose centre is in the box
        np.testing.assert_allclose(new[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=0.52)  # + truncation
        assert new[0, 2] - new[0, 0] == pytest.approx(12) and new[0, 3] - new[0, 1] == pytest.approx(20)


def test_rotation_by_90_degrees():
    image, boxes, labels = _scene(20, 20, (2, 4, 8, 14), (0, 0, 255))
    matrix = affine_matrix((20, 20), 20, angle=90)
    warped, new, _ = warp_affine(image, boxes, labels, matrix, 20)
    # counter-clockwise on screen: (x, y) -> (y, 20 - x)
    np.testing.assert_allclose(new, [[4, 12, 14, 18]], atol=1e-4)
    expected, _, _ = _scene(20, 20, (4, 12, 14, 18), (0, 0, 255))
    np.testing.assert_array_equal(warped, expected)


def test_affine_drops_boxes_pushed_out_or_squashed():
    image, _, _ = _scene(32, 32, (0, 0, 1, 1), (0, 0, 0))
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    shift = np.array([[1, 0, -9], [0, 1, 0], [0, 0, 1]], np.float64)  # the first box keeps 1 px of width
    _, new, labels = warp_affine(image, boxes, np.array([0, 1]), shift, 32)
    np.testing.assert_array_equal(labels, [1])
    np.testing.assert_array_equal(new, [[11, 20, 21, 30]])


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _mosaic_items():
    boxes = [(4, 6, 30, 26), (10, 2, 40, 30), (20, 10, 44, 40), (2, 2, 20, 44)]
    sizes = [(48, 48), (32, 48), (48, 48), (48, 24)]
    return [_scene(h, w, b, c) for (h, w), b, c in zip(sizes, boxes, COLOURS)]


@pytest.mark.parametrize("seed", range(8))
def test_mosaic_boxes_match_pixels(seed):
    rng = _rng(seed)
    items = [(img, box, np.array([i])) for i, (img, box, _) in enumerate(_mosaic_items())]
    canvas, boxes, labels = load_mosaic(items, 48, rng)
    assert canvas.shape == (96, 96, 3)
    image, boxes, labels = random_affine(
        canvas, boxes, labels, rng, degrees=0, translate=0.1, scale=0.3, shear=0, out_size=48
    )
    assert image.shape == (48, 48, 3) and len(boxes) == len(labels) and len(labels) >= 1
    for (x1, y1, x2, y2), label in zip(boxes.round().astype(int), labels):
        colour = COLOURS[label]
        inner = image[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
        if inner.size:
            assert (inner == colour).all(axis=2).all(), (label, (x1, y1, x2, y2))
        ring = np.zeros(image.shape[:2], bool)
        ring[max(y1 - 3, 0) : y2 + 3, max(x1 - 3, 0) : x2 + 3] = True
        ring[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2] = False
        assert not (image[ring] == colour).all(axis=1).any(), (label, (x1, y1, x2, y2))


def test_mosaic_places_all_four_items_and_keeps_empty_ones():
    items = _mosaic_items()
    items[1] = (items[1][0], np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    canvas, boxes, labels = load_mosaic(items, 48, _rng(3))
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and len(boxes) == len(labels) <= 3
    for colour in (COLOURS[0], COLOURS[2], COLOURS[3]):
        assert (canvas == colour).all(axis=2).any()


def test_mixup_blends_and_concatenates():
    a = (np.full((4, 4, 3), 200, np.uint8), np.array([[0, 0, 2, 2]], np.float32), np.array([1]))
    b = (np.full((4, 4, 3), 100, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    ratio = _rng(5).beta(32.0, 32.0)
    image, boxes, labels = mixup(a, b, _rng(5))
    assert image.dtype == np.uint8 and (image == int(200 * ratio + 100 * (1 - ratio))).all()
    assert boxes.shape == (1, 4) and labels.tolist() == [1]


def test_augment_config_round_trip_none_and_validation():
    config = AugmentConfig(mixup=0.2, degrees=10)
    assert AugmentConfig.from_dict(config.to_dict()) == config
    off = AugmentConfig.none()
    assert off.mosaic == off.flip_lr == off.hsv_s == off.scale == 0 and off.affine_is_identity
    with pytest.raises(ConfigError, match="flip_lr"):
        AugmentConfig(flip_lr=1.5)
    with pytest.raises(ConfigError, match="mosaic"):
        AugmentConfig(mosaic=-0.1)
    with pytest.raises(ConfigError, match="scale"):
        AugmentConfig(scale=1.0)
    with pytest.raises(ConfigError, match="mosiac"):
        AugmentConfig.from_dict({"mosiac": 1.0})
