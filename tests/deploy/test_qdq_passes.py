"""Q/DQ graph passes and the TensorRT rule checker, on small hand-built graphs (plus one torch export)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolodeploy.deploy.qdq_check import RULES, Violation, check_trt_qdq_rules
from yolodeploy.deploy.qdq_passes import (
    eliminate_redundant_qdq,
    fold_weight_quantizers,
    merge_duplicate_quantizers,
    quantize_pass_through_inputs,
    tie_scales,
    tie_scales_report,
    to_uint8_activations,
)

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)
SHAPE = (1, 2, 4, 4)


class GraphBuilder:
    """Tiny helper to write Q/DQ graphs by hand (initializer scales, or Constant nodes with ``constant=True``)."""

    def __init__(self, constant: bool = False) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.constant = constant
        self.count = 0
        self.weights: list[np.ndarray] = []

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, values: np.ndarray, prefix: str = "c") -> str:
        name = self._name(prefix)
        tensor = numpy_helper.from_array(np.asarray(values), name)
        if self.constant:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor, name=f"{name}_const"))
        else:
            self.inits.append(tensor)
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{out}_node", **attrs))
        return out

    def q(self, x: str, scale, zero_point=0, dtype=np.int8, **attrs) -> str:
        scale_name = self.const(np.array(scale, np.float32), "s")
        return self.node("QuantizeLinear", [x, scale_name, self.const(np.array(zero_point, dtype), "z")], **attrs)

    def dq(self, q: str, scale, zero_point=0, dtype=np.int8, **attrs) -> str:
        scale_name = self.const(np.array(scale, np.float32), "s")
        return self.node("DequantizeLinear", [q, scale_name, self.const(np.array(zero_point, dtype), "z")], **attrs)

    def qdq(self, x: str, scale, **kw) -> str:
        return self.dq(self.q(x, scale, **kw), scale, **kw)

    def weight(self, out_channels: int = 2, in_channels: int = 2, axis: int = 0, quantized: bool = True) -> str:
        weight = RNG.normal(size=(out_channels, in_channels, 3, 3)).astype(np.float32)
        self.weights.append(weight)
        name = self.const(weight, "w")
        if not quantized:
            return name
        scale = (np.abs(weight).reshape(weight.shape[axis] if axis == 0 else out_channels, -1).max(1) / 127).astype(
            np.float32
        )
        zero = np.zeros(scale.shape, np.int8)
        q = self.node("QuantizeLinear", [name, self.const(scale, "ws"), self.const(zero, "wz")], axis=axis)
        return self.node("DequantizeLinear", [q, self.const(scale, "ws"), self.const(zero, "wz")], axis=axis)

    def conv(self, x: str, **kw) -> str:
        return self.node("Conv", [x, self.weight(**kw)], pads=[1, 1, 1, 1])

    def model(self, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, SHAPE) for name in inputs],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model).graph.output  # outputs written with shape None
        del model.graph.output[:]
        model.graph.output.extend(inferred)
        onnx.checker.check_model(model)
        return model


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray], optimize: bool = False) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def feed(*names: str, spread: float = 1.0) -> dict[str, np.ndarray]:
    return {name: (RNG.normal(size=SHAPE) * spread).astype(np.float32) for name in names}


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node if node.op_type != "Constant")


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers, Constant-node outputs and Identity copies of them, by tensor name."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def act_q_scales(model: onnx.ModelProto) -> dict[str, float]:
    """Scale of every per-tensor QuantizeLinear, keyed by its output."""
    values = constants(model)
    return {
        n.output[0]: float(values[n.input[1]].reshape(-1)[0])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and values[n.input[1]].size == 1
    }


def pure(function, model: onnx.ModelProto):
    before = model.SerializeToString()
    result = function(model)
    assert model.SerializeToString() == before, "the pass mutated its input"
    return result


# ------------------------------------------------------------------------------------------------ tie_scales
@pytest.mark.parametrize("constant", [False, True], ids=["initializer", "constant-node"])
def test_tie_scales_concat_maxpool_add(constant):
    g = GraphBuilder(constant)
    qa, qb = g.q("x1", 0.01), g.q("x2", 0.03)
    a = g.dq(qa, 0.01)
    qcat = g.q(g.node("Concat", [a, g.dq(qb, 0.03)], axis=1), 0.02)
    y = g.node("Conv", [g.dq(qcat, 0.02), g.weight(in_channels=4)], pads=[1, 1, 1, 1])
    qpool = g.q(g.node("MaxPool", [a], kernel_shape=[2, 2]), 0.008)
    qadd1, qadd2 = g.q("x1", 0.05), g.q("x2", 0.04)
    added = g.node("Add", [g.dq(qadd1, 0.05), g.dq(qadd2, 0.04)])
    model = g.model(["x1", "x2"], [y, g.dq(qpool, 0.008), added])
    assert {v.rule for v in check_trt_qdq_rules(model)} == {"QDQ2", "QDQ3"}

    tied, report = pure(tie_scales_report, model)
    assert pure(tie_scales, model).SerializeToString() == tied.SerializeToString()
    assert ops(tied) == ops(model)
    scales = act_q_scales(tied)
    assert scales[qa] == scales[qb] == scales[qcat] == pytest.approx(0.03)  # the max of the Concat group
    assert scales[qpool] == scales[qa]  # MaxPool passes its input scale through
    assert scales[qadd1] == scales[qadd2] == pytest.approx(0.05)  # Add: max
    assert report.num_groups == 2 and report.num_changed == 4
    assert check_trt_qdq_rules(tied) == []
    assert tie_scales_report(tied)[1].num_changed == 0  # idempotent

    inputs = feed("x1", "x2", spread=0.2)  # small enough that no original scale clips
    (conv0, pool0, add0), (conv1, pool1, add1) = run(model, inputs), run(tied, inputs)
    assert np.abs(pool0 - pool1).max() <= 0.03 + 1e-6 and np.abs(add0 - add1).max() <= 0.05 + 1e-6
    weight_l1 = max(np.abs(w).sum() for w in g.weights)  # each conv input moves by at most one step
    assert np.abs(conv0 - conv1).max() <= 0.03 * weight_l1


def test_tie_scales_leaves_float_input_maxpool_alone():
    g = GraphBuilder()
    pooled = g.qdq(g.node("MaxPool", ["x1"], kernel_shape=[2, 2]), 0.005)
    model = g.model(["x1"], [pooled])
    tied, report = tie_scales_report(model)
    assert report.num_groups == 0 and act_q_scales(tied) == act_q_scales(model)


# ---------------------------------------------------------------------------------------------- elimination
def test_eliminate_collapses_requantization_chain():
    g = GraphBuilder()
    chain = g.qdq(g.qdq("x1", 0.02), 0.02)
    y = g.conv(chain)
    model = g.model(["x1"], [y])
    lean = pure(eliminate_redundant_qdq, model)
    assert sum(ops(model).values()) - sum(ops(lean).values()) == 2
    assert ops(lean)["QuantizeLinear"] == 2 and ops(lean)["DequantizeLinear"] == 2  # activation + weight pair
    inputs = feed("x1", spread=3.0)
    np.testing.assert_array_equal(run(model, inputs)[0], run(lean, inputs)[0])


def test_eliminate_keeps_requantization_with_other_scale():
    g = GraphBuilder()
    model = g.model(["x1"], [g.conv(g.qdq(g.qdq("x1", 0.02), 0.03))])
    assert ops(eliminate_redundant_qdq(model)) == ops(model)


def test_eliminate_drops_pairs_feeding_float_ops_only():
    g = GraphBuilder()
    features = g.conv(g.qdq("x1", 0.02))  # kept: feeds a Conv
    score = g.node("Sigmoid", [g.qdq(features, 0.05)])  # removed: feeds Sigmoid
    raw = g.qdq(features, 0.07)  # removed: a graph output (the tensor keeps its name)
    shaped = g.node("Softmax", [g.node("Reshape", [g.qdq(features, 0.04), g.const(np.array([1, -1], np.int64))])])
    model = g.model(["x1"], [score, raw, shaped])
    lean = pure(eliminate_redundant_qdq, model)
    assert ops(lean)["QuantizeLinear"] == 2 and ops(lean)["DequantizeLinear"] == 2
    assert [o.name for o in lean.graph.output] == [o.name for o in model.graph.output]
    inputs = feed("x1", spread=0.3)  # no clamping: the error is at most half a step
    after = run(lean, inputs)
    reference = run(eliminate_redundant_qdq(g.model(["x1"], [features])), inputs)[0]
    np.testing.assert_allclose(after[1], reference, rtol=0, atol=0)
    for before_value, after_value, scale in zip(run(model, inputs), after, (0.05, 0.07, 0.04)):
        assert np.abs(before_value - after_value).max() <= scale / 2 + 1e-6


# ------------------------------------------------------------------------------------------------------- u8
def test_to_uint8_is_bit_exact_and_leaves_weights():
    g = GraphBuilder(constant=True)
    a = g.conv(g.qdq("x1", 0.02))
    b = g.qdq(g.node("Add", [g.qdq(a, 0.1), g.qdq("x2", 0.1)]), 0.1)
    model = g.model(["x1", "x2"], [g.node("Concat", [b, g.qdq("x2", 0.01)], axis=1)])
    u8 = pure(to_uint8_activations, model)
    values = constants(u8)
    for node in u8.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = values[node.input[2]]
            weight = "axis" in {a.name for a in node.attribute}
            assert (zero_point.dtype, int(zero_point.reshape(-1)[0])) == ((np.int8, 0) if weight else (np.uint8, 128))
    for spread in (0.5, 100.0):  # 100: far beyond the range, hits the clamp
        inputs = feed("x1", "x2", spread=spread)
        np.testing.assert_array_equal(run(model, inputs)[0], run(u8, inputs)[0])
    inputs = feed("x1", "x2")
    np.testing.assert_allclose(run(model, inputs, optimize=True)[0], run(u8, inputs, optimize=True)[0], atol=0.11)


# -------------------------------------------------------------------------------------------------- checker
def clean_model() -> onnx.ModelProto:
    g = GraphBuilder()
    return g.model(["x1"], [g.conv(g.qdq("x1", 0.02))])


def test_checker_clean_graph():
    assert check_trt_qdq_rules(clean_model()) == []


def _rule_graph(rule: str) -> onnx.ModelProto:
    g = GraphBuilder()
    if rule == "QDQ1":
        out = g.conv(g.qdq("x1", 0.02), quantized=False)
    elif rule == "QDQ2":
        out = g.node("Concat", [g.qdq("x1", 0.01), g.qdq("x1", 0.02)], axis=1)
    elif rule == "QDQ3":
        out = g.qdq(g.node("Resize", [g.qdq("x1", 0.01), "", g.const(np.ones(4, np.float32))]), 0.02)
    elif rule == "QDQ4":
        out = g.conv(g.qdq("x1", 0.02, zero_point=3))
    elif rule == "QDQ5":
        out = g.node("Conv", [g.qdq("x1", 0.02), g.weight(out_channels=2, in_channels=2, axis=1)], pads=[1] * 4)
    elif rule == "QDQ6":
        out = g.node("Cast", [g.q("x1", 0.02)], to=TensorProto.FLOAT)
    elif rule == "QDQ7":
        out = g.conv(g.dq(g.q("x1", 0.02), 0.03))
    else:
        out = g.conv(g.qdq("x1", -0.02))
    return g.model(["x1"], [out])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_checker_rules(rule):
    model = _rule_graph(rule)
    violations = pure(check_trt_qdq_rules, model)
    assert rule in {v.rule for v in violations}, violations
    assert all(isinstance(v, Violation) and v.node and v.message for v in violations)


# --------------------------------------------------------------------------------------------- torch export
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter the fake-quant core uses
def test_passes_on_torch_fake_quant_export(tmp_path):
    torch = pytest.importorskip("torch")

    def fq(x, scale):
        return torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127)

    class QuantConv(torch.nn.Module):
        def __init__(self, in_channels: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels, 2, 3, padding=1)
            self.register_buffer("scale", self.conv.weight.detach().abs().amax((1, 2, 3)) / 127)
            self.register_buffer("zero_point", torch.zeros(2, dtype=torch.int32))

        def forward(self, x):
            weight = torch.fake_quantize_per_channel_affine(self.conv.weight, self.scale, self.zero_point, 0, -128, 127)
            return torch.nn.functional.conv2d(x, weight, self.conv.bias, padding=1)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList(QuantConv(c) for c in (2, 2, 4, 2))

        def forward(self, x):
            a, b = self.convs[0](fq(x, 0.01)), self.convs[1](fq(x, 0.02))
            cat = fq(torch.cat([fq(a, 0.04), fq(b, 0.06)], 1), 0.05)  # Concat: three scales
            pooled = fq(torch.nn.functional.max_pool2d(fq(self.convs[2](cat), 0.05), 3, 1, 1), 0.03)
            return torch.sigmoid(fq(self.convs[3](pooled), 0.05))  # a Q/DQ that only feeds a Sigmoid

    path = tmp_path / "tiny.onnx"
    with torch.no_grad():
        torch.onnx.export(Tiny().eval(), torch.randn(SHAPE), str(path), dynamo=False, opset_version=13)
    model = onnx.load(str(path))
    assert {v.rule for v in check_trt_qdq_rules(model)} == {"QDQ2", "QDQ3"}
    tied, report = tie_scales_report(model)
    assert report.num_groups == 2 and report.num_changed == 3  # concat inputs 0.04, 0.05 -> 0.06; pool 0.03 -> 0.05
    result = eliminate_redundant_qdq(tied)
    assert result.opset_import[0].version == 13 and check_trt_qdq_rules(result) == []
    assert ops(model)["QuantizeLinear"] - ops(result)["QuantizeLinear"] == 1  # the pre-Sigmoid pair
    u8 = to_uint8_activations(result)
    zero_points = constants(u8)
    kinds = Counter(zero_points[n.input[2]].dtype.name for n in u8.graph.node if n.op_type == "QuantizeLinear")
    assert kinds == {"uint8": 7, "int8": 4}  # activations rewritten, the 4 per-channel weights untouched
    inputs = {model.graph.input[0].name: RNG.normal(size=SHAPE).astype(np.float32) * 3}
    np.testing.assert_array_equal(run(result, inputs)[0], run(u8, inputs)[0])
    folded = pure(fold_weight_quantizers, u8)
    assert ops(u8)["QuantizeLinear"] - ops(folded)["QuantizeLinear"] == 4  # the weight Qs became int8 initializers
    assert all(constants(folded).get(n.input[0]) is None for n in folded.graph.node if n.op_type == "QuantizeLinear")
    assert sum(t.data_type == onnx.TensorProto.INT8 and t.dims[0] == 2 for t in folded.graph.initializer) >= 4
    np.testing.assert_array_equal(run(u8, inputs)[0], run(folded, inputs)[0])


# ------------------------------------------------------------------------------------- ORT flavour passes
def optimized_ops(model: onnx.ModelProto, tmp_path) -> Counter:
    """Op counts of the graph ONNX Runtime runs after all its optimizations (saved via optimized_model_filepath)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return ops(onnx.load(str(tmp_path / "optimized.onnx")))


