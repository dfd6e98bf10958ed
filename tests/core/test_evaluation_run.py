"""End-to-end evaluation (``evaluate_model``): metrics come out, torch and ONNX Runtime agree on the same model,
and a perfect model reaches AP 1.0 through the letterbox / scale-back round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from yolodeploy.core.data.datasets import CocoDetection
from yolodeploy.core.data.synth import synthesize_dataset
from yolodeploy.core.evaluation_run import EvalConfig, evaluate_model
from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.core.preprocess import letterbox
from yolodeploy.errors import ConfigError, DatasetError
from yolodeploy.models import create_model

IMG = 128
METRIC_FIELDS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """16 images of 128 px, 3 classes; the val split is what the evaluation reads."""
    return synthesize_dataset(tmp_path_factory.mktemp("eval") / "ds", images=16, classes=3, img_size=IMG, seed=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_for_verification_(create_model("yolov6n", num_classes=3), 0).eval()


def test_uint8_input_export_evaluates_like_the_float_one(dataset, model, tmp_path):
    """``export --uint8-input``: evaluation feeds the letterboxed pixels themselves; the same detections."""
    from yolodeploy.deploy.export import export_onnx

    paths = {kind: tmp_path / f"{kind}.onnx" for kind in ("float", "uint8")}
    for kind, path in paths.items():
        export_onnx(model, path, img_size=IMG, dynamic_batch=True, uint8_input=kind == "uint8")
    results = {
        kind: evaluate_model(EvalConfig(model=str(path), data=str(dataset.root), img_size=IMG, batch=3))
        for kind, path in paths.items()
    }
    assert results["float"].detections and results["uint8"].detections == results["float"].detections


def _metric_ok(value: float) -> bool:
    return value == -1 or 0 <= value <= 1


def test_metrics_come_out(dataset, model, tmp_path):
    result = evaluate_model(EvalConfig(model="yolov6n", data=str(dataset.root), img_size=IMG, batch=3), model=model)
    metrics = result.metrics.to_dict()
    assert all(_metric_ok(metrics[name]) for name in METRIC_FIELDS), metrics
    assert result.images == dataset.images["val"] and result.backend == "TorchRunner"
    saved = json.loads(result.save(tmp_path / "r.json").read_text())
    assert saved["config"]["img_size"] == IMG and set(METRIC_FIELDS) <= set(saved["metrics"])


def test_torch_and_onnxruntime_agree(dataset, model, tmp_path):
    from yolodeploy.deploy.export import export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(model, onnx_path, img_size=IMG, dynamic_batch=True)
    config = EvalConfig(model="yolov6n", data=str(dataset.root), img_size=IMG, batch=3)
    torch_result = evaluate_model(config, model=model)
    ort_result = evaluate_model(EvalConfig(model=str(onnx_path), data=str(dataset.root), img_size=IMG, batch=3))
    assert ort_result.backend == "OnnxRuntimeRunner"
    assert abs(torch_result.metrics.ap - ort_result.metrics.ap) <= 0.1
    assert abs(torch_result.metrics.ap50 - ort_result.metrics.ap50) <= 0.1
    a, b = torch_result.detections, ort_result.detections
    assert len(a) > 0
    assert abs(len(a) - len(b)) <= max(2, len(a) // 100)  # near-tied scores at the conf/max-det edge may differ
    key = lambda d: (d["image_id"], d["category_id"], round(d["score"], 2), [round(v) for v in d["bbox"]])  # noqa: E731
    matched = len({str(key(d)) for d in a} & {str(key(d)) for d in b})
    assert matched >= 0.9 * len(a)
    top_a = sorted(a, key=lambda d: -d["score"])[:20]
    top_b = sorted(b, key=lambda d: -d["score"])[:20]
    for da, db in zip(top_a, top_b):
        assert da["image_id"] == db["image_id"] and da["category_id"] == db["category_id"]
        assert abs(da["score"] - db["score"]) < 1e-3
        np.testing.assert_allclose(da["bbox"], db["bbox"], atol=0.05)


class PerfectRunner:
    """Returns the ground-truth boxes (score 1) in letterboxed pixels, in the order evaluate_model reads images."""

    def __init__(self, data: CocoDetection, img_size: int, border: int = 0) -> None:
        self.data, self.img_size, self.border, self.next = data, img_size, border, 0
        self.num_classes = len(data.category_ids)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def input_metadata(self):
        from yolodeploy.deploy.runners.base import TensorMeta

        return {"images": TensorMeta("images", np.float32, ("batch", 3, "height", "width"))}

    def output_names(self):
        return ["outputs"]

    def infer(self, feed):
        batch = feed["images"].shape[0]
        out = np.zeros((batch, 16, 4 + self.num_classes), np.float32)
        for i in range(batch):
            image, boxes, labels = self.data[self.next]
            self.next += 1
            _, ratio, (pad_w, pad_h) = letterbox(image, self.img_size, border=self.border)
            assert len(boxes) <= 16
            out[i, : len(boxes), :4] = boxes * ratio + np.array([pad_w, pad_h, pad_w, pad_h], np.float32)
            out[i, np.arange(len(boxes)), 4 + labels] = 1.0
        return {"outputs": out}


@pytest.fixture(scope="module")
def wide_dataset(dataset, tmp_path_factory):
    """The val split with every image widened to 128x176 (content at the left): letterbox must pad vertically."""
    from PIL import Image

    root = tmp_path_factory.mktemp("wide")
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    coco = json.loads(dataset.annotation_file("val").read_text())
    for entry in coco["images"]:
        image = np.asarray(Image.open(dataset.image_dir("val") / entry["file_name"]).convert("RGB"))
        wide = np.full((image.shape[0], image.shape[1] + 48, 3), 60, np.uint8)
        wide[:, : image.shape[1]] = image
        Image.fromarray(wide).save(root / "images" / "val" / entry["file_name"])
        entry["width"] = wide.shape[1]
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    return root


@pytest.mark.parametrize(
    ("which", "img_size", "border"),
    [("square", IMG, 0), ("square", 96, 0), ("wide", 160, 0), ("wide", 96, 0), ("wide", 96, 3)],
)
def test_perfect_model_reaches_ap_one(dataset, wide_dataset, which, img_size, border):
    """Also with the paper's gray border (e.g. 634 + 3 px for 640): evaluation letterboxes with the same frame."""
    root = dataset.root if which == "square" else wide_dataset
    data = CocoDetection(root / "images" / "val", root / "annotations" / "instances_val.json")
    config = EvalConfig(model="perfect", data=str(root), img_size=img_size, border=border, batch=2)
    result = evaluate_model(config, runner=PerfectRunner(data, img_size, border))
    assert result.metrics.ap == pytest.approx(1.0, abs=1e-6)
    assert result.metrics.ap50 == pytest.approx(1.0, abs=1e-6)
    if which == "wide":  # the mapping is exercised: a wrong pad or ratio would shift boxes off their targets
        assert letterbox(data[0][0], img_size)[2][1] > 0


def test_bad_inputs(dataset, model, tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        evaluate_model(EvalConfig(model="yolov6n", data=str(tmp_path / "nope")), model=model)
    with pytest.raises(DatasetError, match="no annotation file"):
        evaluate_model(EvalConfig(model="yolov6n", data=str(dataset.root), split="test"), model=model)
    with pytest.raises(ConfigError, match="multiple of 32"):
        EvalConfig(model="yolov6n", data=str(dataset.root), img_size=100)
