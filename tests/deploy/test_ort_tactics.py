"""ort_tactics: exact weight zero-point shift (routes an int8 conv to ORT's GEMM kernel) and the per-conv tuner."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yolodeploy.deploy import ort_tactics
from yolodeploy.deploy.ort_build import optimize_onnx
from yolodeploy.deploy.ort_tactics import (
    compare_whole_models,
    int8_conv_specs,
    interleaved_timer,
    shift_weight_zero_points,
    tune_conv_kernels,
    weight_shift,
)
from yolodeploy.errors import ConfigError

ort = pytest.importorskip("onnxruntime")
IMAGE = (2, 8, 6, 6)


def conv_model(weight: np.ndarray, *, relu: bool = True, output_q: bool = True, batch: int | str = "batch"):
    """x -> Q/DQ (uint8, zp 128) -> Conv(DQ(int8 weight, per-channel)) [-> Relu] [-> Q -> DQ] -> y."""
    out_channels = weight.shape[0]
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.linspace(0.01, 0.02, out_channels).astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(out_channels, np.int8), "wz"),
        numpy_helper.from_array(np.array(0.1, np.float32), "ys"),
        numpy_helper.from_array(np.array(128, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("Conv", ["xf", "wf"], ["c"], name="conv", pads=[1, 1, 1, 1]),
    ]
    last = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        last = "r"
    if output_q:
        nodes += [helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]  # fmt: skip
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *IMAGE[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, weight.shape[0], *IMAGE[2:]])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def random_weight(low: int = -127, high: int = 127, out_channels: int = 16) -> np.ndarray:
    weight = np.random.default_rng(0).integers(low, high + 1, (out_channels, IMAGE[1], 3, 3)).astype(np.int8)
    weight[0, 0, 0, :2] = (low, high)  # both ends present
    return weight


def run(model: onnx.ModelProto) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.random.default_rng(1).normal(0, 2, IMAGE).astype(np.float32)})[0]


def weight_qparams(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """The (integer weight, zero point) behind the conv's weight input."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    dq = producers[conv.input[1]]
    return inits[dq.input[0]], inits[dq.input[2]]


def test_weight_shift_picks_the_direction_that_fits_int8():
    assert weight_shift(random_weight(-127, 127)) == -1
    assert weight_shift(random_weight(-128, 126)) == 1
    assert weight_shift(random_weight(-128, 127)) == 0
    assert weight_shift(random_weight(0, 100).astype(np.uint8)) == 0  # not an int8 weight


@pytest.mark.parametrize(("low", "high", "shift"), [(-127, 127, -1), (-128, 126, 1)])
def test_shift_is_exact_and_sets_the_zero_point(low, high, shift):
    model = conv_model(random_weight(low, high))
    shifted = shift_weight_zero_points(model, ["conv"])
    weight, zero_point = weight_qparams(shifted)
    original, _ = weight_qparams(model)
    assert zero_point.shape == (16,) and (zero_point == shift).all() and zero_point.dtype == np.int8
    np.testing.assert_array_equal(weight.astype(np.int16) - shift, original)
    np.testing.assert_array_equal(run(shifted), run(model))  # bit for bit, with ORT's fused QLinearConv
    assert weight_qparams(model)[1].any() == 0  # the input model is not mutated


def test_full_range_weight_and_unnamed_convs_are_left_alone():
    full = conv_model(random_weight(-128, 127))
    _, zero_point = weight_qparams(shift_weight_zero_points(full, ["conv"]))
    assert not zero_point.any()
    _, zero_point = weight_qparams(shift_weight_zero_points(conv_model(random_weight()), ["another"]))
    assert not zero_point.any()


def test_specs_are_the_convs_ort_runs_as_qlinearconv():
    (spec,) = int8_conv_specs(conv_model(random_weight()), batch=4)
    assert spec.name == "conv" and spec.input_shape == (4, *IMAGE[1:])
    assert spec.weight.shape == (16, 8, 3, 3) and spec.weight_scale.shape == (16,)
    assert spec.input_zero_point.dtype == np.uint8 and spec.attributes["pads"] == [1, 1, 1, 1]
    assert int8_conv_specs(conv_model(random_weight(), relu=False), batch=1)  # Conv -> Q directly
    assert int8_conv_specs(conv_model(random_weight(), output_q=False), batch=1) == []  # ORT runs it in float