def act_zero_points(model: onnx.ModelProto) -> Counter:
    """(dtype, value) of the zero point of every per-tensor Q/DQ."""
    values = constants(model)
    return Counter(
        (values[n.input[2]].dtype.name, int(values[n.input[2]].reshape(-1)[0]))
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and values[n.input[1]].size == 1
    )


U8 = {"dtype": np.uint8}


def test_merge_duplicate_quantizers():
    g = GraphBuilder()
    outs = [g.conv(g.qdq("x1", 0.02)), g.conv(g.qdq("x1", 0.02))]  # the duplicate pair
    outs += [g.conv(g.qdq("x1", 0.03)), g.conv(g.qdq("x1", 0.02, **U8))]  # other scale / other type: kept
    model = g.model(["x1"], outs)
    merged = pure(merge_duplicate_quantizers, model)
    assert ops(model)["QuantizeLinear"] - ops(merged)["QuantizeLinear"] == 1
    assert ops(model)["DequantizeLinear"] - ops(merged)["DequantizeLinear"] == 1
    q_only = merge_duplicate_quantizers(model, dequantizers=False)
    assert ops(model)["QuantizeLinear"] - ops(q_only)["QuantizeLinear"] == 1
    assert ops(q_only)["DequantizeLinear"] == ops(model)["DequantizeLinear"]
    assert ops(merge_duplicate_quantizers(merged)) == ops(merged)  # idempotent
    inputs = feed("x1", spread=3.0)
    for before, after, after_q in zip(run(model, inputs), run(merged, inputs), run(q_only, inputs)):
        np.testing.assert_array_equal(before, after)
        np.testing.assert_array_equal(before, after_q)


