"""Checked ONNX loading (one-line errors), I/O metadata, opset and Q/DQ queries."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from yolodeploy.deploy.onnx_utils import TensorMeta, check_opset, has_qdq, load_onnx_checked, onnx_io, onnx_opset
from yolodeploy.errors import OnnxModelError


def identity_model(shape, dtype=TensorProto.FLOAT, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["outputs"])],
        "g",
        [helper.make_tensor_value_info("images", dtype, shape)],
        [helper.make_tensor_value_info("outputs", dtype, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def save(model: onnx.ModelProto, path):
    onnx.save(model, str(path))
    return path


def assert_one_line(exc_info, *fragments):
    message = str(exc_info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_loads_an_image_model_and_reads_io(tmp_path):
    model = load_onnx_checked(save(identity_model(["batch", 3, 64, 64]), tmp_path / "ok.onnx"))
    inputs, outputs = onnx_io(model)
    assert inputs == [TensorMeta("images", np.float32, ("batch", 3, 64, 64))]
    assert outputs[0].name == "outputs" and outputs[0].dtype == np.float32
    assert onnx_opset(model) == 17 and not has_qdq(model)
    check_opset(model, 17)
    with pytest.raises(OnnxModelError, match="opset 17, not the requested 13"):
        check_opset(model, 13)


def test_fp16_image_input_is_accepted(tmp_path):
    load_onnx_checked(save(identity_model([1, 3, 32, 32], TensorProto.FLOAT16), tmp_path / "h.onnx"))


def test_initializers_are_not_inputs():
    model = identity_model([1, 3, 8, 8])
    model.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0]))
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]))
    assert [meta.name for meta in onnx_io(model)[0]] == ["images"]


def test_missing_file(tmp_path):
    with pytest.raises(OnnxModelError) as exc_info:
        load_onnx_checked(tmp_path / "nope.onnx")
    assert_one_line(exc_info, "nope.onnx", "no such file")


@pytest.mark.parametrize("content", [b"", b"this is not a protobuf \xff\xfe" * 10, "truncated"])
def test_corrupt_file_is_one_line(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content == "truncated":
        data = identity_model([1, 3, 8, 8]).SerializeToString()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(OnnxModelError) as exc_info:
        load_onnx_checked(path)
    assert_one_line(exc_info, "bad.onnx", "not a valid ONNX model", "re-export it")


@pytest.mark.parametrize(
    ("shape", "dtype", "fragment"),
    [
        ([1, 10], TensorProto.FLOAT, "is float32 1x10, not an image tensor"),
        ([1, 1, 64, 64], TensorProto.FLOAT, "is float32 1x1x64x64, not an image tensor"),
        (["batch", 3, 64, 64], TensorProto.INT64, "is int64 batchx3x64x64, not an image tensor"),
        (["batch", 3, 64, 64], TensorProto.UINT8, "is uint8 batchx3x64x64, not an image tensor"),  # pixels: NHWC
    ],
)
def test_input_that_is_not_an_image_is_one_line(tmp_path, shape, dtype, fragment):
    path = save(identity_model(shape, dtype), tmp_path / "notimage.onnx")
    with pytest.raises(OnnxModelError) as exc_info:
        load_onnx_checked(path)
    assert_one_line(exc_info, "notimage.onnx", fragment, "expected one image input (B, 3, H, W)")
    assert load_onnx_checked(path, image_input=False).graph.input[0].name == "images"


def test_uint8_pixel_input_is_an_image(tmp_path):
    """``export --uint8-input`` files take (B, H, W, 3) uint8: build-engine, bench and eval load them."""
    path = save(identity_model(["batch", 64, 64, 3], TensorProto.UINT8), tmp_path / "pixels.onnx")
    assert load_onnx_checked(path).graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8


def test_two_inputs_is_one_line(tmp_path):
    model = identity_model([1, 3, 8, 8])
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    with pytest.raises(OnnxModelError) as exc_info:
        load_onnx_checked(save(model, tmp_path / "two.onnx"))
    assert_one_line(exc_info, "2 inputs (images, extra)")


def test_has_qdq():
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["outputs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])],
    )
    assert has_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
