"""Datasets: COCO / YOLO-txt detection datasets, a letterbox collate, and the synthetic shapes dataset."""

from .augment import AugmentConfig, flip_lr, flip_ud, hsv_jitter, load_mosaic, mixup, random_affine
from .datasets import CocoDetection, DatasetWarning, DetectionDataset, YoloTxtDetection, collate, write_yolo_labels
from .synth import SHAPES, SynthConfig, SynthReport, synthesize_dataset
from .train_dataset import TrainDetectionDataset, train_collate

__all__ = [
    "CocoDetection",
    "DatasetWarning",
    "DetectionDataset",
    "YoloTxtDetection",
    "collate",
    "write_yolo_labels",
    "SHAPES",
    "SynthConfig",
    "SynthReport",
    "synthesize_dataset",
    "AugmentConfig",
    "hsv_jitter",
    "flip_lr",
    "flip_ud",
    "random_affine",
    "load_mosaic",
    "mixup",
    "TrainDetectionDataset",
    "train_collate",
]
