"""The benchmark harness with a fake runner: what the JSON holds, throughput, e2e stages, config round trip."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
from PIL import Image

from yolodeploy.bench.harness import (
    BenchConfig,
    BenchResult,
    Stopwatch,
    default_progress,
    run_benchmark,
)
from yolodeploy.errors import ConfigError

Meta = collections.namedtuple("Meta", "name dtype shape")


class FakeRunner:
    """The Runner interface the harness uses (context manager, input_metadata, infer, device, backend)."""

    backend = "fake"

    def __init__(self, shape=("batch", 3, "height", "width"), dtype=np.float32, nms=True, device="cpu"):
        self.shape, self.dtype, self.nms, self.device = shape, dtype, nms, device
        self.is_active = False
        self.feeds: list[tuple[tuple[int, ...], np.dtype]] = []
        self.activations = 0

    def __enter__(self):
        self.is_active = True
        self.activations += 1
        return self

    def __exit__(self, *exc):
        self.is_active = False

    def input_metadata(self):
        return {"images": Meta("images", self.dtype, self.shape)}

    def infer(self, feed):
        assert self.is_active and set(feed) == {"images"}
        x = feed["images"]
        self.feeds.append((x.shape, x.dtype))
        batch, _, height, width = x.shape
        if not self.nms:
            raw = np.zeros((batch, 10, 6), np.float32)
            raw[:, :, :4] = [0, 0, width / 2, height / 2]
            raw[:, 0, 4] = 0.9
            return {"outputs": raw}
        boxes = np.zeros((batch, 5, 4), np.float32)
        boxes[:, 0] = [0, 0, width, height]
        return {
            "num_dets": np.ones((batch, 1), np.int32),
            "det_boxes": boxes,
            "det_scores": np.zeros((batch, 5), np.float32),
            "det_classes": np.zeros((batch, 5), np.int32),
        }


def config(**overrides) -> BenchConfig:
    base = {"model": "fake.onnx", "backend": "ort", "batch_sizes": (1, 2), "img_size": 64, "warmup": 1, "iters": 3}
    return BenchConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (80, 60), (255, 0, 0)).save(folder / "a.jpg")
    Image.new("L", (40, 90), 128).save(folder / "b.png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(folder / "c.png")
    return folder


def test_result_fields_batches_and_throughput():
    runner = FakeRunner()
    result = run_benchmark(config(), runner=runner)
    data = json.loads(json.dumps(result.to_dict()))  # JSON-able as is
    assert data["format"] == "yolodeploy.bench.result" and data["name"] == "fake"
    assert data["config"]["batch_sizes"] == [1, 2] and data["config"]["backend"] == "ort" and data["config"]["version"]
    assert [b["batch_size"] for b in data["batches"]] == [1, 2]
    for batch in data["batches"]:
        stats = batch["latency"]
        assert set(stats) >= {"mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms"} and stats["iters"] == 3
        assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
        assert batch["throughput_ips"] == pytest.approx(batch["batch_size"] * 1000 / stats["mean_ms"])
        assert "stages" not in batch
    # warm-up 1 + 3 timed calls per batch size, each with the right shape and dtype
    assert [shape for shape, _ in runner.feeds] == [(1, 3, 64, 64)] * 4 + [(2, 3, 64, 64)] * 4
    assert {dtype for _, dtype in runner.feeds} == {np.dtype(np.float32)}
    assert (
        data["model"]["img_size"] == 64 and data["model"]["device"] == "cpu" and data["model"]["input_name"] == "images"
    )
    env = data["environment"]
    assert env["cpu"] and env["cpu_count"] >= 1 and env["torch"] and "onnxruntime" in env and "tensorrt" in env
    reference = data["reference"]
    assert reference["name"] == "conv_stack" and reference["ms"] > 0 and reference["before_p50_ms"] > 0
    assert BenchResult.from_dict(data).batch(2).throughput_ips == pytest.approx(data["batches"][1]["throughput_ips"])
    assert "reference workload" in result.table() and "fake" in result.table()


def test_e2e_stages_on_real_images(images):
    runner = FakeRunner(dtype=np.float16)
    result = run_benchmark(config(e2e=True, images=str(images), reference=False, batch_sizes=(2,)), runner=runner)
    batch = result.to_dict()["batches"][0]
    assert set(batch["stages"]) == {"preprocess", "inference", "postprocess", "total"}
    assert all(stats["iters"] == 3 and stats["mean_ms"] > 0 for stats in batch["stages"].values())
    total = batch["stages"]["total"]
    assert batch["e2e_throughput_ips"] == pytest.approx(2 * 1000 / total["mean_ms"])
    assert result.reference is None and "pre ms" in result.table()
    # the e2e loop fed letterboxed (2, 3, 64, 64) fp16 batches built from the files
    assert runner.feeds[-1] == ((2, 3, 64, 64), np.dtype(np.float16))


def test_uint8_input_models_are_fed_raw_pixels(images):
    """A ``--uint8-input`` export takes (B, H, W, 3) uint8: random batches and the e2e loop's letterboxed images."""
    runner = FakeRunner(shape=("batch", 64, 64, 3), dtype=np.uint8)
    run_benchmark(config(e2e=True, images=str(images), reference=False, batch_sizes=(2,)), runner=runner)
    assert runner.feeds and all(feed == ((2, 64, 64, 3), np.dtype(np.uint8)) for feed in runner.feeds)
    with pytest.raises(ConfigError, match="fixed at 64x64"):
        fixed = FakeRunner(shape=("batch", 64, 64, 3), dtype=np.uint8)
        run_benchmark(config(img_size=96, reference=False), runner=fixed)


