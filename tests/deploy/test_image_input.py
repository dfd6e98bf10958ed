"""uint8_image_input: raw uint8 (B, H, W, 3) pixels in, outputs identical to the float-input graph."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolodeploy.core.preprocess import image_batch, random_image_batch, to_tensor_batch
from yolodeploy.deploy.image_input import check_uint8_input, run_onnx, uint8_image_input
from yolodeploy.deploy.qdq_channels import pad_conv_input_channels
from yolodeploy.errors import ConfigError

pytest.importorskip("onnxruntime")
IMAGE = (2, 3, 8, 8)


def qdq_conv_model(
    scale: float, zero_point: np.ndarray, dtype: int = TensorProto.FLOAT, out_channels: int = 4
) -> onnx.ModelProto:
    """images -> Q/DQ (scale, zero point) -> int8 conv -> outputs; ``dtype`` is the image input's float type."""
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(out_channels, 3, 3, 3)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x32", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"], axis=0),
        helper.make_node("Conv", ["xf", "wf"], ["outputs"], pads=[1, 1, 1, 1]),
    ]
    if dtype == TensorProto.FLOAT:
        nodes[0].input[0] = "images"
    else:
        nodes.insert(0, helper.make_node("Cast", ["images"], ["x32"], to=TensorProto.FLOAT))
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "xs"),
        numpy_helper.from_array(zero_point, "xz"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full(out_channels, 0.01, np.float32), "ws"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", dtype, ("batch", *IMAGE[1:]))],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ("batch", out_channels, *IMAGE[2:]))], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, images: np.ndarray, optimize: bool = False) -> np.ndarray:
    return run_onnx(model, {"images": images}, optimize=optimize)[0]


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("amax", [1.0, 0.9999970197677612])  # the demo model's calibrated image amax: just below 1
def test_a_level_preserving_uint8_quantizer_is_removed_and_outputs_are_identical(amax):
    model = qdq_conv_model(amax / 255, np.array(0, np.uint8))
    converted = uint8_image_input(model)

    image = converted.graph.input[0].type.tensor_type
    assert image.elem_type == TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.shape.dim] == ["batch", 8, 8, 3]
    assert ops(converted)["QuantizeLinear"] == 0 and ops(converted)["Transpose"] == 1
    assert ops(converted)["Cast"] == 0
    pixels = random_image_batch(2, 8, np.uint8)
    floats = to_tensor_batch(list(pixels))
    np.testing.assert_array_equal(run(converted, pixels), run(model, floats))
    np.testing.assert_array_equal(run(converted, pixels, optimize=True), run(model, floats, optimize=True))


def test_the_stem_channel_pad_is_undone_on_raw_pixels():
    """pad_conv_input_channels pads the stem to 4 channels; on channels-last pixels ORT would pad byte by byte,
    so the pass drops the Pad and the zero weight channel again."""
    model = pad_conv_input_channels(qdq_conv_model(1 / 255, np.array(0, np.uint8), out_channels=16))
    assert ops(model)["Pad"] == 1
    converted = uint8_image_input(model)

    assert ops(converted)["Pad"] == 0 and ops(converted)["QuantizeLinear"] == 0
    int8 = [init for init in converted.graph.initializer if init.data_type == TensorProto.INT8]
    assert [tuple(init.dims) for init in int8] == [(16, 3, 3, 3)]
    pixels = random_image_batch(2, 8, np.uint8, seed=2)
    np.testing.assert_array_equal(run(converted, pixels), run(model, to_tensor_batch(list(pixels))))


@pytest.mark.parametrize(
    "scale, zero_point",
    [(1 / 127, np.array(0, np.int8)), (0.5 / 255, np.array(0, np.uint8)), (1 / 255, np.array(128, np.uint8))],
    ids=["int8-trt-flavour", "scale-too-small", "zero-point-128"],
)
def test_other_quantizers_keep_a_float_path_and_outputs_are_identical(scale, zero_point):
    model = qdq_conv_model(scale, zero_point)
    converted = uint8_image_input(model)

    assert ops(converted)["QuantizeLinear"] == 1
    assert ops(converted)["Cast"] == 1 and ops(converted)["Mul"] == 1
    pixels = random_image_batch(2, 8, np.uint8, seed=3)
    np.testing.assert_array_equal(run(converted, pixels), run(model, to_tensor_batch(list(pixels))))


def test_fp16_input_is_looked_up_like_to_tensor_batch():
    """ORT's float32 -> float16 Cast rounds some values unlike NumPy: an fp16 model gathers from a table instead."""
    model = qdq_conv_model(1 / 127, np.array(0, np.int8), dtype=TensorProto.FLOAT16)
    converted = uint8_image_input(model)

    assert ops(converted)["Gather"] == 1 and ops(converted)["Cast"] == 2  # uint8 -> int32 indices, and the model's
    pixels = random_image_batch(2, 8, np.uint8, seed=1)
    expected = run(model, to_tensor_batch(list(pixels), dtype=np.float16))
    np.testing.assert_array_equal(run(converted, pixels), expected)


def test_check_uint8_input_reports_identical_outputs():
    model = qdq_conv_model(1 / 255, np.array(0, np.uint8))
    result, pixels, output = check_uint8_input(model, uint8_image_input(model), 8)
    assert result and result.max_abs_error == 0.0
    assert pixels.shape == (2, 8, 8, 3) and pixels.dtype == np.uint8
    assert output.shape == (2, 4, 8, 8)


def test_a_non_image_input_is_refused():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["outputs"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ("batch", 10))],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ("batch", 10))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ConfigError, match="needs a float \\(B, 3, H, W\\) image input"):
        uint8_image_input(model)
    with pytest.raises(ConfigError, match="has no input 'pixels'"):
        uint8_image_input(model, input_name="pixels")


def test_image_batch_and_random_image_batch_formats():
    pixels = random_image_batch(3, (4, 6), np.uint8, seed=5)
    assert pixels.shape == (3, 4, 6, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(image_batch(list(pixels), np.uint8), pixels)
    floats = random_image_batch(3, (4, 6), np.float32, seed=5)  # same seed: the same pixels, as floats
    np.testing.assert_array_equal(floats, to_tensor_batch(list(pixels)))
    assert random_image_batch(1, 4, np.float16).dtype == np.float16
