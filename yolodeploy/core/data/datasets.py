"""Detection datasets (COCO JSON and YOLO txt) and a letterbox ``collate`` for ``torch.utils.data.DataLoader``.

Both datasets yield ``(image, boxes, labels)``: an HWC RGB uint8 array (EXIF-rotated; gray/RGBA converted by
``preprocess.load_image``), ``(n, 4)`` float32 xyxy boxes in pixels and ``(n,)`` int64 contiguous class indices.

Bad input policy (each problem counted in ``dataset.issues`` and reported in one ``DatasetWarning``):

- a folder with no images, or an annotation file that is unreadable / not COCO: ``DatasetError`` (stop);
- boxes reaching outside the image: clipped to it; boxes of zero area (after clipping): dropped;
- unknown category / class ids, annotations of unknown images, malformed YOLO lines: dropped;
- zero-size, missing or unreadable image files: skipped. Files whose header is bad are skipped when the dataset
  is built; a file that only fails when decoded is skipped in ``__getitem__``, which warns and returns the next
  readable image instead (so a DataLoader never crashes on it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DatasetError, ImageError
from ..preprocess import IMAGE_SUFFIXES, letterbox, load_image

__all__ = ["DatasetWarning", "DetectionDataset", "CocoDetection", "YoloTxtDetection", "collate", "write_yolo_labels"]


class DatasetWarning(UserWarning):
    """Dataset problems that were repaired or skipped (clipped boxes, dropped annotations, unreadable images)."""


@dataclass
class _Record:
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32 xyxy pixels
    labels: np.ndarray  # (n,) int64


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file header (EXIF rotation applied), or None if it cannot be read."""
    from PIL import Image

    try:
        if path.stat().st_size == 0:
            return None
        with Image.open(path) as img:
            width, height = img.size
            if _has_rotation(img):  # EXIF orientations 5-8 swap width and height (as load_image's transpose)
                width, height = height, width
    except (OSError, SyntaxError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _has_rotation(img) -> bool:
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001  (a broken EXIF block is simply not a rotation)
        return False


def _clip_boxes(boxes: np.ndarray, width: int, height: int, issues: Counter) -> np.ndarray:
    """Clip xyxy boxes to the image and return the keep mask (zero-area boxes dropped, both counted)."""
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    issues["boxes clipped to the image"] += int(((np.abs(clipped - boxes) > 1e-3).any(axis=1) & keep).sum())
    issues["zero-area boxes dropped"] += int((~keep).sum())
    boxes[:] = clipped
    return keep


class DetectionDataset:
    """Base of the datasets: a list of records (image path, size, boxes, labels) and the bad-input bookkeeping.

    Attributes:
        class_names: one name per contiguous class index.
        category_ids: the source category id of each contiguous index (COCO ids; for YOLO txt, the index).
        issues: counts of repaired or skipped problems, by kind.
    """

    def __init__(self) -> None:
        self.records: list[_Record] = []
        self.class_names: list[str] = []
        self.category_ids: list[int] = []
        self.issues: Counter = Counter()

    @property
    def category_to_label(self) -> dict[int, int]:
        """Source category id -> contiguous class index."""
        return {cat: index for index, cat in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        for attempt in range(len(self.records)):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                image = load_image(record.path)
            except ImageError as exc:
                self.issues["unreadable images skipped"] += 1
                warnings.warn(f"skipping unreadable image: {exc}", DatasetWarning, stacklevel=2)
                continue
            boxes, labels = record.boxes.copy(), record.labels.copy()
            height, width = image.shape[:2]
            if (width, height) != (record.width, record.height):  # header size was wrong: clip to the real one
                keep = _clip_boxes(boxes, width, height, self.issues)
                boxes, labels = boxes[keep], labels[keep]
            return image, boxes, labels
        raise DatasetError(f"none of the {len(self.records)} images of the dataset can be read")

    def _finish(self, source: str) -> None:
        """Raise if nothing usable is left; otherwise warn once about what was repaired or skipped."""
        if not self.records:
            raise DatasetError(f"no readable images in {source}; check the path (expected {', '.join(IMAGE_SUFFIXES)})")
        problems = {kind: count for kind, count in self.issues.items() if count}
        if problems:
            text = ", ".join(f"{count} {kind}" for kind, count in sorted(problems.items()))
            warnings.warn(f"{source}: {text}", DatasetWarning, stacklevel=3)


class CocoDetection(DetectionDataset):
    """A COCO-format detection dataset: an image folder and an ``instances_*.json`` file.

    Category ids are mapped to contiguous indices in increasing id order (``category_ids`` keeps the map).
    Crowd annotations (``iscrowd=1``) are ignored, as in COCO training.

    Args:
        image_dir: folder holding the ``file_name`` of every image entry.
        annotation_file: COCO instances JSON.

    Raises:
        DatasetError: the JSON is unreadable or not COCO, or no listed image can be read.

    Example:
        >>> data = CocoDetection("synth/images/val", "synth/annotations/instances_val.json")
        >>> image, boxes, labels = data[0]
    """

    def __init__(self, image_dir: str | os.PathLike, annotation_file: str | os.PathLike) -> None:
        super().__init__()
        image_dir, annotation_file = Path(image_dir), Path(annotation_file)
        coco = self._read_json(annotation_file)
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in categories]
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        by_image: dict[int, list[dict]] = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        known_images = {entry.get("id") for entry in coco["images"]}
        self.issues["annotations of unknown images dropped"] += sum(
            len(anns) for image_id, anns in by_image.items() if image_id not in known_images
        )
        for entry in coco["images"]:
            path = image_dir / str(entry.get("file_name", ""))
            size = _image_size(path) if path.is_file() else None
            if size is None:
                self.issues["missing, empty or unreadable images skipped"] += 1
                continue
            boxes, labels = self._parse_annotations(by_image.get(entry.get("id"), []))
            keep = _clip_boxes(boxes, *size, self.issues)
            self.records.append(_Record(path, size[0], size[1], boxes[keep], labels[keep]))
        self._finish(f"{annotation_file} ({image_dir})")

    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            coco = json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(f"no such annotation file: {path}") from None
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read annotation file {path}: {exc}") from None
        if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
            raise DatasetError(f"{path} is not a COCO instances file (no 'images' list)")
        if not coco["images"]:
            raise DatasetError(f"no images listed in {path}")
        return coco

    def _parse_annotations(self, annotations: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        lookup = self.category_to_label
        boxes, labels = [], []
        for ann in annotations:
            if ann.get("iscrowd", 0):
                continue
            if ann.get("category_id") not in lookup:
                self.issues["annotations with unknown category ids dropped"] += 1
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                self.issues["annotations without a valid bbox dropped"] += 1
                continue
            x, y, w, h = (float(v) for v in bbox)
            boxes.append([x, y, x + w, y + h])
            labels.append(lookup[ann["category_id"]])
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


class YoloTxtDetection(DetectionDataset):
    """A YOLO txt detection dataset: ``images/NAME.jpg`` with ``labels/NAME.txt`` lines ``class cx cy w h``.

    Coordinates are normalized to [0, 1]. An image without a label file has no objects.

    Args:
        image_dir: folder of images.
        label_dir: folder of ``.txt`` files named after the images.
        class_names: the class names; class ids outside ``range(len(class_names))`` are dropped. Without them the
            classes are ``0..max id`` found in the labels.

    Raises:
        DatasetError: no readable image in ``image_dir``.

    Example:
        >>> data = YoloTxtDetection("yolo/images", "yolo/labels", class_names=["circle", "square"])
    """

    def __init__(
        self, image_dir: str | os.PathLike, label_dir: str | os.PathLike, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        image_dir, label_dir = Path(image_dir), Path(label_dir)
        paths = (
            sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if image_dir.is_dir() else []
        )
        parsed = [(path, self._read_labels(label_dir / f"{path.stem}.txt")) for path in paths]
        if class_names is None:
            top = max((int(labels.max()) for _, (_, labels) in parsed if len(labels)), default=-1)
            class_names = [str(i) for i in range(top + 1)]
        self.class_names = list(class_names)
        self.category_ids = list(range(len(self.class_names)))
        for path, (boxes, labels) in parsed:
            size = _image_size(path)
            if size is None:
                self.issues["missing, empty or unreadable images skipped"] += 1
                continue
            known = (labels >= 0) & (labels < len(self.class_names))
            self.issues["annotations with unknown category ids dropped"] += int((~known).sum())
            boxes, labels = boxes[known] * np.array([*size, *size], np.float32), labels[known]
            keep = _clip_boxes(boxes, *size, self.issues)
            self.records.append(_Record(path, size[0], size[1], boxes[keep], labels[keep]))
        self._finish(str(image_dir))

    def _read_labels(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Normalized xyxy boxes and class ids of one label file (malformed lines dropped and counted)."""
        boxes, labels = [], []
        if path.is_file():
            for line in path.read_text().splitlines():
                fields = line.split()
                if not fields:
                    continue
                try:
                    cls, cx, cy, w, h = int(float(fields[0])), *map(float, fields[1:5])
                    if len(fields) != 5:
                        raise ValueError
                except ValueError:
                    self.issues["malformed label lines dropped"] += 1
                    continue
                boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                labels.append(cls)
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def write_yolo_labels(dataset: DetectionDataset, label_dir: str | os.PathLike) -> Path:
    """Write the boxes of ``dataset`` as YOLO txt files (one per image, named after it) into ``label_dir``.

    Example:
        >>> write_yolo_labels(CocoDetection("synth/images/val", "synth/annotations/instances_val.json"), "labels")
    """
    label_dir = Path(label_dir)
    label_dir.mkdir(parents=True, exist_ok=True)
    for record in dataset.records:
        scale = np.array([record.width, record.height], np.float32)
        centers = (record.boxes[:, :2] + record.boxes[:, 2:]) / 2 / scale
        sizes = (record.boxes[:, 2:] - record.boxes[:, :2]) / scale
        lines = [
            f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"
            for label, (cx, cy), (w, h) in zip(record.labels.tolist(), centers.tolist(), sizes.tolist())
        ]
        (label_dir / f"{record.path.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    return label_dir


def collate(
    batch: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], img_size: int | tuple[int, int] = 640, border: int = 0
):
    """Letterbox and stack dataset items for a DataLoader (use ``functools.partial`` to set ``img_size``).

    Args:
        batch: ``(image, boxes, labels)`` items of a dataset.
        img_size: letterbox target (``preprocess.letterbox``'s ``new_shape``).
        border: gray-border width of ``preprocess.letterbox``.

    Returns:
        ``(images, targets)``: ``(B, 3, H, W)`` float32 in [0, 1], and ``(N, 6)`` float32 rows
        ``(image_index, class, x1, y1, x2, y2)`` in letterboxed pixels.

    Example:
        >>> loader = DataLoader(dataset, batch_size=8, collate_fn=functools.partial(collate, img_size=320))
    """
    import torch

    images, targets = [], []
    for index, (image, boxes, labels) in enumerate(batch):
        padded, ratio, (pad_w, pad_h) = letterbox(image, img_size, border=border)
        images.append(padded)
        mapped = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(ratio)
        mapped += np.array([pad_w, pad_h, pad_w, pad_h], np.float32)
        column = np.full((len(mapped), 1), index, np.float32)
        targets.append(np.concatenate([column, np.asarray(labels, np.float32).reshape(-1, 1), mapped], axis=1))
    stacked = np.stack(images).transpose(0, 3, 1, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(stacked)).float().div_(255)
    return tensor, torch.from_numpy(np.concatenate(targets, axis=0))