def sppf_model(fold: bool = True) -> onnx.ModelProto:
    """Conv -> Relu -> {MaxPool -> MaxPool, Concat} -> Q -> DQ -> Conv, plus a second (duplicate-Q) user of the
    Relu; uint8 zero point 0 after the Relu, int8 Q/DQ on the conv outputs (the ORT flavour's layout)."""
    g = GraphBuilder()
    relu = g.node("Relu", [g.conv(g.qdq("x1", 0.03, **U8))])
    pool1 = g.node("MaxPool", [relu], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    pool2 = g.node("MaxPool", [pool1], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    cat = g.node("Concat", [relu, pool1, pool2], axis=1)
    head = g.qdq(g.node("Conv", [g.qdq(cat, 0.05, **U8), g.weight(in_channels=6)], pads=[1] * 4), 0.2)
    side = g.qdq(g.conv(g.qdq(relu, 0.05, **U8)), 0.2)
    model = g.model(["x1"], [g.node("Sigmoid", [head]), g.node("Sigmoid", [side])])
    return fold_weight_quantizers(model) if fold else model


def test_quantize_pass_through_inputs_sppf(tmp_path):
    model = sppf_model()
    result = pure(quantize_pass_through_inputs, model)
    # new Q/DQ on the two MaxPool outputs; the Relu's Q is shared by its Concat, MaxPool and Conv uses
    assert ops(result)["QuantizeLinear"] - ops(model)["QuantizeLinear"] == 2
    assert ops(result)["DequantizeLinear"] - ops(model)["DequantizeLinear"] == 2
    relu = next(n for n in result.graph.node if n.op_type == "Relu")
    assert [n.op_type for n in result.graph.node if relu.output[0] in n.input] == ["QuantizeLinear"]
    assert ops(quantize_pass_through_inputs(result)) == ops(result)  # idempotent
    for spread in (0.5, 3.0):
        inputs = feed("x1", spread=spread)
        for before, after in zip(run(model, inputs), run(result, inputs)):
            np.testing.assert_array_equal(before, after)
    before, after = optimized_ops(model, tmp_path), optimized_ops(result, tmp_path)
    assert before["QLinearConv"] < 3
    assert after["QLinearConv"] == 3 and after["Conv"] + after["FusedConv"] + after["Relu"] == 0, after


def test_quantize_pass_through_inputs_leaves_float_uses_and_linear_resize():
    g = GraphBuilder()
    pooled = g.node("MaxPool", ["x1"], kernel_shape=[2, 2])
    scales = g.const(np.array([1, 1, 2, 2], np.float32))
    linear = g.qdq(g.node("Resize", [pooled, "", scales], mode="linear"), 0.02)  # interpolates: not moved
    used_as_float = g.node("Sigmoid", [pooled])  # the MaxPool output also has a float use: not moved
    model = g.model(["x1"], [g.conv(linear), used_as_float])
    assert ops(quantize_pass_through_inputs(model)) == ops(model)
    g = GraphBuilder()
    nearest = g.node("Resize", ["x1", "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    transposed = g.qdq(g.node("Transpose", [nearest], perm=[0, 1, 3, 2]), 0.02)
    model = g.model(["x1"], [g.conv(transposed)])
    result = quantize_pass_through_inputs(model)
    assert ops(result)["QuantizeLinear"] - ops(model)["QuantizeLinear"] == 2  # before the Transpose and Resize
    inputs = feed("x1", spread=3.0)
    np.testing.assert_array_equal(run(model, inputs)[0], run(result, inputs)[0])


def test_eliminate_keeps_conv_output_pairs_when_asked():
    g = GraphBuilder()
    score = g.node("Sigmoid", [g.qdq(g.conv(g.qdq("x1", 0.02)), 0.05)])  # DQ -> Conv -> Q: kept if asked
    float_conv = g.node("Sigmoid", [g.qdq(g.conv("x1", quantized=False), 0.05)])  # float conv: removed anyway
    model = g.model(["x1"], [score, float_conv])
    default = eliminate_redundant_qdq(model)
    kept = pure(lambda m: eliminate_redundant_qdq(m, keep_conv_outputs=True), model)
    assert ops(model)["QuantizeLinear"] - ops(default)["QuantizeLinear"] == 2
    assert ops(model)["QuantizeLinear"] - ops(kept)["QuantizeLinear"] == 1
    inputs = feed("x1")
    np.testing.assert_array_equal(run(model, inputs)[0], run(kept, inputs)[0])


def test_to_uint8_leaves_uint8_activations_alone():
    g = GraphBuilder()
    relu = g.node("Relu", ["x1"])
    model = g.model(["x1"], [g.conv(g.qdq(relu, 0.02, **U8)), g.conv(g.qdq("x1", 0.02))])
    assert act_zero_points(model) == {("uint8", 0): 2, ("int8", 0): 2}
    u8 = pure(to_uint8_activations, model)
    assert act_zero_points(u8) == {("uint8", 0): 2, ("uint8", 128): 2}
    assert act_zero_points(to_uint8_activations(u8)) == act_zero_points(u8)
    inputs = feed("x1", spread=3.0)
    for before, after in zip(run(model, inputs), run(u8, inputs)):
        np.testing.assert_array_equal(before, after)


def test_tie_scales_skips_mixed_zero_point_types_and_ties_uint8():
    g = GraphBuilder()
    mixed = g.node("Concat", [g.qdq("x1", 0.01), g.qdq(g.node("Relu", ["x2"]), 0.02, **U8)], axis=1)
    model = g.model(["x1", "x2"], [g.conv(g.qdq(mixed, 0.03), in_channels=4)])
    tied, report = pure(tie_scales_report, model)
    assert report.num_groups == 0 and len(report.skipped) == 1 and len(report.skipped[0]) == 3
    assert act_q_scales(tied) == act_q_scales(model)
    g = GraphBuilder()
    relus = [g.node("Relu", [name]) for name in ("x1", "x2")]
    cat = g.node("Concat", [g.qdq(relus[0], 0.01, **U8), g.qdq(relus[1], 0.02, **U8)], axis=1)
    model = g.model(["x1", "x2"], [g.conv(g.qdq(cat, 0.03, **U8), in_channels=4)])
    tied, report = tie_scales_report(model)
    assert report.num_groups == 1 and report.num_changed == 2 and not report.skipped
    assert sorted(act_q_scales(tied).values()) == pytest.approx([0.03] * 3)
    assert act_zero_points(tied) == act_zero_points(model)


def test_quantize_pass_through_inputs_gives_relu_inputs_uint8(tmp_path):
    g = GraphBuilder()
    relu = g.node("Relu", [g.conv(g.qdq("x1", 0.03, **U8))])
    cat = g.node("Concat", [relu, "x2"], axis=1)  # x2 can be negative: the Concat's Q is signed int8
    model = fold_weight_quantizers(g.model(["x1", "x2"], [g.conv(g.qdq(cat, 0.05), in_channels=4)]))
    result = pure(quantize_pass_through_inputs, model)
    added = act_zero_points(result) - act_zero_points(model)
    assert added == {("uint8", 0): 2, ("int8", 0): 2}  # Relu input: same scale, uint8 zero point 0
    for spread in (0.5, 30.0):  # 30: codes beyond 127, where uint8 and int8 clamp differently
        inputs = feed("x1", "x2", spread=spread)
        np.testing.assert_array_equal(run(model, inputs)[0], run(result, inputs)[0])
    assert optimized_ops(to_uint8_activations(result), tmp_path)["QLinearConv"] == 1  # the Relu conv is int8
