"""The synthetic dataset: deterministic, valid COCO, boxes inside images, balanced classes, splits as asked."""

from __future__ import annotations

import json

import pytest

from yolodeploy.core.data.synth import SHAPES, SynthConfig, synthesize_dataset
from yolodeploy.errors import DatasetError

KW = dict(images=30, classes=4, img_size=128)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthesize_dataset(tmp_path_factory.mktemp("synth") / "a", seed=3, **KW)


def _read(report, split):
    return json.loads(report.annotation_file(split).read_text())


def test_same_seed_is_byte_identical_and_other_seed_differs(synth, tmp_path):
    again = synthesize_dataset(tmp_path / "b", seed=3, **KW)
    other = synthesize_dataset(tmp_path / "c", seed=4, **KW)
    for split in ("train", "val", "calib"):
        assert synth.annotation_file(split).read_bytes() == again.annotation_file(split).read_bytes()
        for path in synth.image_dir(split).iterdir():
            assert path.read_bytes() == (again.image_dir(split) / path.name).read_bytes()
    assert synth.annotation_file("train").read_bytes() != other.annotation_file("train").read_bytes()


def test_coco_schema_and_boxes_inside_images(synth):
    for split in ("train", "val", "calib"):
        coco = _read(synth, split)
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
        assert [c["name"] for c in coco["categories"]] == list(SHAPES[:4])
        images = {img["id"]: img for img in coco["images"]}
        for img in coco["images"]:
            assert (synth.image_dir(split) / img["file_name"]).is_file()
            assert img["width"] == img["height"] == 128
        ids = [ann["id"] for ann in coco["annotations"]]
        assert len(set(ids)) == len(ids)
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            img = images[ann["image_id"]]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert ann["area"] == pytest.approx(w * h) and ann["iscrowd"] == 0
            assert ann["category_id"] in (1, 2, 3, 4)


def test_classes_balanced_and_splits(synth):
    assert synth.images == {"train": 21, "val": 6, "calib": 3}
    counts = list(synth.boxes_per_class.values())
    assert len(counts) == 4 and max(counts) - min(counts) <= 0.35 * max(counts), synth.boxes_per_class
    for split, count in synth.images.items():
        assert len(_read(synth, split)["images"]) == count
    assert json.loads((synth.root / "synth.json").read_text())["seed"] == 3
    assert "30 images" in synth.summary()


def test_config_round_trip_and_validation(tmp_path):
    config = SynthConfig(images=10, classes=2, splits=(0.5, 0.5, 0.0))
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.split_counts() == {"train": 5, "val": 5, "calib": 0}
    for bad in (dict(classes=0), dict(classes=9), dict(images=0), dict(img_size=8), dict(splits=(0.5, 0.6, 0.1))):
        with pytest.raises(DatasetError):
            synthesize_dataset(tmp_path / "x", **{**KW, **bad})
    assert not (tmp_path / "x").exists()


def test_refuses_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        synthesize_dataset(out, images=3, classes=2, img_size=64, seed=0)
    report = synthesize_dataset(out, images=3, classes=2, img_size=64, seed=0, overwrite=True)
    assert not (out / "keep.txt").exists() and report.annotation_file("train").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folder left behind
