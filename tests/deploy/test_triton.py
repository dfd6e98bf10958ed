"""Triton model repository export: folder layout and config.pbtxt content (names, types, dims without the batch
dim, dynamic batching, instance group), from ONNX files and from an engine sidecar; refusals leave nothing."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

from yolodeploy.deploy.nms import NMSConfig, append_nms
from yolodeploy.deploy.triton import export_triton
from yolodeploy.errors import ConfigError, EngineError, OnnxModelError


def raw_model(batch="batch", dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """A stand-in detector: images (B, 3, 64, 64) -> outputs (B, 84, 6) (anchors x (4 + 2 classes)), dynamic batch."""
    nodes = [
        helper.make_node("Reshape", ["images", "shape"], ["flat"]),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["outputs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "raw",
        [helper.make_tensor_value_info("images", dtype, [batch, 3, 64, 64])],
        [helper.make_tensor_value_info("outputs", dtype, [batch, 84, 6])],
        [
            helper.make_tensor("shape", TensorProto.INT64, [3], [0, -1, 6]),
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [84]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def save(model, path):
    onnx.save(model, str(path))
    return path


def test_onnx_raw_output_config(tmp_path):
    model_file = save(raw_model(), tmp_path / "det.onnx")
    folder = export_triton(
        model_file,
        tmp_path / "repo",
        name="det",
        max_batch_size=16,
        preferred_batch_sizes=[8, 4, 16],
        max_queue_delay_us=250,
        instances=2,
    )
    assert folder == tmp_path / "repo" / "det"
    assert (folder / "1" / "model.onnx").read_bytes() == model_file.read_bytes()
    assert (
        (folder / "config.pbtxt").read_text()
        == """\
name: "det"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [
  {
    name: "images"
    data_type: TYPE_FP32
    dims: [ 3, 64, 64 ]
  }
]
output [
  {
    name: "outputs"
    data_type: TYPE_FP32
    dims: [ 84, 6 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8, 16 ]
  max_queue_delay_microseconds: 250
}
instance_group [
  {
    count: 2
    kind: KIND_AUTO
  }
]
"""
    )
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["det"]  # no staging folder left


@pytest.mark.parametrize("half", [False, True])
def test_onnx_with_nms_outputs(tmp_path, half):
    model = raw_model(dtype=TensorProto.FLOAT16 if half else TensorProto.FLOAT)
    model_file = save(append_nms(model, NMSConfig("ort", topk=50)), tmp_path / "nms.onnx")
    config = (export_triton(model_file, tmp_path / "repo", name="nms", version=3) / "config.pbtxt").read_text()
    float_type = "TYPE_FP16" if half else "TYPE_FP32"
    assert (tmp_path / "repo" / "nms" / "3" / "model.onnx").is_file()
    assert "max_batch_size: 32" in config and "preferred_batch_size" not in config
    assert f'name: "images"\n    data_type: {float_type}\n    dims: [ 3, 64, 64 ]' in config
    for name, data_type, dims in [
        ("num_dets", "TYPE_INT32", "1"),
        ("det_boxes", float_type, "50, 4"),
        ("det_scores", float_type, "50"),
        ("det_classes", "TYPE_INT32", "50"),
    ]:
        assert f'name: "{name}"\n    data_type: {data_type}\n    dims: [ {dims} ]' in config


def test_no_batching_keeps_full_shapes(tmp_path):
    model_file = save(raw_model(batch=1), tmp_path / "static.onnx")
    config = (export_triton(model_file, tmp_path / "repo", name="s", max_batch_size=0) / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in config and "dims: [ 1, 3, 64, 64 ]" in config and "dynamic_batching" not in config


def write_engine(tmp_path, *, profile_max=32, sidecar=True):
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"plan bytes")
    if sidecar:
        doc = {
            "format": "yolodeploy-engine",
            "tensorrt_version": "10.9.0",
            "profiles": [
                {
                    "input": "images",
                    "min": [1, 3, 64, 64],
                    "opt": [profile_max, 3, 64, 64],
                    "max": [profile_max, 3, 64, 64],
                }
            ],
            "inputs": [{"name": "images", "dtype": "float16", "shape": ["batch", 3, 64, 64]}],
            "outputs": [
                {"name": "num_dets", "dtype": "int32", "shape": ["batch", 1]},
                {"name": "det_boxes", "dtype": "float16", "shape": ["batch", 100, 4]},
            ],
        }
        (tmp_path / "det.engine.json").write_text(json.dumps(doc))
    return engine


def test_engine_from_sidecar(tmp_path):
    folder = export_triton(write_engine(tmp_path), tmp_path / "repo", name="trt", max_batch_size=32)
    config = (folder / "config.pbtxt").read_text()
    assert (folder / "1" / "model.plan").read_bytes() == b"plan bytes"
    assert 'platform: "tensorrt_plan"' in config and "kind: KIND_GPU" in config
    assert 'name: "images"\n    data_type: TYPE_FP16\n    dims: [ 3, 64, 64 ]' in config
    assert 'name: "det_boxes"\n    data_type: TYPE_FP16\n    dims: [ 100, 4 ]' in config


def test_overwrite(tmp_path):
    model_file = save(raw_model(), tmp_path / "det.onnx")
    export_triton(model_file, tmp_path / "repo", name="det")
    with pytest.raises(ConfigError, match="already exists; choose another --name or pass --force"):
        export_triton(model_file, tmp_path / "repo", name="det")
    folder = export_triton(model_file, tmp_path / "repo", name="det", max_batch_size=4, overwrite=True)
    assert "max_batch_size: 4" in (folder / "config.pbtxt").read_text()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["det"]


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "message"),
    [
        ("static", {}, ConfigError, "static batch dimension; Triton batching needs a dynamic one"),
        ("onnx", {"max_batch_size": 8, "preferred_batch_sizes": [16]}, ConfigError, "preferred batch sizes [16]"),
        ("onnx", {"name": "a/b"}, ConfigError, "model name 'a/b'"),
        ("onnx", {"platform": "pytorch_libtorch"}, ConfigError, "unknown Triton platform"),
        ("onnx", {"instances": 0}, ConfigError, "instances must be an integer >= 1"),
        ("corrupt", {}, OnnxModelError, "not a valid ONNX model"),
        ("engine_big", {"max_batch_size": 64}, ConfigError, "profile allows batch <= 32, not 64"),
        ("engine_no_sidecar", {}, EngineError, "no sidecar det.engine.json"),
        ("txt", {}, ConfigError, "cannot tell the platform"),
    ],
)
def test_refusals_write_nothing(tmp_path, setup, kwargs, error, message):
    if setup in ("onnx", "static"):
        model_file = save(raw_model(batch=1 if setup == "static" else "batch"), tmp_path / "m.onnx")
    elif setup == "corrupt":
        model_file = tmp_path / "m.onnx"
        model_file.write_bytes(b"\x00garbage")
    elif setup.startswith("engine"):
        model_file = write_engine(tmp_path, sidecar=setup == "engine_big")
    else:
        model_file = tmp_path / "m.txt"
        model_file.write_text("x")
    with pytest.raises(error) as exc_info:
        export_triton(model_file, tmp_path / "repo", **{"name": "m", **kwargs})
    assert message in str(exc_info.value) and "\n" not in str(exc_info.value)
    assert not (tmp_path / "repo").exists()
