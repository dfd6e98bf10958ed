"""COCO and YOLO-txt datasets on the synthetic data, the letterbox collate, and every bad input as documented."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from yolodeploy.core.data.datasets import (
    CocoDetection,
    DatasetWarning,
    YoloTxtDetection,
    collate,
    write_yolo_labels,
)
from yolodeploy.core.data.synth import synthesize_dataset
from yolodeploy.errors import DatasetError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthesize_dataset(tmp_path_factory.mktemp("synth") / "d", images=30, classes=4, img_size=128, seed=0)


def _coco(report, split="train"):
    return CocoDetection(report.image_dir(split), report.annotation_file(split))


def _copy_split(report, tmp_path, split="val"):
    """A writable copy of one split: (image folder, parsed COCO JSON)."""
    images = tmp_path / "images"
    shutil.copytree(report.image_dir(split), images)
    return images, json.loads(report.annotation_file(split).read_text())


def _write(coco, tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def test_coco_loads_synth(synth, recwarn):
    data = _coco(synth)
    assert len(data) == 21 and not [w for w in recwarn if issubclass(w.category, DatasetWarning)]
    assert data.class_names == ["circle", "square", "triangle", "star"]
    assert data.category_to_label == {1: 0, 2: 1, 3: 2, 4: 3}
    coco = json.loads(synth.annotation_file("train").read_text())
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    image, boxes, labels = data[0]
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and len(boxes) == len(first)
    x, y, w, h = first[0]["bbox"]
    np.testing.assert_allclose(boxes[0], [x, y, x + w, y + h])
    assert labels[0] == first[0]["category_id"] - 1


def test_yolo_txt_round_trip(synth, tmp_path):
    coco = _coco(synth, "val")
    labels_dir = write_yolo_labels(coco, tmp_path / "labels")
    yolo = YoloTxtDetection(synth.image_dir("val"), labels_dir, class_names=coco.class_names)
    assert len(yolo) == len(coco) and yolo.class_names == coco.class_names
    for index in range(len(coco)):
        _, boxes, labels = coco[index]
        _, yolo_boxes, yolo_labels = yolo[index]
        np.testing.assert_array_equal(labels, yolo_labels)
        np.testing.assert_allclose(yolo_boxes, boxes, atol=1e-3)
    inferred = YoloTxtDetection(synth.image_dir("val"), labels_dir)
    assert len(inferred.class_names) == int(max(r.labels.max() for r in coco.records if len(r.labels))) + 1


def test_collate_letterboxes_images_and_boxes(synth):
    data = _coco(synth, "val")
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=functools.partial(collate, img_size=(96, 160)))
    images, targets = next(iter(loader))
    assert images.shape == (3, 3, 96, 160) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() <= 1
    assert targets.shape == (sum(len(data[i][1]) for i in range(3)), 6)
    _, boxes, labels = data[0]
    rows = targets[targets[:, 0] == 0]
    # 128x128 into 96x160: ratio 0.75, pad (32, 0)
    np.testing.assert_allclose(rows[:, 2:].numpy(), boxes * 0.75 + [32, 0, 32, 0], atol=1e-4)
    np.testing.assert_array_equal(rows[:, 1].numpy(), labels)
    bordered, _ = collate([data[0]], img_size=128, border=4)
    assert (bordered[0, :, :4] == 114 / 255).all()


def test_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no readable images"):
        YoloTxtDetection(tmp_path / "empty", tmp_path / "labels")
    with pytest.raises(DatasetError, match="no readable images"):
        YoloTxtDetection(tmp_path / "missing", tmp_path / "labels")
    path = _write({"images": [], "annotations": [], "categories": []}, tmp_path)
    with pytest.raises(DatasetError, match="no images listed"):
        CocoDetection(tmp_path / "empty", path)
    path = _write({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": []}, tmp_path)
    with pytest.raises(DatasetError, match="no readable images"):
        CocoDetection(tmp_path / "empty", path)
    with pytest.raises(DatasetError, match="no such annotation file"):
        CocoDetection(tmp_path / "empty", tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read annotation file"):
        CocoDetection(tmp_path / "empty", tmp_path / "bad.json")


def test_boxes_outside_image_clipped_and_zero_area_dropped(synth, tmp_path):
    images, coco = _copy_split(synth, tmp_path)
    anns = [a for a in coco["annotations"] if a["image_id"] == 1]
    anns[0]["bbox"] = [-10.0, 100.0, 50.0, 60.0]  # -> [0, 100, 40, 128]
    extra = dict(anns[0], id=999, bbox=[200.0, 10.0, 20.0, 20.0])  # fully outside -> zero area
    coco["annotations"].append(extra)
    with pytest.warns(DatasetWarning, match="1 boxes clipped.*1 zero-area boxes dropped"):
        data = CocoDetection(images, _write(coco, tmp_path))
    assert data.issues["boxes clipped to the image"] == 1 and data.issues["zero-area boxes dropped"] == 1
    _, boxes, _ = data[0]
    assert len(boxes) == len(anns)
    np.testing.assert_allclose(boxes[0], [0, 100, 40, 128])


def test_unknown_class_ids_dropped(synth, tmp_path):
    images, coco = _copy_split(synth, tmp_path)
    total = len(coco["annotations"])
    coco["annotations"][0]["category_id"] = 42
    coco["annotations"].append(dict(coco["annotations"][1], id=1000, image_id=777))
    with pytest.warns(DatasetWarning, match="1 annotations with unknown category ids dropped"):
        data = CocoDetection(images, _write(coco, tmp_path))
    assert data.issues["annotations of unknown images dropped"] == 1
    assert sum(len(r.labels) for r in data.records) == total - 1
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    name = sorted(images.iterdir())[0].stem
    (labels_dir / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n-1 0.1 0.1 0.1 0.1\nbad line\n")
    with pytest.warns(DatasetWarning, match="2 annotations with unknown category ids dropped"):
        yolo = YoloTxtDetection(images, labels_dir, class_names=["a", "b"])
    assert yolo.issues["malformed label lines dropped"] == 1
    np.testing.assert_allclose(yolo[0][1], [[51.2, 51.2, 76.8, 76.8]], atol=1e-4)


def test_zero_size_and_corrupt_images_skipped(synth, tmp_path):
    images, coco = _copy_split(synth, tmp_path)
    names = [img["file_name"] for img in coco["images"]]
    (images / names[0]).write_bytes(b"")  # zero-size file
    (images / names[1]).write_bytes(b"not an image at all")  # corrupt header
    (images / names[2]).unlink()  # missing
    with pytest.warns(DatasetWarning, match="3 missing, empty or unreadable images skipped"):
        data = CocoDetection(images, _write(coco, tmp_path))
    assert len(data) == len(names) - 3
    # a valid header with a truncated body only fails on decode: __getitem__ skips to the next image
    payload = (images / names[3]).read_bytes()
    (images / names[3]).write_bytes(payload[: len(payload) // 3])
    with pytest.warns(DatasetWarning, match="skipping unreadable image"):
        image, _, _ = data[0]
    assert image.shape == (128, 128, 3) and data.issues["unreadable images skipped"] == 1
    np.testing.assert_array_equal(image, np.asarray(Image.open(images / names[4]).convert("RGB")))


def test_gray_and_rgba_images_are_rgb(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (40, 30), 50).save(images / "gray.png")
    Image.new("RGBA", (40, 30), (1, 2, 3, 0)).save(images / "rgba.png")
    data = YoloTxtDetection(images, tmp_path / "labels", class_names=["a"])
    for index in range(2):
        image, boxes, labels = data[index]
        assert image.shape == (30, 40, 3) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_exif_rotated_image_sizes_boxes_in_the_rotated_frame(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: a stored 40x30 image shows as 30 wide, 40 high
    Image.new("RGB", (40, 30), (200, 10, 10)).save(images / "r.jpg", exif=exif.tobytes())
    (labels / "r.txt").write_text("0 0.5 0.5 1.0 0.5\n")
    data = YoloTxtDetection(images, labels, class_names=["a"])
    image, boxes, _ = data[0]
    assert image.shape == (40, 30, 3) and (data.records[0].width, data.records[0].height) == (30, 40)
    np.testing.assert_allclose(boxes, [[0, 10, 30, 30]])


def test_multi_process_loading(synth):
    loader = torch.utils.data.DataLoader(
        _coco(synth, "val"), batch_size=2, num_workers=2, collate_fn=functools.partial(collate, img_size=64)
    )
    batches = list(loader)
    assert len(batches) == 3 and all(images.shape == (2, 3, 64, 64) for images, _ in batches)