def test_e2e_with_raw_outputs_runs_nms(images):
    pytest.importorskip("yolodeploy.core.nms", reason="yolodeploy.core.nms (reference NMS) not present yet")
    result = run_benchmark(
        config(e2e=True, images=str(images), reference=False, batch_sizes=(1,)), runner=FakeRunner(nms=False)
    )
    assert result.batches[0].stages["postprocess"].iters == 3


def test_time_budget_and_progress():
    calls = []
    result = run_benchmark(
        config(iters=None, seconds=0.05, reference=False, batch_sizes=(1,)),
        lambda label, done, total: calls.append((label, done, total)),
        runner=FakeRunner(),
    )
    assert result.batches[0].latency.iters >= 1
    assert calls and calls[0] == ("fake ort bs1", 1, None) and calls[-1][1] == result.batches[0].latency.iters


def test_progress_without_tqdm_writes_one_line(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (_ for _ in ()).throw(ImportError) if name == "tqdm" else real_import(name, *a, **k),
    )
    progress = default_progress()
    progress("x", 1, 2)
    progress("x", 2, 2)
    assert capsys.readouterr().err == "\rx: 1/2\rx: 2/2\n"


def test_static_shapes_are_checked():
    with pytest.raises(ConfigError, match="static batch of 1"):
        run_benchmark(config(reference=False), runner=FakeRunner(shape=(1, 3, 64, 64)))
    with pytest.raises(ConfigError, match="fixed at 320x320"):
        run_benchmark(config(batch_sizes=(1,), reference=False), runner=FakeRunner(shape=(1, 3, 320, 320)))
    # no --img: the model's static size is used
    result = run_benchmark(config(batch_sizes=(1,), img_size=None, reference=False), runner=FakeRunner((1, 3, 96, 96)))
    assert result.model["img_size"] == 96


def test_config_round_trip_and_validation():
    cfg = config(threads=2, precision="FP16", name="n")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["version"] == 1 and data["precision"] == "fp16" and data["batch_sizes"] == [1, 2]
    assert BenchConfig.from_dict(data) == cfg
    assert config(iters=None).iters == 20 and BenchConfig(model="yolov6n").name == "yolov6n"
    assert BenchConfig(model="/x/y/m.engine", backend="trt").name == "m"
    bad = [
        {"backend": "tensorflow"},
        {"iters": 5, "seconds": 1.0},
        {"batch_sizes": (0,)},
        {"batch_sizes": ()},
        {"e2e": True},
        {"device": "tpu"},
        {"warmup": -1},
        {"precision": "int4"},
    ]
    for overrides in bad:
        with pytest.raises(ConfigError):
            config(**overrides)
    with pytest.raises(ConfigError, match="unknown benchmark config fields"):
        BenchConfig.from_dict({**data, "colour": 1})
    with pytest.raises(ConfigError, match="version"):
        BenchConfig.from_dict({**data, "version": 99})


def test_stopwatch_cpu():
    seconds, out = Stopwatch(False)(lambda: 42)
    assert out == 42 and 0 <= seconds < 1


def test_stopwatch_cuda_events():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA-event timer is checked on a GPU machine")
    x = torch.randn(2048, 2048, device="cuda")
    seconds, out = Stopwatch(True)(lambda: x @ x)
    assert out.shape == (2048, 2048) and seconds > 0
    result = run_benchmark(config(batch_sizes=(1,)), runner=FakeRunner(device="cuda:0"))
    assert result.reference["ms"] > 0 and result.model["device"] == "cuda:0"
