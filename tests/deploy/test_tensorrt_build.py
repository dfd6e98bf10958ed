"""TensorRT engine building: everything that needs no TensorRT (profiles, precision flags, sidecar checks,
refusals, the missing-library message), plus the real build on GPU machines (benchmarks/gpu_check.sh)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import onnx
import pytest
import torch
from conftest import export_tiny_onnx
from onnx import TensorProto, helper

from yolodeploy.deploy import tensorrt_build as tb
from yolodeploy.deploy.runners import TensorMeta, TensorRTRunner, validate_feed
from yolodeploy.deploy.runners.tensorrt_runner import unavailable_reason
from yolodeploy.errors import (
    BackendUnavailableError,
    ConfigError,
    EngineError,
    EngineMismatchError,
    FeedError,
    OnnxModelError,
)

TRT_SKIP = unavailable_reason()
DYNAMIC = TensorMeta("images", np.float32, ("batch", 3, 640, 640))
STATIC = TensorMeta("images", np.float32, (1, 3, 640, 640))


def one_line(exc_info, *fragments: str) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_tiny_onnx(path, img_size=32)
    return path


def qdq_onnx(path) -> None:
    """images -> QuantizeLinear -> DequantizeLinear -> outputs: the smallest explicitly quantized graph."""
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["outputs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [
            helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05]),
            helper.make_tensor("zero", TensorProto.INT8, [], [0]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


# -- profiles --------------------------------------------------------------------------------------------
def test_parse_batch_sizes():
    assert tb.parse_batch_sizes("1,32") == (1, 32)
    assert tb.parse_batch_sizes(" 32, 1 ,1") == (1, 32)
    assert tb.parse_batch_sizes([8]) == (8,) and tb.parse_batch_sizes(4) == (4,)
    for bad in ("", "0,4", "a", "1,-2"):
        with pytest.raises(ConfigError):
            tb.parse_batch_sizes(bad)


def test_profile_from_batch_sizes_min_smallest_opt_and_max_largest():
    (profile,) = tb.profiles_from_batch_sizes([DYNAMIC], "1,32")
    assert profile == tb.ShapeProfile("images", (1, 3, 640, 640), (32, 3, 640, 640), (32, 3, 640, 640))
    (profile,) = tb.profiles_from_batch_sizes([DYNAMIC], (1, 8, 32), opt_batch=8)
    assert profile.opt == (8, 3, 640, 640)
    assert tb.ShapeProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    with pytest.raises(ConfigError, match="opt batch 64"):
        tb.profiles_from_batch_sizes([DYNAMIC], (1, 32), opt_batch=64)


def test_static_batch_needs_no_profile_and_refuses_other_batches():
    assert tb.profiles_from_batch_sizes([STATIC], (1,)) == []
    with pytest.raises(ConfigError) as exc_info:
        tb.profiles_from_batch_sizes([STATIC], "1,32")
    one_line(exc_info, "static batch of 1", "--dynamic-batch")
    dynamic_hw = TensorMeta("images", np.float32, ("batch", 3, "height", "width"))
    with pytest.raises(ConfigError, match="--min-shape"):
        tb.profiles_from_batch_sizes([dynamic_hw], (1, 4))


def test_explicit_shapes():
    assert tb.parse_shape("1x3x640x640") == (None, (1, 3, 640, 640))
    assert tb.parse_shape("images:4,3,320,320") == ("images", (4, 3, 320, 320))
    with pytest.raises(ConfigError, match="1x3x640x640"):
        tb.parse_shape("1x3xbig")
    dynamic_hw = TensorMeta("images", np.float32, ("batch", 3, "height", "width"))
    (profile,) = tb.profiles_from_shapes([dynamic_hw], "1x3x320x320", None, "8x3x640x640")
    assert profile.opt == profile.max == (8, 3, 640, 640) and profile.min == (1, 3, 320, 320)
    with pytest.raises(ConfigError, match="dim 1 is fixed to 3"):
        tb.profiles_from_shapes([DYNAMIC], "1x4x640x640", None, "8x4x640x640")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        tb.profiles_from_shapes([DYNAMIC], "8x3x640x640", None, "1x3x640x640")
    with pytest.raises(ConfigError, match="unknown input 'x'"):
        tb.profiles_from_shapes([DYNAMIC], "x:1x3x640x640", None, "x:8x3x640x640")
    with pytest.raises(ConfigError, match="rank"):
        tb.profiles_from_shapes([DYNAMIC], "1x3x640", None, "8x3x640")


def test_resolve_profiles_takes_one_way_only():
    assert tb.resolve_profiles([DYNAMIC])[0].max == (1, 3, 640, 640)  # default batch 1
    with pytest.raises(ConfigError, match="not both"):
        tb.resolve_profiles([DYNAMIC], batch_sizes="1,32", min_shape="1x3x640x640", max_shape="8x3x640x640")
    with pytest.raises(ConfigError, match="--max-shape"):
        tb.resolve_profiles([DYNAMIC], min_shape="1x3x640x640")


def test_batch_beyond_the_profile_is_refused():
    bounds = {"images": tb.ShapeProfile("images", (1, 3, 64, 64), (32, 3, 64, 64), (32, 3, 64, 64)).bounds}
    meta = {"images": TensorMeta("images", np.float32, (None, 3, 64, 64))}
    validate_feed({"images": np.zeros((32, 3, 64, 64), np.float32)}, meta, bounds)
    with pytest.raises(FeedError) as exc_info:
        validate_feed({"images": np.zeros((33, 3, 64, 64), np.float32)}, meta, bounds)
    one_line(exc_info, "batch 33 is larger than the maximum 32", "--bs")


# -- precision -------------------------------------------------------------------------------------------
TRT10_FLAGS = {"FP16", "INT8", "TF32", "BF16"}
TRT11_FLAGS = {"TF32", "DEBUG", "REFIT"}  # weak-typing flags are gone


def test_builder_flags_tensorrt10():
    assert tb.builder_flags_for(TRT10_FLAGS, fp16=True, int8=False, onnx_is_half=False) == (["FP16"], [])
    assert tb.builder_flags_for(TRT10_FLAGS, fp16=True, int8=True, onnx_is_half=False) == (["FP16", "INT8"], [])
    assert tb.builder_flags_for(TRT10_FLAGS, fp16=False, int8=False, onnx_is_half=False, tf32=False) == ([], ["TF32"])


def test_builder_flags_tensorrt11_strongly_typed():
    assert tb.builder_flags_for(TRT11_FLAGS, fp16=False, int8=True, onnx_is_half=False) == ([], [])
    assert tb.builder_flags_for(TRT11_FLAGS, fp16=True, int8=False, onnx_is_half=True) == ([], [])
    with pytest.raises(EngineError) as exc_info:
        tb.builder_flags_for(TRT11_FLAGS, fp16=True, int8=False, onnx_is_half=False)
    one_line(exc_info, "yolodeploy export --half")


# -- sidecar ---------------------------------------------------------------------------------------------
def make_sidecar(**overrides):
    args = dict(
        onnx_path="yolov6n.onnx",
        onnx_sha256="ab" * 32,
        fp16=True,
        int8=False,
        builder_flags=["FP16"],
        profiles=tb.profiles_from_batch_sizes([DYNAMIC], "1,32"),
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability=(9, 0),
        inputs=[DYNAMIC],
        outputs=[TensorMeta("outputs", np.float32, ("batch", 8400, 84))],
        build_seconds=12.3456,
        workspace_gib=4.0,
    )
    args.update(overrides)
    return tb.build_sidecar(**args)


def test_sidecar_records_the_build():
    sidecar = json.loads(json.dumps(make_sidecar()))  # JSON-serializable as is
    assert sidecar["format"] == "yolodeploy-engine" and sidecar["onnx"]["sha256"] == "ab" * 32
    assert sidecar["precision"] == {"fp16": True, "int8": False, "builder_flags": ["FP16"]}
    assert sidecar["profiles"][0]["max"] == [32, 3, 640, 640]
    assert sidecar["gpu"] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]}
    assert sidecar["inputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 3, 640, 640]}]
    assert sidecar["build"]["seconds"] == 12.346 and sidecar["build"]["at"]
    tb.validate_sidecar(sidecar, tensorrt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3")


def test_sidecar_from_another_tensorrt_or_gpu_is_refused():
    sidecar = make_sidecar()
    with pytest.raises(EngineMismatchError) as exc_info:
        tb.validate_sidecar(
            sidecar, tensorrt_version="10.8.0", gpu_name="NVIDIA H100 80GB HBM3", engine_path="m.engine"
        )
    one_line(exc_info, "TensorRT 10.3.0", "TensorRT 10.8.0", "yolodeploy build-engine yolov6n.onnx -o m.engine")
    with pytest.raises(EngineMismatchError) as exc_info:
        tb.validate_sidecar(sidecar, tensorrt_version="10.3.0", gpu_name="NVIDIA A100-SXM4-40GB")
    one_line(exc_info, "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB")
    with pytest.raises(EngineError, match="not a yolodeploy-engine sidecar"):
        tb.validate_sidecar({"format": "other"}, tensorrt_version="10.3.0", gpu_name="x")


def test_read_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    assert tb.read_sidecar(engine) is None
    assert tb.sidecar_path(engine).name == "m.engine.json" and tb.layers_path(engine).name == "m.engine.layers.json"
    tb.sidecar_path(engine).write_text("{broken")
    with pytest.raises(EngineError, match="unreadable sidecar"):
        tb.read_sidecar(engine)


def test_runner_refuses_an_engine_from_another_tensorrt(tmp_path, monkeypatch):
    """The runner's path up to deserialization, with a stand-in tensorrt module and GPU name."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    tb.sidecar_path(engine).write_text(json.dumps(make_sidecar()))
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.8.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H100 80GB HBM3")
    with pytest.raises(EngineMismatchError) as exc_info:
        TensorRTRunner(engine).activate()
    one_line(exc_info, "built with TensorRT 10.3.0, but this is TensorRT 10.8.0")


