"""TrainDetectionDataset on a tiny synthetic dataset: plain letterbox = collate, determinism, fade, empty images."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from yolodeploy.core.data.augment import AugmentConfig
from yolodeploy.core.data.datasets import CocoDetection, DetectionDataset, collate
from yolodeploy.core.data.synth import synthesize_dataset
from yolodeploy.core.data.train_dataset import TrainDetectionDataset, train_collate
from yolodeploy.errors import ConfigError

SIZE = 64


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    report = synthesize_dataset(
        tmp_path_factory.mktemp("synth") / "d", images=12, classes=3, img_size=96, seed=0, splits=(1.0, 0.0, 0.0)
    )
    return CocoDetection(report.image_dir("train"), report.annotation_file("train"))


class _Items(DetectionDataset):
    """An in-memory dataset of given items (no files)."""

    def __init__(self, items):
        super().__init__()
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _assert_items_equal(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def _check_item(item, size=SIZE):
    image, boxes, labels = item
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4) and labels.dtype == np.int64
    assert (boxes >= 0).all() and (boxes <= size).all() and (boxes[:, 2:] > boxes[:, :2]).all()


@pytest.mark.parametrize("augment", [None, AugmentConfig.none()])
@pytest.mark.parametrize("border", [0, 4])
def test_without_augmentation_equals_collate(coco, augment, border):
    train = TrainDetectionDataset(coco, SIZE, augment, border=border)
    indices = [0, 3, 5]
    got = train_collate([train[i] for i in indices])
    want = collate([coco[i] for i in indices], img_size=SIZE, border=border)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_fade_equals_collate(coco):
    train = TrainDetectionDataset(coco, SIZE, AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, flip_lr=0))
    train.set_epoch(7, mosaic=False)
    got = train_collate([train[i] for i in range(4)])
    want = functools.partial(collate, img_size=SIZE)([coco[i] for i in range(4)])
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, atol=0, rtol=0)


def test_same_seed_epoch_index_is_identical_and_epochs_differ(coco):
    config = AugmentConfig(mixup=0.5, degrees=5, shear=2, flip_ud=0.5)
    first, second = (TrainDetectionDataset(coco, SIZE, config, seed=3) for _ in range(2))
    for epoch in (0, 1):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        for index in (0, 7, 11):
            item = first[index]
            _check_item(item)
            _assert_items_equal(item, second[index])
    second.set_epoch(2)
    assert not np.array_equal(first[4][0], second[4][0])
    other_seed = TrainDetectionDataset(coco, SIZE, config, seed=4)
    other_seed.set_epoch(1)
    assert not np.array_equal(first[4][0], other_seed[4][0])


def test_dataloader_workers_reproduce_the_main_process(coco):
    train = TrainDetectionDataset(coco, SIZE, AugmentConfig(), seed=1)
    train.set_epoch(2)
    loader = torch.utils.data.DataLoader(train, batch_size=3, num_workers=2, collate_fn=train_collate)
    batches = list(loader)
    for start, (images, targets) in zip(range(0, 12, 3), batches):
        want_images, want_targets = train_collate([train[i] for i in range(start, start + 3)])
        torch.testing.assert_close(images, want_images, atol=0, rtol=0)
        torch.testing.assert_close(targets, want_targets, atol=0, rtol=0)


@pytest.mark.parametrize("mosaic", [True, False])
def test_images_without_boxes(mosaic):
    rng = np.random.default_rng(0)
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    items = [(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), *empty) for _ in range(3)]
    config = AugmentConfig(mixup=1.0, degrees=10) if mosaic else AugmentConfig(mosaic=0.0, degrees=10)
    train = TrainDetectionDataset(_Items(items), 32, config)
    for index in range(3):
        _check_item(train[index], 32)
        assert len(train[index][1]) == 0
    images, targets = train_collate([train[0], train[1]])
    assert images.shape == (2, 3, 32, 32) and targets.shape == (0, 6)


def test_mosaic_items_have_boxes_and_full_size(coco):
    train = TrainDetectionDataset(coco, SIZE, AugmentConfig(mosaic=1.0, flip_lr=0.0, hsv_s=0, hsv_v=0, hsv_h=0))
    items = [train[i] for i in range(6)]
    for item in items:
        _check_item(item)
    assert sum(len(item[2]) for item in items) > 6  # mosaics gather the boxes of 4 images


def test_bad_options_raise_config_error(coco):
    with pytest.raises(ConfigError, match="border"):
        TrainDetectionDataset(coco, 16, border=8)
    with pytest.raises(ConfigError, match="seed"):
        TrainDetectionDataset(coco, SIZE, seed=-1)
    with pytest.raises(IndexError):
        TrainDetectionDataset(coco, SIZE)[len(coco)]
