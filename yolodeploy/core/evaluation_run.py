"""End-to-end COCO evaluation of a model on a dataset split, identical for every backend.

Every backend sees the same input (``letterbox`` + ``image_batch``: float NCHW, or the pixels themselves for a
uint8-input export) and its raw ``(B, N, 4 + C)`` output goes
through the same ``postprocess_predictions`` (``batched_nms``) and ``detections_to_coco_json``; pycocotools
(``evaluate_coco``) computes the metrics. Models with an NMS tail are refused: their NMS would differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .evaluate import COCOMetrics, detections_to_coco_json, evaluate_coco, postprocess_predictions
from .preprocess import image_batch, letterbox

__all__ = ["EvalConfig", "EvalResult", "evaluate_model", "resolve_split"]

INPUT_NAME = "images"
OUTPUT_NAME = "outputs"


@dataclasses.dataclass(kw_only=True)
class EvalConfig:
    """What to evaluate and how.

    ``data`` is a dataset root (``images/<split>`` + ``annotations/instances_<split>.json``, as written by
    ``yolodeploy data synth``); ``annotation_file``/``image_dir`` override the two paths.
    """

    model: str
    data: str | None = None
    split: str = "val"
    annotation_file: str | None = None
    image_dir: str | None = None
    backend: str = "auto"
    img_size: int = 320
    border: int = 0
    batch: int = 8
    conf: float = 0.001
    iou: float = 0.65
    max_det: int = 300

    def __post_init__(self) -> None:
        if self.img_size <= 0 or self.img_size % 32:
            raise ConfigError(f"--img must be a positive multiple of 32, got {self.img_size}")
        if not 0 <= self.border < self.img_size // 2:
            raise ConfigError(f"--border must be in [0, img/2), got {self.border}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")
        if not 0 <= self.conf <= 1 or not 0 <= self.iou <= 1:
            raise ConfigError(f"--conf and --iou must lie in [0, 1], got {self.conf} and {self.iou}")
        if self.max_det < 1:
            raise ConfigError(f"--max-det must be >= 1, got {self.max_det}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class EvalResult:
    """Metrics, the config that produced them, the backend used, image count and timing."""

    metrics: COCOMetrics
    config: EvalConfig
    backend: str
    images: int
    detections: list[dict]
    seconds: float
    infer_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics.to_dict(),
            "config": self.config.to_dict(),
            "backend": self.backend,
            "images": self.images,
            "num_detections": len(self.detections),
            "seconds": round(self.seconds, 3),
            "infer_seconds": round(self.infer_seconds, 3),
        }

    def lines(self) -> list[str]:
        m = self.metrics
        rows = [
            ("AP", m.ap),
            ("AP50", m.ap50),
            ("AP75", m.ap75),
            ("APs", m.ap_small),
            ("APm", m.ap_medium),
            ("APl", m.ap_large),
        ]
        head = f"{self.images} images, backend {self.backend}, {len(self.detections)} detections, {self.seconds:.1f} s"
        return [head] + [f"{name:<5} {value:.4f}" for name, value in rows]

    def save(self, path: str | os.PathLike) -> Path:
        from ..utils.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)


def resolve_split(config: EvalConfig) -> tuple[Path, Path]:
    """``(image_dir, annotation_file)`` of the configured split; DatasetError if either is missing."""
    if config.data is None and (config.annotation_file is None or config.image_dir is None):
        raise ConfigError("give a dataset root (--data) or both an annotation file and an image folder")
    root = Path(config.data) if config.data is not None else None
    if root is not None and not root.is_dir():
        raise DatasetError(f"--data {root}: no such directory")
    ann = (
        Path(config.annotation_file)
        if config.annotation_file
        else root / "annotations" / f"instances_{config.split}.json"
    )
    images = Path(config.image_dir) if config.image_dir else root / "images" / config.split
    if not ann.is_file():
        raise DatasetError(f"no annotation file {ann} (split {config.split!r}); is this a COCO-format dataset root?")
    if not images.is_dir():
        raise DatasetError(f"no image folder {images} (split {config.split!r})")
    return images, ann


def _check_raw_output(runner, label: str) -> None:
    names = list(runner.output_names())
    if names != [OUTPUT_NAME]:
        raise ConfigError(
            f"{label} has outputs {names} (an NMS tail?); evaluation needs the raw (B, N, 4 + C) output "
            f"'{OUTPUT_NAME}': export without --nms"
        )


def _load_torch_model(name_or_path: str, num_classes: int):
    """A checkpoint, or a registry name built for ``num_classes`` with verification-random weights."""
    import torch

    from ..models import create_model, is_model

    if not Path(name_or_path).exists() and is_model(name_or_path):
        from .init import randomize_for_verification_

        torch.manual_seed(0)
        return randomize_for_verification_(create_model(name_or_path, num_classes=num_classes), 0).eval()
    from ..deploy.export import load_model_source

    return load_model_source(name_or_path)


def _open_runner(config: EvalConfig, model, num_classes: int):
    from ..deploy.runners import Backend, create_runner, detect_backend

    source = model if model is not None else config.model
    if model is None:
        path = Path(config.model)
        suffix = path.suffix.lower()
        if not path.exists() and suffix in (".onnx", ".engine", ".plan", ".xml", ".safetensors", ".pt", ".pth"):
            raise ConfigError(f"{config.model}: no such model file")
        chosen = Backend.parse(config.backend) if config.backend != "auto" else None
        if chosen is None:
            chosen = detect_backend(path) if path.exists() else Backend.TORCH
        if chosen == Backend.TORCH and (not path.exists() or suffix not in (".onnx", ".engine", ".plan")):
            source = _load_torch_model(config.model, num_classes)
        backend = chosen
    else:
        backend = config.backend
    return create_runner(source, backend)


def _batch_size(runner, wanted: int) -> int:
    shape = runner.input_metadata()[INPUT_NAME].shape
    return shape[0] if isinstance(shape[0], int) else wanted


def evaluate_model(config: EvalConfig, *, model=None, runner=None) -> EvalResult:
    """Run ``config.model`` (or ``model``, an ``nn.Module``, or an open-able ``runner``) over a dataset split and
    compute COCO metrics.

    Raises:
        DatasetError: missing/empty split. ConfigError: a model with an NMS tail, bad options.
    """
    from .data.datasets import CocoDetection

    start = time.perf_counter()
    image_dir, ann_file = resolve_split(config)
    dataset = CocoDetection(image_dir, ann_file)
    coco = json.loads(ann_file.read_text())
    id_by_path = {(image_dir / str(e.get("file_name", ""))).resolve(): int(e["id"]) for e in coco["images"]}
    image_ids = [id_by_path[record.path.resolve()] for record in dataset.records]
    if runner is None:
        runner = _open_runner(config, model, len(dataset.category_ids))
    per_image: list[tuple[int, Any, Any, Any]] = []
    infer_seconds = 0.0
    with runner:
        _check_raw_output(runner, config.model)
        dtype = runner.input_metadata()[INPUT_NAME].dtype
        batch = _batch_size(runner, config.batch)
        for first in range(0, len(dataset), batch):
            indices = list(range(first, min(first + batch, len(dataset))))
            padded, ratios, pads, shapes = [], [], [], []
            for index in indices:
                image = dataset[index][0]
                boxed, ratio, pad = letterbox(image, config.img_size, border=config.border, scaleup=True)
                padded.append(boxed)
                ratios.append(ratio)
                pads.append(pad)
                shapes.append(image.shape[:2])
            while len(padded) < batch and isinstance(runner.input_metadata()[INPUT_NAME].shape[0], int):
                padded.append(padded[-1])  # a fixed-batch model: fill the last batch, drop the extras below
            tick = time.perf_counter()
            raw = runner.infer({INPUT_NAME: image_batch(padded, dtype=dtype)})[OUTPUT_NAME]
            infer_seconds += time.perf_counter() - tick
            raw = np.asarray(raw, dtype=np.float32)[: len(indices)]
            dets = postprocess_predictions(
                raw, conf=config.conf, iou=config.iou, max_det=config.max_det, ratios=ratios, pads=pads,
                image_shapes=shapes,
            )  # fmt: skip
            for index, det in zip(indices, dets):
                per_image.append((image_ids[index], det.boxes, det.scores, det.labels))
        backend = type(runner).__name__
    detections = detections_to_coco_json(per_image, dataset.category_ids)
    metrics = evaluate_coco(coco, detections)
    return EvalResult(metrics, config, backend, len(dataset), detections, time.perf_counter() - start, infer_seconds)
