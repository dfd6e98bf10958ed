"""The training dataset: a ``DetectionDataset`` with YOLOv6-style augmentation, reproducible per (seed, epoch, index).

Pipeline of one item (YOLOv6 ``TrainValDataset.__getitem__``, https://github.com/meituan/YOLOv6):

- mosaic (probability ``augment.mosaic``, only while ``set_epoch(..., mosaic=True)``): the item and 3 random
  others on a ``2 * img_size`` canvas, ``random_affine`` crops it back to ``img_size``, then mixup with a second
  mosaic (probability ``augment.mixup``);
- otherwise: ``letterbox(image, img_size, border=border)`` (exactly the inference pre-processing), then
  ``random_affine`` when any affine range is non-zero;
- then HSV jitter, up-down flip and left-right flip.

Every random draw comes from ``np.random.default_rng([seed, epoch, index])``: the same (seed, epoch, index) gives
byte-identical output in any process, so ``--resume`` and DataLoader workers reproduce an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...errors import ConfigError
from ..preprocess import letterbox
from .augment import AugmentConfig, flip_lr, flip_ud, hsv_jitter, load_mosaic, mixup, random_affine
from .datasets import DetectionDataset

__all__ = ["TrainDetectionDataset", "train_collate"]

Item = tuple[np.ndarray, np.ndarray, np.ndarray]


class TrainDetectionDataset(torch.utils.data.Dataset):
    """Augmented, fixed-size training items of a ``DetectionDataset``.

    Args:
        dataset: the source dataset (items ``(image, boxes, labels)``).
        img_size: side of the square output images.
        augment: augmentation strengths; ``None`` (or ``AugmentConfig.none()``) gives the plain letterbox.
        seed: base seed of every random draw (non-negative).
        border: gray-border width of the letterbox (``preprocess.letterbox``), for non-mosaic items.

    Call ``set_epoch`` before each epoch. DataLoader workers get a copy of the dataset when an epoch's iterator
    starts, so do not use ``persistent_workers=True`` (the workers would keep the old epoch).

    Example:
        >>> train = TrainDetectionDataset(CocoDetection(images, annotations), 320, AugmentConfig(), seed=0)
        >>> loader = DataLoader(train, batch_size=16, shuffle=True, collate_fn=train_collate, num_workers=2)
        >>> for epoch in range(epochs):
        ...     train.set_epoch(epoch, mosaic=epoch < epochs - 15)
        ...     for images, targets in loader: ...
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        img_size: int,
        augment: AugmentConfig | None = None,
        *,
        seed: int = 0,
        border: int = 0,
    ) -> None:
        if img_size < 1 or border < 0 or img_size - 2 * border < 1:
            raise ConfigError(f"img_size {img_size} with border {border} leaves no room for the image")
        if seed < 0:
            raise ConfigError(f"seed must be non-negative, got {seed}")
        self.dataset = dataset
        self.img_size = img_size
        self.augment = augment
        self.seed = seed
        self.border = border
        self.epoch = 0
        self.mosaic_enabled = True

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        """Select the epoch (a new draw for every item); ``mosaic=False`` turns mosaic off (the final "fade")."""
        if epoch < 0:
            raise ConfigError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch
        self.mosaic_enabled = mosaic

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug = self.augment
        if aug is None:
            return self._letterbox(index)
        if self.mosaic_enabled and rng.random() < aug.mosaic:
            image, boxes, labels = self._mosaic(index, rng)
            if rng.random() < aug.mixup:
                other = self._mosaic(int(rng.integers(len(self))), rng)
                image, boxes, labels = mixup((image, boxes, labels), other, rng)
        else:
            image, boxes, labels = self._letterbox(index)
            if not aug.affine_is_identity:
                image, boxes, labels = self._affine(image, boxes, labels, rng)
        image = hsv_jitter(image, aug.hsv_h, aug.hsv_s, aug.hsv_v, rng)
        if rng.random() < aug.flip_ud:
            image, boxes = flip_ud(image, boxes)
        if rng.random() < aug.flip_lr:
            image, boxes = flip_lr(image, boxes)
        return np.ascontiguousarray(image), boxes.astype(np.float32).reshape(-1, 4), labels.astype(np.int64)

    def _letterbox(self, index: int) -> Item:
        """The inference pre-processing, with boxes mapped as ``datasets.collate`` does."""
        image, boxes, labels = self.dataset[index]
        padded, ratio, (pad_w, pad_h) = letterbox(image, self.img_size, border=self.border)
        mapped = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(ratio)
        mapped += np.array([pad_w, pad_h, pad_w, pad_h], np.float32)
        return padded, mapped, np.asarray(labels, np.int64).reshape(-1)

    def _mosaic(self, index: int, rng: np.random.Generator) -> Item:
        """A mosaic of ``index`` and 3 random items (in random quadrants), cropped back to ``img_size``."""
        indices = rng.permutation([index, *rng.integers(0, len(self), 3).tolist()])
        items = [self.dataset[int(i)] for i in indices]
        canvas, boxes, labels = load_mosaic(items, self.img_size, rng)
        return self._affine(canvas, boxes, labels, rng)

    def _affine(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Item:
        aug = self.augment
        return random_affine(
            image,
            boxes,
            labels,
            rng,
            degrees=aug.degrees,
            translate=aug.translate,
            scale=aug.scale,
            shear=aug.shear,
            out_size=self.img_size,
        )


def train_collate(batch: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``TrainDetectionDataset`` items (same contract as ``datasets.collate``, without the letterbox).

    Returns:
        ``(images, targets)``: ``(B, 3, S, S)`` float32 in [0, 1], and ``(N, 6)`` float32 rows
        ``(image_index, class, x1, y1, x2, y2)`` in image pixels.
    """
    images, targets = [], []
    for index, (image, boxes, labels) in enumerate(batch):
        images.append(image)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        column = np.full((len(boxes), 1), index, np.float32)
        targets.append(np.concatenate([column, np.asarray(labels, np.float32).reshape(-1, 1), boxes], axis=1))
    stacked = np.stack(images).transpose(0, 3, 1, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(stacked)).float().div_(255)
    return tensor, torch.from_numpy(np.concatenate(targets, axis=0))
