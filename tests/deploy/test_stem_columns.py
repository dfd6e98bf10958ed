"""fold_stem_columns: the uint8 stem pair reads 4-column groups; same arithmetic, identical int8 outputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from yolodeploy.core.preprocess import random_image_batch
from yolodeploy.deploy.image_input import run_onnx
from yolodeploy.deploy.stem_columns import (
    fold_stem_columns,
    fold_stem_columns_checked,
    grouped_image_weight,
    paired_input_weight,
)

pytest.importorskip("onnxruntime")


def int_weight(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-127, 128, size=shape).astype(np.int8)


@pytest.mark.parametrize("kernel_height, pad_right", [(3, 1), (3, 0), (1, 1)])
def test_grouped_weights_compute_the_same_convs(kernel_height, pad_right):
    """Exact in float64: stem over the image == grouped stem, unstacked; the next conv == it over column pairs."""
    image = torch.randint(0, 256, (2, 3, 12, 16), dtype=torch.float64)
    stem_w, next_w = int_weight((8, 3, kernel_height, 3), 0), int_weight((5, 8, 3, 3), 1)
    pad_h = kernel_height // 2
    stem = F.conv2d(F.pad(image, (1, pad_right, pad_h, pad_h)), torch.from_numpy(stem_w).double(), stride=2)
    expected = F.conv2d(F.pad(stem, (1, pad_right, 1, 1)), torch.from_numpy(next_w).double(), stride=2)

    grouped = image.permute(0, 2, 3, 1).reshape(2, 12, 4, 12).permute(0, 3, 1, 2)  # NHWC reshape, as in the graph
    grouped_w = torch.from_numpy(grouped_image_weight(stem_w)).double()
    pairs = F.conv2d(F.pad(grouped, (1, 0, pad_h, pad_h)), grouped_w, stride=(2, 1))
    assert pairs.shape == (2, 16, stem.shape[2], 4)
    unstacked = pairs.reshape(2, 2, 8, stem.shape[2], 4).permute(0, 2, 3, 4, 1).reshape(stem.shape)
    assert torch.equal(unstacked, stem)
    paired_w = torch.from_numpy(paired_input_weight(next_w)).double()
    assert torch.equal(F.conv2d(F.pad(pairs, (1, 0, 1, 1)), paired_w, stride=(2, 1)), expected)


def stem_pair_model(
    width: int = 16, stem_stride: int = 2, extra_reader: bool = False, int8_output: bool = True
) -> onnx.ModelProto:
    """uint8 NHWC pixels -> Transpose -> DQ -> int8 3x3 conv -> Relu -> Q/DQ (uint8, zero point 128) -> int8 3x3 conv
    -> Relu -> Q/DQ -> outputs, as uint8_image_input leaves an ORT-flavour INT8 detector (``int8_output=False``:
    the second conv's output is the float model output)."""
    nodes = [
        helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("DequantizeLinear", ["nchw", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w1", "w1s", "w1z"], ["w1f"], axis=0),
        helper.make_node("Conv", ["xf", "w1f", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, stem_stride]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["yf"]),
        helper.make_node("DequantizeLinear", ["w2", "w2s"], ["w2f"], axis=0),
        helper.make_node("Conv", ["yf", "w2f", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("QuantizeLinear", ["r2", "ys", "yz"], ["zq"]),
        helper.make_node("DequantizeLinear", ["zq", "ys", "yz"], ["outputs"]),
    ]
    if not int8_output:
        nodes[-4].output[0] = "outputs"
        del nodes[-3:]
    outputs = [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["b", "c", "h", "w"])]
    if extra_reader:
        nodes.append(helper.make_node("Sigmoid", ["r1"], ["side"]))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, ["b", "c", "h", "w"]))
    rng = np.random.default_rng(3)
    inits = {
        "xs": np.array(1 / 255, np.float32), "xz": np.array(0, np.uint8),
        "w1": int_weight((16, 3, 3, 3), 4), "w1s": rng.uniform(0.001, 0.01, 16).astype(np.float32),
        "w1z": np.zeros(16, np.int8), "b1": rng.normal(0, 0.5, 16).astype(np.float32),
        "ys": np.array(0.02, np.float32), "yz": np.array(128, np.uint8),
        "w2": int_weight((8, 16, 3, 3), 5), "w2s": rng.uniform(0.001, 0.01, 8).astype(np.float32),
        "b2": rng.normal(0, 0.5, 8).astype(np.float32),
    }  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.UINT8, ("batch", 12, width, 3))], outputs,
        [numpy_helper.from_array(value, name) for name, value in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, pixels: np.ndarray, optimize: bool = True) -> np.ndarray:
    return run_onnx(model, {"images": pixels}, optimize=optimize)[0]


def test_folded_stem_gives_identical_int8_outputs():
    model = stem_pair_model()
    folded = fold_stem_columns(model)

    assert Counter(node.op_type for node in folded.graph.node)["Reshape"] == 1
    weights = [w for w in folded.graph.initializer if w.data_type == TensorProto.INT8 and len(w.dims) == 4]
    int8 = sorted(tuple(w.dims) for w in weights)
    assert int8 == [(8, 32, 3, 2), (32, 12, 3, 2)]
    convs = [node for node in folded.graph.node if node.op_type == "Conv"]
    for conv in convs:
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in conv.attribute}
        assert attrs["kernel_shape"] == [3, 2] and attrs["strides"] == [2, 1] and attrs["pads"] == [1, 1, 1, 0]
    pixels = random_image_batch(2, (12, 16), np.uint8, seed=1)
    expected = run(model, pixels)
    assert expected.shape == (2, 8, 3, 4)
    np.testing.assert_array_equal(run(folded, pixels), expected)
    # without ORT's int8 kernels the float sums run in another order: a rare tie rounds to the other level
    unoptimized = run(folded, pixels, optimize=False) - run(model, pixels, optimize=False)
    assert np.abs(unoptimized).max() <= 0.02 + 1e-6 and np.mean(unoptimized == 0) > 0.99


def test_checked_fold_keeps_the_folded_model_and_says_so():
    folded, line = fold_stem_columns_checked(stem_pair_model())
    assert line == "stem: reads 4-column groups (12 channels), identical outputs"
    assert any(node.op_type == "Reshape" for node in folded.graph.node)


def test_checked_fold_falls_back_when_the_runtime_differs():
    """The second conv's float output: ORT runs it as a float conv, whose sums change order -> not identical."""
    model = stem_pair_model(int8_output=False)
    assert fold_stem_columns(model) is not model
    kept, line = fold_stem_columns_checked(model)
    assert kept is model
    assert line.startswith("stem: kept on 3 channels (on 4-column groups ONNX Runtime differed by ")


@pytest.mark.parametrize(
    "kwargs", [{"width": 18}, {"stem_stride": 1}, {"extra_reader": True}], ids=["width-not-4k", "stride-1", "shared"]
)
def test_other_stems_are_left_alone(kwargs):
    model = stem_pair_model(**kwargs)
    assert fold_stem_columns(model) is model
    same, line = fold_stem_columns_checked(model)
    assert same is model and line.startswith("stem: no uint8 stride-2 stem pair")