def test_a_fixed_batch_must_match_the_tuning_batch():
    with pytest.raises(ConfigError, match="batch is fixed at 2"):
        int8_conv_specs(conv_model(random_weight(), batch=2), batch=32)
    assert int8_conv_specs(conv_model(random_weight(), batch=2), batch=2)


@pytest.mark.parametrize(("gemm_us", "chosen"), [(80.0, True), (97.0, False), (130.0, False)])
def test_tuner_shifts_only_convs_whose_gemm_form_wins_by_the_margin(gemm_us, chosen):
    timings = []

    def fake_timer(symmetric, gemm, feed):
        timings.append((symmetric, gemm, feed.shape, feed.dtype))
        return [(100.0, gemm_us)] * 3

    model = conv_model(random_weight())
    tuned, (tactic,) = tune_conv_kernels(model, batch=3, timer=fake_timer)
    assert tactic.gemm_chosen is chosen and tactic.gemm_ratio == pytest.approx(gemm_us / 100)
    assert tactic.as_dict()["input_shape"] == [3, *IMAGE[1:]]
    _, zero_point = weight_qparams(tuned)
    assert bool(zero_point.any()) is chosen
    np.testing.assert_array_equal(run(tuned), run(model))
    symmetric, gemm, shape, dtype = timings[0]
    assert shape == (3, *IMAGE[1:]) and dtype == np.uint8
    wz = {t.name: numpy_helper.to_array(t) for t in gemm.graph.initializer}["w_zero_point"]
    assert (wz == -1).all() and [n.op_type for n in symmetric.graph.node] == ["QLinearConv"]


def test_interleaved_timer_times_both_models_per_round():
    spec_model = conv_model(random_weight())
    timer = interleaved_timer(threads=1, rounds=2, round_seconds=0.001, pause_s=0.0)
    calls = []

    def recording(symmetric, gemm, feed):
        rounds = timer(symmetric, gemm, feed)
        calls.append(rounds)
        return rounds

    tune_conv_kernels(spec_model, batch=1, timer=recording)
    (rounds,) = calls
    assert len(rounds) == 2 and all(a > 0 and b > 0 for a, b in rounds)


def test_whole_model_comparison_feeds_an_image_batch_and_takes_per_round_ratios():
    seen = []

    def fake_timer(original, tuned, feed):
        seen.append((feed.shape, feed.dtype))
        return [(2000.0, 1000.0), (4000.0, 3000.0), (2000.0, 1800.0)]  # ratios 0.5, 0.75, 0.9

    model = conv_model(random_weight())
    result = compare_whole_models(model, model, batch=5, timer=fake_timer)
    assert seen == [((5, *IMAGE[1:]), np.float32)]
    assert result == {"original_ms": 2.0, "tuned_ms": 1.8, "ratio": 0.75}


@pytest.mark.parametrize(("ratio", "kept"), [(0.9, True), (1.1, False)])
def test_the_build_keeps_the_tuned_graph_only_if_it_is_faster_as_a_whole(monkeypatch, tmp_path, ratio, kept):
    monkeypatch.setattr(ort_tactics, "interleaved_timer", lambda *a, **k: lambda *b: [(100.0, 50.0)])  # GEMM wins
    monkeypatch.setattr(ort_tactics, "compare_whole_models",
                        lambda *a, **k: {"original_ms": 1.0, "tuned_ms": ratio, "ratio": ratio})  # fmt: skip
    source = tmp_path / "q.onnx"
    onnx.save(conv_model(random_weight()), source)
    report = optimize_onnx(source, tmp_path / "q.ort.onnx", threads=1, tune_batch=2)
    tactics = report.sidecar["conv_tactics"]
    assert tactics["gemm_chosen"] == 1 and tactics["kept"] is kept and tactics["whole_model"]["ratio"] == ratio
    assert ("saved tuned" in report.lines()[-1]) is kept
    saved = onnx.load(tmp_path / "q.ort.onnx")
    zero_points = [numpy_helper.to_array(t) for t in saved.graph.initializer if t.data_type == TensorProto.INT8
                   and numpy_helper.to_array(t).shape == (16,)]  # fmt: skip
    assert any(zp.any() for zp in zero_points) is kept
