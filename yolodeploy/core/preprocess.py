"""Image pre-processing shared by every backend: load, letterbox, batch, and map boxes back (pure functions).

The letterbox follows the official YOLOv5/v6/v7 ``letterbox``: scale the image to fit the target keeping its
aspect ratio, then pad it with gray (114) to the target, centred. Two options from the official code:

- ``stride``: pad only up to the next multiple of ``stride`` (the "minimum rectangle" of rectangular inference)
  instead of the full target.
- ``border``: the YOLOv6 v3.0 paper's gray-border option (Sec. "Gray border of images"): fit the image into
  ``new_shape - 2 * border`` and pad the rest, so that a gray frame of at least ``border`` pixels surrounds it.

Resizing uses Pillow's bilinear filter (OpenCV's ``INTER_LINEAR``, which the official code uses, differs by a few
grey levels on downscaling because Pillow filters over the whole footprint).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ..errors import ImageError

__all__ = [
    "letterbox", "load_image", "check_image_batch", "to_tensor_batch", "scale_boxes_back", "IMAGE_SUFFIXES",
    "list_images", "square_side", "PIXEL_SCALE", "is_uint8_image_input", "image_hw", "image_batch",
    "random_image_batch",
]  # fmt: skip

#: The float32 factor that maps a uint8 pixel to [0, 1].
PIXEL_SCALE = np.float32(1 / 255)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def square_side(size: int | Sequence[int] | None) -> int | None:
    """The side of the square letterbox for a model's ``input_size`` (an int or (H, W)): the larger side; None
    when the model does not say."""
    if not size:
        return None
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return int(max(height, width))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ImageError(f"expected an HWC RGB uint8 image, got shape {shape} dtype {dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"empty image of shape {image.shape}")


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int] = (640, 640),
    color: int | tuple[int, int, int] = 114,
    border: int = 0,
    stride: int | None = None,
    scaleup: bool = True,
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize ``image`` keeping its aspect ratio and pad it to ``new_shape``.

    Args:
        image: HWC uint8 RGB array.
        new_shape: target ``(height, width)`` (or one int for a square).
        color: pad value (one gray level or an RGB triple).
        border: minimum gray frame in pixels on every side (the image is fitted into ``new_shape - 2*border``).
        stride: if set, pad only to the next multiple of ``stride`` (minimum rectangle) instead of ``new_shape``.
        scaleup: allow enlarging small images (``False``: only shrink, as for evaluation of small inputs).

    Returns:
        ``(padded, ratio, (pad_w, pad_h))``: the padded image, the resize ratio (same on both axes) and the
        left/top padding in pixels. A point ``p`` of the original maps to ``p * ratio + pad``.

    Example:
        >>> padded, ratio, pad = letterbox(np.zeros((480, 640, 3), np.uint8), 640)
        >>> padded.shape, ratio, pad
        ((640, 640, 3), 1.0, (0.0, 80.0))
    """
    _check_image(image)
    target_h, target_w = (new_shape, new_shape) if isinstance(new_shape, int) else tuple(new_shape)
    inner_h, inner_w = target_h - 2 * border, target_w - 2 * border
    if border < 0 or inner_h <= 0 or inner_w <= 0:
        raise ImageError(f"border {border} leaves no room inside {target_h}x{target_w}")
    height, width = image.shape[:2]
    ratio = min(inner_h / height, inner_w / width)
    if not scaleup:
        ratio = min(ratio, 1.0)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    if stride:
        out_h = math.ceil((new_h + 2 * border) / stride) * stride
        out_w = math.ceil((new_w + 2 * border) / stride) * stride
    else:
        out_h, out_w = target_h, target_w
    if (new_w, new_h) != (width, height):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    padded = np.empty((out_h, out_w, 3), dtype=np.uint8)
    padded[...] = np.asarray(color, dtype=np.uint8)
    padded[top : top + new_h, left : left + new_w] = image
    return padded, ratio, (float(left), float(top))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HWC uint8 RGB array (EXIF orientation applied; gray, RGBA, palette -> RGB).

    Raises:
        ImageError: the file is missing or not an image Pillow can decode.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"no such image file: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}; is it a valid JPEG/PNG/BMP/WebP file?") from None


def list_images(directory: str | os.PathLike) -> list[str]:
    """Image files (by suffix) directly inside ``directory``, sorted.

    Raises:
        ImageError: the folder does not exist or holds no image file.
    """
    if not os.path.isdir(directory):
        raise ImageError(f"no such image folder: {directory}")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise ImageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return [os.path.join(directory, name) for name in names]


def check_image_batch(images: Sequence[np.ndarray]) -> None:
    """Raise ``ImageError`` unless ``images`` are one or more HWC uint8 RGB images of one size."""
    if len(images) == 0:
        raise ImageError("an image batch needs at least one image")
    for image in images:
        _check_image(image)
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ImageError(f"images of a batch must share one size (letterbox them first), got {sorted(shapes)}")


def to_tensor_batch(images: Sequence[np.ndarray], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Stack same-size HWC uint8 RGB images into a contiguous ``(B, 3, H, W)`` array scaled to [0, 1]."""
    check_image_batch(images)
    batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    batch *= PIXEL_SCALE
    return np.ascontiguousarray(batch, dtype=dtype)


def is_uint8_image_input(dtype: np.dtype | type) -> bool:
    """True for a model whose image input is raw uint8 ``(B, H, W, 3)`` (``deploy.image_input.uint8_image_input``)."""
    return np.dtype(dtype) == np.uint8


def image_hw(shape: Sequence, dtype: np.dtype | type) -> tuple:
    """The ``(H, W)`` dims of an image input's shape: ``(B, H, W, 3)`` for uint8 input, else ``(B, 3, H, W)``."""
    return tuple(shape[1:3]) if is_uint8_image_input(dtype) else tuple(shape[2:4])


def image_batch(images: Sequence[np.ndarray], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Same-size letterboxed HWC uint8 RGB images as the model input of ``dtype``: stacked as they are for uint8
    input, else ``to_tensor_batch`` (channels-first, scaled to [0, 1])."""
    if not is_uint8_image_input(dtype):
        return to_tensor_batch(images, dtype=dtype)
    check_image_batch(images)
    return np.ascontiguousarray(np.stack(images))


def random_image_batch(
    batch: int, size: int | Sequence[int], dtype: np.dtype | type = np.float32, seed: int = 0
) -> np.ndarray:
    """Random pixels as the model input of ``dtype`` (see :func:`image_batch`); ``size`` is the side of a square
    image or ``(H, W)``. The same ``seed`` gives the same pixels in every format, so a uint8-input model and a
    float one see the same image."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    return image_batch(list(pixels), dtype)


def scale_boxes_back(
    boxes: np.ndarray,
    ratio: float,
    pad: tuple[float, float],
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Map xyxy boxes from letterboxed-image pixels back to the original image (inverse of ``letterbox``).

    Args:
        boxes: ``(..., 4)`` xyxy in the letterboxed image.
        ratio, pad: what ``letterbox`` returned for that image.
        image_shape: the original ``(height, width)``; if given, boxes are clipped to it.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    pad_w, pad_h = pad
    out = (boxes - np.array([pad_w, pad_h, pad_w, pad_h], dtype=np.float32)) / np.float32(ratio)
    if image_shape is not None:
        height, width = image_shape
        out[..., 0::2] = out[..., 0::2].clip(0, width)
        out[..., 1::2] = out[..., 1::2].clip(0, height)
    return out
