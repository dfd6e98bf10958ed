"""Calibration data, the four calibrators on a real model, and the manifest-keyed cache (issue 6 item 2)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.core.preprocess import letterbox, load_image, to_tensor_batch
from yolodeploy.core.reparam import reparameterize_model
from yolodeploy.errors import CalibrationError, ConfigError
from yolodeploy.models import create_model
from yolodeploy.quant.calibrate import (
    ACTIVATION_SCHEME,
    PREPROCESSING,
    CalibrationManifest,
    activation_quantizers,
    calibrate,
    calibrate_cached,
    calibration_batches,
    calibration_images,
    model_hash,
    unsigned_keys,
)
from yolodeploy.quant.model import quant_layers, quantize_model

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def images(tiny_dataset):
    return calibration_images(tiny_dataset, split="train", count=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval()


def test_calibration_images_deterministic_subset(tiny_dataset, images):
    assert len(images) == 4 and images == sorted(images)
    assert images == calibration_images(tiny_dataset, split="train", count=4)
    assert calibration_images(tiny_dataset, split="train", count=4, seed=1) != images
    everything = calibration_images(tiny_dataset, split="train", count=512)  # fewer than count: all of them
    assert len(everything) == len(list((tiny_dataset / "images" / "train").iterdir()))
    assert calibration_images(tiny_dataset / "images" / "val") == calibration_images(
        tiny_dataset, split="val"
    )  # a folder


def test_calibration_images_errors(tmp_path):
    with pytest.raises(CalibrationError, match="no calibration images"):
        calibration_images(tmp_path)
    with pytest.raises(ConfigError, match=">= 1"):
        calibration_images(tmp_path, count=0)


def test_calibration_batches_are_the_inference_preprocessing(images):
    batches = list(calibration_batches(images, 64, batch=3))
    assert [tuple(b.shape) for b in batches] == [(3, 3, 64, 64), (1, 3, 64, 64)]
    expected = to_tensor_batch([letterbox(load_image(p), (64, 64), scaleup=True)[0] for p in images])
    assert torch.equal(torch.cat(batches), torch.from_numpy(expected))
    assert batches[0].dtype == torch.float32 and 0 <= float(batches[0].min()) and float(batches[0].max()) <= 1


@pytest.mark.parametrize("method", ["max", "percentile", "entropy", "mse"])
def test_calibrate_each_method(model, images, method):
    qmodel = quantize_model(model)
    amax = calibrate(qmodel, calibration_batches(images, 64, batch=4), method=method)
    layers = quant_layers(qmodel)
    outputs = [f"{name}:output" for name, layer in layers.items() if layer.quantize_output]
    assert list(amax) == list(activation_quantizers(qmodel)) and set(amax) == set(layers) | set(outputs)
    assert len(outputs) == 9 and all(v > 0 for v in amax.values())
    assert all(q.state.value == "enabled" for q in activation_quantizers(qmodel).values())
    # the image and every post-ReLU tensor are non-negative: unsigned; the head's SiLU inputs are not
    unsigned = unsigned_keys(qmodel)
    assert "backbone.stem.rbr_reparam" in unsigned and not set(outputs) & set(unsigned)
    batch = next(calibration_batches(images, 64, batch=4))
    with torch.no_grad():
        ref, test = reparameterize_model(model)(batch), qmodel(batch)
    assert not torch.equal(ref, test)  # quantization changes the output ...
    # ... but little: per-image cosine of the raw (B, N, 4 + C) output (measured >= 0.99999 for all four methods)
    assert float(F.cosine_similarity(ref.flatten(1), test.flatten(1)).min()) > 0.999
    scores = F.cosine_similarity(ref[..., 4:].flatten(1), test[..., 4:].flatten(1))
    assert float(scores.min()) > 0.999


def test_calibrate_needs_batches_and_layers(model):
    with pytest.raises(CalibrationError, match="no calibration batch"):
        calibrate(quantize_model(model), [])
    with pytest.raises(CalibrationError, match="no quantized layer"):
        calibrate(model, [torch.rand(1, 3, 64, 64)])


class _Counter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def test_calibrate_cached_reuses_identical_manifest(model, images, tmp_path):
    first = quantize_model(model)
    counter = _Counter(first)
    result = calibrate_cached(first, images, tmp_path, img_size=64, batch=4, method="max")
    assert not result.cached and counter.calls == 1 and result.cache_path.exists()
    stored = json.loads(result.cache_path.read_text())
    assert stored["amax"] == result.amax and stored["manifest"]["count"] == 4
    assert stored["unsigned"] == result.unsigned == unsigned_keys(first) and result.unsigned
    assert stored["manifest"]["preprocessing"] == PREPROCESSING and result.cache_path.stem == result.manifest.sha256()
    second = quantize_model(model)
    counter = _Counter(second)
    again = calibrate_cached(second, images, tmp_path, img_size=64, batch=4, method="max")
    assert again.cached and counter.calls == 0 and "reused" in again.note and again.amax == result.amax
    assert again.unsigned == result.unsigned and unsigned_keys(second) == result.unsigned
    batch = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(first(batch), second(batch))


def test_calibrate_cached_invalidation(model, images, tmp_path):
    copies = []
    for path in images:
        copies.append(tmp_path / "img" / path.name)
        copies[-1].parent.mkdir(exist_ok=True)
        shutil.copy(path, copies[-1])
    cache = tmp_path / "cache"
    base = calibrate_cached(quantize_model(model), copies, cache, img_size=64, method="max")
    with copies[0].open("ab") as handle:  # one more byte after the JPEG's end: same pixels, another file
        handle.write(b"\0")
    variants = [
        dict(images=copies, img_size=64, method="max"),
        dict(images=copies, img_size=64, method="percentile"),
        dict(images=copies, img_size=(64, 96), method="max"),
        dict(images=copies[:3], img_size=64, method="max"),
    ]
    keys = {base.manifest.sha256()}
    for kwargs in variants:
        qmodel = quantize_model(model)
        counter = _Counter(qmodel)
        result = calibrate_cached(qmodel, kwargs.pop("images"), cache, **kwargs)
        assert not result.cached and counter.calls > 0
        keys.add(result.manifest.sha256())
    assert len(keys) == 5 and len(list(cache.glob("*.json"))) == 5


def test_corrupt_or_mismatched_cache_is_recomputed(model, images, tmp_path):
    result = calibrate_cached(quantize_model(model), images, tmp_path, img_size=64, method="max")
    result.cache_path.write_text("{not json")
    again = calibrate_cached(quantize_model(model), images, tmp_path, img_size=64, method="max")
    assert not again.cached and "unreadable" in again.note and again.amax == result.amax


def test_cache_without_unsigned_flags_is_recalibrated(model, images, tmp_path):
    result = calibrate_cached(quantize_model(model), images, tmp_path, img_size=64, method="max")
    stored = json.loads(result.cache_path.read_text())
    del stored["unsigned"]  # the format before unsigned activations: the flags cannot be restored
    result.cache_path.write_text(json.dumps(stored))
    qmodel = quantize_model(model)
    counter = _Counter(qmodel)
    again = calibrate_cached(qmodel, images, tmp_path, img_size=64, method="max")
    assert not again.cached and counter.calls > 0 and again.note.startswith("recalibrated")
    assert again.unsigned == result.unsigned and json.loads(again.cache_path.read_text())["unsigned"] == result.unsigned


def test_manifest_tracks_weights_and_layers(model, images):
    kwargs = dict(img_size=64, batch=8, method="entropy", percentile=99.99)
    plain = CalibrationManifest.build(quantize_model(model), images, **kwargs)
    partial = CalibrationManifest.build(quantize_model(model, exclude=["backbone.stem"]), images, **kwargs)
    changed = quantize_model(model)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    moved = CalibrationManifest.build(changed, images, **kwargs)
    assert len({plain.sha256(), partial.sha256(), moved.sha256()}) == 3
    assert plain.model_hash == partial.model_hash == model_hash(reparameterize_model(model)) != moved.model_hash
    calibrated = quantize_model(model)
    calibrate(calibrated, [torch.rand(1, 3, 64, 64)], method="max")  # amax and unsigned flags are not the model
    assert unsigned_keys(calibrated) and model_hash(calibrated) == plain.model_hash
    assert plain.to_dict()["settings"] == {"num_bits": 8, "num_bins": 2048, "activations": ACTIVATION_SCHEME}
    assert list(plain.quant_layers) == list(activation_quantizers(quantize_model(model)))
    assert "detect.stems.0.block.conv:output" in plain.quant_layers