def test_summarize_layers_reads_tensorrt10_and_11_layouts():
    trt10 = {"Layers": [{"Outputs": [{"Format/Datatype": "Half format"}]}, {"Outputs": [{"Format/Datatype": "Int8"}]}]}
    trt11 = {"Layers": [{"Outputs": [{"Format": "Row major linear", "DataType": "Float"}]}, {"Outputs": []}]}
    assert tb.summarize_layers(json.dumps(trt10)) == {"layers": 2, "precisions": {"fp16": 1, "int8": 1}}
    assert tb.summarize_layers(trt11) == {"layers": 2, "precisions": {"fp32": 1, "unknown": 1}}


# -- refusals before any TensorRT call ---------------------------------------------------------------------
def test_int8_without_qdq_is_refused(tiny_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(EngineError) as exc_info:
        tb.build_engine(tiny_onnx, engine, int8=True)
    one_line(exc_info, "Q/DQ", "run `yolodeploy quantize` first")
    assert list(tmp_path.iterdir()) == []


def test_int8_with_qdq_passes_that_check(tmp_path, no_tensorrt):
    qdq_onnx(tmp_path / "q.onnx")
    with pytest.raises(BackendUnavailableError):  # got past the Q/DQ check, stopped at the missing library
        tb.build_engine(tmp_path / "q.onnx", tmp_path / "q.engine", int8=True, batch_sizes="1,4")


def test_missing_tensorrt_is_one_line(tiny_onnx, tmp_path, no_tensorrt):
    with pytest.raises(BackendUnavailableError) as exc_info:
        tb.build_engine(tiny_onnx, tmp_path / "m.engine", fp16=True, batch_sizes="1,32")
    assert str(exc_info.value) == tb.TENSORRT_MISSING
    assert "pip install yolodeploy[tensorrt]" in tb.TENSORRT_MISSING and "NVIDIA GPU and driver" in tb.TENSORRT_MISSING
    with pytest.raises(BackendUnavailableError):
        TensorRTRunner(tmp_path / "m.engine").activate()
    assert not (tmp_path / "m.engine").exists()


def test_bad_onnx_is_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    with pytest.raises(OnnxModelError) as exc_info:
        tb.build_engine(corrupt, tmp_path / "m.engine")
    one_line(exc_info)
    with pytest.raises(OnnxModelError) as exc_info:
        tb.build_engine(tmp_path / "absent.onnx", tmp_path / "m.engine")
    one_line(exc_info, "no such file")
    assert not (tmp_path / "m.engine").exists()


# -- the real build (GPU machines) ---------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(TRT_SKIP is not None, reason=f"TensorRT build not tested: {TRT_SKIP}")
def test_build_fp16_engine_yolov6n_and_compare_with_torch_cuda(tmp_path):
    from yolodeploy.core.compare import compare_outputs
    from yolodeploy.deploy.export import export_onnx
    from yolodeploy.deploy.runners import TorchRunner
    from yolodeploy.models import create_model

    torch.manual_seed(0)
    model = create_model("yolov6n").eval()
    onnx_path, engine = tmp_path / "yolov6n.onnx", tmp_path / "yolov6n.engine"
    export_onnx(model, onnx_path, img_size=640, dynamic_batch=True)
    cache = tmp_path / "timing.cache"
    report = tb.build_engine(onnx_path, engine, fp16=True, batch_sizes="1,8", timing_cache=cache)
    print("\n".join(report.lines()))
    assert engine.is_file() and report.sidecar_path.is_file() and report.layers_path.is_file() and cache.is_file()
    assert report.sidecar["profiles"][0]["max"] == [8, 3, 640, 640] and report.layer_summary["layers"] > 0
    x = np.random.default_rng(0).random((8, 3, 640, 640), dtype=np.float32)
    with TensorRTRunner(engine) as trt_runner, TorchRunner(model, device="cuda") as torch_runner:
        got, expected = trt_runner.infer({"images": x})["outputs"], torch_runner.infer({"images": x})["outputs"]
        with pytest.raises(FeedError, match="larger than the maximum 8"):
            trt_runner.infer({"images": np.concatenate([x, x[:1]])})
    result = compare_outputs(torch.from_numpy(expected), torch.from_numpy(got))
    print(result)
    assert result.max_rel_error <= 2e-2, str(result)  # fp16 kernels
