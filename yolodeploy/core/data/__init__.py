"""Datasets: COCO / YOLO-txt detection datasets, a letterbox collate, and the synthetic shapes dataset."""

from .datasets import CocoDetection, DatasetWarning, DetectionDataset, YoloTxtDetection, collate, write_yolo_labels
from .synth import SHAPES, SynthConfig, SynthReport, synthesize_dataset

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
]
