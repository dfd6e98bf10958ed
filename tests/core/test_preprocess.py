"""Pre-processing: letterbox geometry on hand-computed sizes, image loading, batching, boxes mapped back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from yolodeploy.core.preprocess import letterbox, list_images, load_image, scale_boxes_back, to_tensor_batch
from yolodeploy.errors import ImageError, YoloDeployError


def rgb(height: int, width: int, value: int = 200) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


@pytest.mark.parametrize(
    ("hw", "kwargs", "out_shape", "ratio", "pad"),
    [
        # 480x640 into 640: ratio min(640/480, 640/640) = 1, 160 rows of padding split 80/80
        ((480, 640), {}, (640, 640), 1.0, (0.0, 80.0)),
        # 300x200 into 640: ratio 640/300 = 2.1333, width round(426.67) = 427, 213 columns split 106/107
        ((300, 200), {}, (640, 640), 640 / 300, (106.0, 0.0)),
        # no scale-up: ratio 1, 440 columns split 220/220, 340 rows split 170/170
        ((300, 200), {"scaleup": False}, (640, 640), 1.0, (220.0, 170.0)),
        # gray border 32: fit into 576x576, ratio min(576/480, 576/640) = 0.9 -> 576x432, pads 32 and 104
        ((480, 640), {"border": 32}, (640, 640), 0.9, (32.0, 104.0)),
        # minimum rectangle: 640x480 is already a multiple of 32 -> no padding at all
        ((480, 640), {"stride": 32}, (480, 640), 1.0, (0.0, 0.0)),
        # minimum rectangle: width 427 -> 448 (14 * 32), 21 columns split 10/11
        ((300, 200), {"stride": 32}, (640, 448), 640 / 300, (10.0, 0.0)),
        # rectangular target (h, w) = (320, 640): ratio min(320/480, 640/640) -> 427x320, pad (106, 0)
        ((480, 640), {"new_shape": (320, 640)}, (320, 640), 320 / 480, (106.0, 0.0)),
    ],
)
def test_letterbox_geometry(hw, kwargs, out_shape, ratio, pad):
    kwargs = {"new_shape": 640, **kwargs}
    image = rgb(*hw)
    padded, got_ratio, got_pad = letterbox(image, **kwargs)
    assert padded.shape == (*out_shape, 3) and padded.dtype == np.uint8
    assert got_ratio == pytest.approx(ratio)
    assert got_pad == pad
    # the image sits at (pad_w, pad_h), gray everywhere else
    left, top = int(pad[0]), int(pad[1])
    new_w, new_h = round(hw[1] * got_ratio), round(hw[0] * got_ratio)
    assert (padded[top : top + new_h, left : left + new_w] == 200).all()
    mask = np.ones(out_shape, bool)
    mask[top : top + new_h, left : left + new_w] = False
    assert (padded[mask] == 114).all()


def test_letterbox_color_and_identity():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    padded, ratio, pad = letterbox(image, 64)
    assert ratio == 1.0 and pad == (0.0, 0.0) and np.array_equal(padded, image)
    padded, _, _ = letterbox(rgb(32, 64), 64, color=(1, 2, 3))
    assert padded[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)]
)
def test_letterbox_refuses_non_rgb_uint8(bad):
    with pytest.raises(ImageError, match="HWC RGB uint8"):
        letterbox(bad, 64)


def test_letterbox_border_too_wide():
    with pytest.raises(ImageError, match="border"):
        letterbox(rgb(10, 10), 64, border=32)


def test_scale_boxes_back_inverts_letterbox():
    _, ratio, pad = letterbox(rgb(300, 200), 640)
    original = np.array([[10.0, 20.0, 150.0, 290.0]])
    in_letterbox = original * ratio + np.array([pad[0], pad[1], pad[0], pad[1]])
    np.testing.assert_allclose(scale_boxes_back(in_letterbox, ratio, pad), original, rtol=1e-5)
    clipped = scale_boxes_back(np.array([[0.0, 0.0, 640.0, 640.0]]), ratio, pad, image_shape=(300, 200))
    np.testing.assert_allclose(clipped, [[0, 0, 200, 300]], rtol=1e-6)


def test_to_tensor_batch():
    batch = to_tensor_batch([rgb(4, 6, 255), rgb(4, 6, 0)])
    assert batch.shape == (2, 3, 4, 6) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert batch[0].min() == 1.0 and batch[1].max() == 0.0
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255  # red channel first (RGB)
    assert to_tensor_batch([image])[0, 0].min() == 1.0 and to_tensor_batch([image])[0, 1].max() == 0.0
    assert to_tensor_batch([image], dtype=np.float16).dtype == np.float16
    with pytest.raises(ImageError, match="share one size"):
        to_tensor_batch([rgb(4, 6), rgb(6, 4)])


def test_load_image_modes_and_exif(tmp_path):
    Image.new("L", (5, 3), 77).save(tmp_path / "gray.png")
    Image.new("RGBA", (5, 3), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    gray, rgba = load_image(tmp_path / "gray.png"), load_image(tmp_path / "rgba.png")
    assert gray.shape == (3, 5, 3) and gray.dtype == np.uint8 and (gray == 77).all()
    assert rgba.shape == (3, 5, 3) and rgba[0, 0].tolist() == [10, 20, 30]
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 5x3 (w x h) file shows as 3x5
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (5, 3), (0, 0, 255)).save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (5, 3, 3)


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(YoloDeployError, match="cannot read image"):
        load_image(tmp_path / "bad.jpg")


def test_list_images(tmp_path):
    with pytest.raises(ImageError, match="no such image folder"):
        list_images(tmp_path / "nope")
    with pytest.raises(ImageError, match="no image files"):
        list_images(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "b.PNG")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.rsplit("/", 1)[-1] for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
