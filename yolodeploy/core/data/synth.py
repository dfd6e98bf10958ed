"""A deterministic synthetic COCO-format detection dataset: textured shapes on textured, cluttered backgrounds.

Each class is one shape (circle, square, triangle, star, ring, cross, diamond, hexagon). Objects vary in scale,
rotation, colour and texture (solid, stripes, noise), may partially occlude each other, and sit among small
un-annotated clutter strokes. Boxes are the tight extent of each drawn shape mask. The same seed gives
byte-identical annotation files and JPEGs (numpy ``default_rng`` seeded per image; Pillow drawing and encoding).

Layout written (atomically: into a temporary folder beside ``out``, renamed at the end)::

    OUT/images/{train,val,calib}/000000.jpg ...
    OUT/annotations/instances_{train,val,calib}.json
    OUT/synth.json   (the SynthConfig that produced it)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DatasetError

__all__ = ["SHAPES", "SPLITS", "SynthConfig", "SynthReport", "synthesize_dataset"]

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
SPLITS = ("train", "val", "calib")


@dataclass(kw_only=True)
class SynthConfig:
    """What ``synthesize_dataset`` draws; round-trips through ``to_dict`` / ``from_dict``."""

    images: int = 300
    classes: int = 4
    img_size: int = 320
    seed: int = 0
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    max_objects: int = 4
    version: int = 1

    def __post_init__(self) -> None:
        self.splits = tuple(float(f) for f in self.splits)
        if not 1 <= self.classes <= len(SHAPES):
            raise DatasetError(
                f"--classes must be between 1 and {len(SHAPES)} ({', '.join(SHAPES)}), got {self.classes}"
            )
        if self.img_size < 32:
            raise DatasetError(f"--img-size must be at least 32 pixels, got {self.img_size}")
        if self.images < 1:
            raise DatasetError(f"--images must be at least 1, got {self.images}")
        if self.max_objects < 1:
            raise DatasetError(f"max_objects must be at least 1, got {self.max_objects}")
        if len(self.splits) != 3 or min(self.splits) < 0 or not math.isclose(sum(self.splits), 1.0, abs_tol=1e-6):
            raise DatasetError(
                f"splits must be 3 non-negative fractions (train, val, calib) summing to 1, got {self.splits}"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "splits": list(self.splits)}

    @classmethod
    def from_dict(cls, data: dict) -> SynthConfig:
        return cls(**data)

    def split_counts(self) -> dict[str, int]:
        """Images per split: rounded fractions, the remainder going to the last split."""
        train = round(self.images * self.splits[0])
        val = min(round(self.images * self.splits[1]), self.images - train)
        return {"train": train, "val": val, "calib": self.images - train - val}


@dataclass
class SynthReport:
    """What was written: the root, image and box counts per split, and boxes per class."""

    root: Path
    config: SynthConfig
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, int] = field(default_factory=dict)
    boxes_per_class: dict[str, int] = field(default_factory=dict)

    def annotation_file(self, split: str) -> Path:
        return self.root / "annotations" / f"instances_{split}.json"

    def image_dir(self, split: str) -> Path:
        return self.root / "images" / split

    def summary(self) -> str:
        parts = ", ".join(f"{split} {self.images[split]}" for split in SPLITS)
        return (
            f"wrote {sum(self.images.values())} images ({parts}) with {sum(self.boxes.values())} boxes of "
            f"{self.config.classes} classes to {self.root}"
        )


def _regular_polygon(sides: int, radius: float, angle: float, aspect: float = 1.0) -> np.ndarray:
    theta = angle + np.arange(sides) * 2 * math.pi / sides
    return np.stack([np.cos(theta) * radius, np.sin(theta) * radius * aspect], axis=1)


def _star(radius: float, angle: float) -> np.ndarray:
    theta = angle + np.arange(10) * math.pi / 5
    r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.42)
    return np.stack([np.cos(theta) * r, np.sin(theta) * r], axis=1)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rot.T


def _cross(radius: float, angle: float) -> np.ndarray:
    a, b = radius, radius * 0.33
    pts = np.array(
        [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    )
    return _rotate(pts, angle)


def _shape_mask(shape: str, size: int, center: tuple[float, float], radius: float, angle: float, rng) -> np.ndarray:
    """A ``(size, size)`` bool mask of one shape."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = center
    if shape in ("circle", "ring"):
        aspect = rng.uniform(0.75, 1.0)
        box = [cx - radius, cy - radius * aspect, cx + radius, cy + radius * aspect]
        draw.ellipse(box, fill=255)
        if shape == "ring":
            inner = radius * rng.uniform(0.45, 0.6)
            draw.ellipse([cx - inner, cy - inner * aspect, cx + inner, cy + inner * aspect], fill=0)
    else:
        if shape == "square":
            points = _regular_polygon(4, radius, angle)
        elif shape == "diamond":
            points = _rotate(_regular_polygon(4, radius, 0.0, aspect=0.55), angle)
        elif shape == "triangle":
            points = _regular_polygon(3, radius, angle)
        elif shape == "hexagon":
            points = _regular_polygon(6, radius, angle)
        elif shape == "star":
            points = _star(radius, angle)
        else:
            points = _cross(radius, angle)
        draw.polygon([(float(x + cx), float(y + cy)) for x, y in points], fill=255)
    return np.asarray(mask) > 127


