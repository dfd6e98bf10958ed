"""pad_conv_input_channels: int8 convs with 3 input channels get a fourth (zero) one; outputs unchanged."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolodeploy.deploy.qdq_channels import pad_conv_input_channels

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)
IMAGE = (2, 3, 8, 8)


def _int8_conv(name: str, source: str, out_channels: int, in_channels: int, group: int = 1) -> list:
    """Nodes and initializers of DQ(int8 weight) -> Conv(DQ(source)) -> Q -> DQ, per-channel weight scales."""
    weight = RNG.integers(-127, 128, size=(out_channels, in_channels // group, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(weight, f"{name}_w"),
        numpy_helper.from_array(np.full(out_channels, 0.01, np.float32), f"{name}_ws"),
        numpy_helper.from_array(np.zeros(out_channels, np.int8), f"{name}_wz"),
        numpy_helper.from_array(np.array(0.05, np.float32), f"{name}_ys"),
        numpy_helper.from_array(np.array(128, np.uint8), f"{name}_yz"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", [f"{name}_w", f"{name}_ws", f"{name}_wz"], [f"{name}_wf"], axis=0),
        helper.make_node("Conv", [source, f"{name}_wf"], [f"{name}_y"], pads=[1, 1, 1, 1], group=group),
        helper.make_node("QuantizeLinear", [f"{name}_y", f"{name}_ys", f"{name}_yz"], [f"{name}_yq"]),
        helper.make_node("DequantizeLinear", [f"{name}_yq", f"{name}_ys", f"{name}_yz"], [f"{name}_out"]),
    ]
    return nodes, inits


def image_model(*convs: tuple[int, int, int]) -> onnx.ModelProto:
    """images -> Q/DQ (uint8, zero point 128) -> one int8 conv per ``(out, in, group)``, each a graph output."""
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
    ]
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "xs"),
             numpy_helper.from_array(np.array(128, np.uint8), "xz")]  # fmt: skip
    for index, (out_channels, in_channels, group) in enumerate(convs):
        more_nodes, more_inits = _int8_conv(f"conv{index}", "xf", out_channels, in_channels, group)
        nodes += more_nodes
        inits += more_inits
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, IMAGE)],
        [helper.make_tensor_value_info(f"conv{i}_out", TensorProto.FLOAT, (IMAGE[0], out, *IMAGE[2:]))
         for i, (out, _, _) in enumerate(convs)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, optimize: bool) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.random.default_rng(1).random(IMAGE, np.float32)})


def conv_weights(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    """Shapes of the integer weights feeding each conv's weight DQ, in graph order."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    return [inits[producers[node.input[1]].input[0]].shape for node in model.graph.node if node.op_type == "Conv"]


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("optimize", [False, True], ids=["plain", "ort-optimized"])
def test_three_channel_conv_gets_a_zero_fourth_channel(optimize):
    model = image_model((16, 3, 1))
    before = model.SerializeToString()
    padded = pad_conv_input_channels(model)
    assert model.SerializeToString() == before, "the pass mutated its input"
    assert conv_weights(padded) == [(16, 4, 3, 3)]
    assert ops(padded) - ops(model) == Counter({"Pad": 1})
    pad = next(node for node in padded.graph.node if node.op_type == "Pad")
    inits = {t.name: numpy_helper.to_array(t) for t in padded.graph.initializer}
    assert inits[pad.input[1]].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    assert int(inits[pad.input[2]]) == 128  # the zero point: the new channel dequantizes to 0
    for got, want in zip(run(padded, optimize), run(model, optimize)):
        np.testing.assert_array_equal(got, want)


def test_leaves_convs_the_fast_kernel_would_not_take_anyway():
    model = image_model((8, 3, 1), (12, 3, 1), (15, 3, 3))  # < 16 outputs, not a multiple of 8, grouped
    assert ops(pad_conv_input_channels(model)) == ops(model)


def test_shared_input_padded_for_one_consumer_only():
    model = image_model((16, 3, 1), (8, 3, 1))
    padded = pad_conv_input_channels(model)
    assert sorted(conv_weights(padded)) == [(8, 3, 3, 3), (16, 4, 3, 3)]  # toposort may reorder
    for got, want in zip(run(padded, False), run(model, False)):
        np.testing.assert_array_equal(got, want)


def test_float_conv_untouched():
    model = image_model((16, 3, 1))
    graph = model.graph
    dq = next(node for node in graph.node if node.output == ["conv0_wf"])
    weight = numpy_helper.to_array(next(t for t in graph.initializer if t.name == "conv0_w")).astype(np.float32)
    graph.node.remove(dq)
    graph.initializer.append(numpy_helper.from_array(weight, "conv0_wf"))
    assert ops(pad_conv_input_channels(model)) == ops(model)
