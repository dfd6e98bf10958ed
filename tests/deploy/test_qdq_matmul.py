"""convs_to_matmul: int8 1x1 convs with float outputs become channels-last MatMuls (ORT: MatMulIntegerToFloat)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolodeploy.deploy.qdq_matmul import convs_to_matmul

ort = pytest.importorskip("onnxruntime")
IMAGE = (2, 8, 6, 5)


def conv_model(tail: str = "float", kernel: int = 1, group: int = 1, bias: bool = True) -> onnx.ModelProto:
    """images -> Q/DQ (uint8, zero point 128) -> int8 conv (8 -> 4 channels) -> ``tail``.

    ``tail``: ``float`` (the conv output is the graph output), ``q`` (-> Q -> DQ: ORT fuses QLinearConv), ``relu_q``
    (-> Relu -> Q -> DQ: fused too), ``relu_q_and_float`` (-> Relu feeding a Q and a float Sigmoid: not fused).
    """
    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(4, 8 // group, kernel, kernel)).astype(np.int8)
    pads = [kernel // 2] * 4
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "b"] if bias else ["xf", "wf"], ["y"], pads=pads, group=group),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.linspace(0.005, 0.02, 4, dtype=np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
        numpy_helper.from_array(np.array([0.5, -1.0, 0.25, 2.0], np.float32), "b"),
        numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    outputs = ["y"]
    if tail in ("q", "relu_q", "relu_q_and_float"):
        source = "y"
        if tail != "q":
            nodes.append(helper.make_node("Relu", ["y"], ["r"]))
            source = "r"
        nodes += [helper.make_node("QuantizeLinear", [source, "ys", "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"])]  # fmt: skip
        outputs = ["out"]
        if tail == "relu_q_and_float":
            nodes.append(helper.make_node("Sigmoid", ["r"], ["gate"]))
            outputs.append("gate")
    out_shape = (IMAGE[0], 4, *IMAGE[2:])
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, IMAGE)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, out_shape) for name in outputs], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> list[np.ndarray]:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})


def ort_ops(model: onnx.ModelProto) -> Counter:
    """Op counts of the graph ONNX Runtime runs (all optimizations)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = os.path.join(folder, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("tail", ["float", "relu_q_and_float"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_1x1_int8_conv_with_a_float_output_runs_as_an_int8_matmul(tail, bias):
    """Static shapes too: there a MatMul -> Add (bias) would become a float Gemm before the int8 fusion."""
    model = conv_model(tail, bias=bias)
    rewritten = convs_to_matmul(model)

    ops = Counter(node.op_type for node in rewritten.graph.node)
    assert ops["Conv"] == 0 and ops["MatMul"] == 1 and ops["Transpose"] == 2 and ops["Add"] == int(bias)
    assert ort_ops(rewritten)["MatMulIntegerToFloat"] == 1 and ort_ops(model)["MatMulIntegerToFloat"] == 0
    x = np.random.default_rng(1).normal(size=IMAGE).astype(np.float32)
    for optimize in (False, True):
        for got, expected in zip(run(rewritten, x, optimize), run(model, x, optimize)):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize(
    "kwargs", [{"tail": "q"}, {"tail": "relu_q"}, {"kernel": 3}, {"group": 2}], ids=["q", "relu-q", "3x3", "grouped"]
)
def test_convs_ort_fuses_or_that_are_not_plain_1x1_stay(kwargs):
    model = conv_model(**kwargs)
    rewritten = convs_to_matmul(model)
    assert Counter(node.op_type for node in rewritten.graph.node)["Conv"] == 1
    assert Counter(node.op_type for node in rewritten.graph.node)["MatMul"] == 0