def _texture(size: int, rng, base: np.ndarray, strength: float) -> np.ndarray:
    """An ``(size, size, 3)`` float texture around colour ``base``: solid, stripes or blotchy noise."""
    kind = rng.integers(3)
    out = np.broadcast_to(base.astype(np.float32), (size, size, 3)).copy()
    if kind == 1:
        period = rng.uniform(4, 14)
        direction = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        wave = np.sin((xx * math.cos(direction) + yy * math.sin(direction)) * 2 * math.pi / period)
        out += (wave * strength)[..., None]
    elif kind == 2:
        cells = max(2, size // int(rng.integers(6, 20)))
        noise = rng.normal(0, strength, (cells, cells, 3)).astype(np.float32)
        reps = math.ceil(size / cells)
        out += np.kron(noise, np.ones((reps, reps, 1), np.float32))[:size, :size]
    return out


def _background(size: int, rng) -> np.ndarray:
    base = rng.uniform(40, 215, 3)
    image = _texture(size, rng, base, strength=rng.uniform(10, 35))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image += rng.uniform(-40, 40, 3)[None, None] * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    return image


def _add_clutter(image: np.ndarray, rng) -> np.ndarray:
    """Short strokes and small dots that are not objects."""
    from PIL import Image, ImageDraw

    size = image.shape[0]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(2, 8))):
        x0, y0 = rng.uniform(0, size, 2)
        length = rng.uniform(0.04, 0.15) * size
        angle = rng.uniform(0, 2 * math.pi)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.6:
            end = (x0 + length * math.cos(angle), y0 + length * math.sin(angle))
            draw.line([(x0, y0), end], fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(1, 0.02 * size + 1)
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    return np.asarray(pil)


def _contrasting_colour(rng, background: np.ndarray) -> np.ndarray:
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - mean).sum() > 150:
            return colour
    return 255 - mean


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _draw_image(
    config: SynthConfig, index: int, classes: list[int]
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One image and its ``(class, [x1, y1, x2, y2])`` objects; the rng is seeded by ``(seed, index)``."""
    rng = np.random.default_rng([config.seed, index])
    size = config.img_size
    background = _background(size, rng)
    image = background.copy()
    objects: list[tuple[int, list[float]]] = []
    for cls in classes:
        for _ in range(10):  # placements overlapping an earlier object by more than IoU 0.3 are redrawn
            radius = rng.uniform(0.07, 0.22) * size
            center = (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius))
            mask = _shape_mask(SHAPES[cls], size, center, radius, rng.uniform(0, 2 * math.pi), rng)
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            if all(_iou(box, other) <= 0.3 for _, other in objects):
                break
        else:
            continue
        colour = _contrasting_colour(rng, background)
        texture = _texture(size, rng, colour, strength=rng.uniform(10, 40))
        image[mask] = texture[mask]
        objects.append((cls, box))
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    return _add_clutter(image, rng), objects


def _object_classes(config: SynthConfig) -> list[list[int]]:
    """Classes of the objects of every image: counts 1..max_objects, classes from a shuffled balanced pool."""
    rng = np.random.default_rng([config.seed, 2**31])
    counts = rng.integers(1, config.max_objects + 1, config.images)
    pool = np.resize(np.arange(config.classes), int(counts.sum()))
    rng.shuffle(pool)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [pool[bounds[i] : bounds[i + 1]].tolist() for i in range(config.images)]


def _write_split(root: Path, split: str, indices: range, config: SynthConfig, classes: list[list[int]]) -> dict:
    from PIL import Image

    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    coco: dict = {
        "info": {"description": "yolodeploy synthetic shapes", "version": config.version, "seed": config.seed},
        "images": [],
        "annotations": [],
        "categories": [{"id": k + 1, "name": SHAPES[k], "supercategory": "shape"} for k in range(config.classes)],
    }
    for image_id, index in enumerate(indices, start=1):
        image, objects = _draw_image(config, index, classes[index])
        name = f"{index:06d}.jpg"
        Image.fromarray(image).save(image_dir / name, quality=92)
        coco["images"].append({"id": image_id, "file_name": name, "width": config.img_size, "height": config.img_size})
        for cls, (x1, y1, x2, y2) in objects:
            w, h = x2 - x1, y2 - y1
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco, indent=1) + "\n")
    return coco


def synthesize_dataset(
    out: str | os.PathLike,
    *,
    images: int = 300,
    classes: int = 4,
    img_size: int = 320,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1),
    overwrite: bool = False,
) -> SynthReport:
    """Draw a synthetic COCO-format detection dataset into ``out`` (train/val/calib splits).

    Args:
        out: destination folder; must not exist (or be empty) unless ``overwrite``.
        images: total number of images over all splits.
        classes: number of shape classes (1 to 8; category ids 1..classes, named after the shapes).
        img_size: square image side in pixels.
        seed: the same seed gives byte-identical files.
        splits: train, val and calib fractions (summing to 1).
        overwrite: replace an existing non-empty ``out``.

    Returns:
        A ``SynthReport`` with the per-split image and box counts.

    Raises:
        DatasetError: bad options, or ``out`` exists and is not empty (without ``overwrite``).

    Example:
        >>> report = synthesize_dataset("synth", images=30, classes=3, img_size=128, seed=0)
        >>> report.annotation_file("val").name
        'instances_val.json'
    """
    config = SynthConfig(images=images, classes=classes, img_size=img_size, seed=seed, splits=splits)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        report = SynthReport(root=out, config=config)
        object_classes = _object_classes(config)
        start = 0
        for split, count in config.split_counts().items():
            coco = _write_split(tmp, split, range(start, start + count), config, object_classes)
            start += count
            report.images[split] = count
            report.boxes[split] = len(coco["annotations"])
            for ann in coco["annotations"]:
                name = SHAPES[ann["category_id"] - 1]
                report.boxes_per_class[name] = report.boxes_per_class.get(name, 0) + 1
        (tmp / "synth.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            shutil.rmtree(old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
