"""TensorQuantizer states and checkpoints, QuantConv2d equivalences, and Q/DQ ONNX export parity with ORT."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from yolodeploy.errors import ConfigError
from yolodeploy.quant import QuantConv2d, QuantState, TensorQuantizer, fake_quantize, symmetric_scale
from yolodeploy.quant.calibrators import Histogram, compute_amax
from yolodeploy.quant.quantizer import QuantSiLU


def _calibrated(x: torch.Tensor, method: str = "max", **kwargs) -> TensorQuantizer:
    quantizer = TensorQuantizer()
    quantizer.start_calibration()
    quantizer(x)
    quantizer.stop_calibration(method, **kwargs)
    return quantizer


def test_states_disabled_calibrating_enabled():
    x = torch.randn(2, 3, 4, 4)
    quantizer = TensorQuantizer()
    assert quantizer.state is QuantState.DISABLED and not quantizer.is_calibrated
    assert quantizer(x) is x  # disabled: identity
    quantizer.start_calibration()
    assert quantizer(x) is x and quantizer(2 * x) is not None  # calibrating: identity, collects
    amax = quantizer.stop_calibration("max")
    assert amax.item() == pytest.approx(2 * x.abs().max().item()) and quantizer.state is QuantState.ENABLED
    assert torch.equal(quantizer(x), fake_quantize(x, amax))
    quantizer.disable()
    assert quantizer(x) is x


def test_stop_calibration_can_leave_disabled_and_methods_pass_kwargs():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    quantizer = TensorQuantizer()
    quantizer.start_calibration()
    quantizer(x)
    amax = quantizer.stop_calibration("percentile", enable=False, percentile=99.0)
    assert amax.item() == pytest.approx(2.576, abs=0.15) and quantizer.state is QuantState.DISABLED


def test_misuse_raises_config_error():
    quantizer = TensorQuantizer()
    with pytest.raises(ConfigError, match="uncalibrated"):
        quantizer.enable()
    with pytest.raises(ConfigError, match="start_calibration"):
        quantizer.stop_calibration()
    quantizer.start_calibration()
    with pytest.raises(ConfigError, match="no calibration data"):
        quantizer.stop_calibration()
    per_channel = TensorQuantizer(axis=0)
    per_channel.start_calibration()
    per_channel(torch.randn(3, 2))
    with pytest.raises(ConfigError, match="'max' only"):
        per_channel.stop_calibration("entropy")
    with pytest.raises(ConfigError):
        quantizer.set_amax_(float("nan"))


def test_per_channel_calibration_and_weight_calibration():
    weight = torch.randn(4, 3, 3, 3)
    by_data = TensorQuantizer(axis=0)
    by_data.start_calibration()
    by_data(weight[:, :1])
    by_data(weight[:, 1:])
    by_data.stop_calibration("max")
    direct = TensorQuantizer(axis=0)
    direct.calibrate_weight_(weight)
    assert direct.state is QuantState.DISABLED
    direct.enable()
    assert torch.equal(by_data.amax, direct.amax) and direct.amax.shape == (4,)
    assert torch.equal(direct(weight), fake_quantize(weight, weight.abs().amax(dim=(1, 2, 3)), axis=0))


def test_amax_in_state_dict_and_loads_into_fresh_quantizers():
    x = torch.randn(2, 3, 4, 4)
    source = _calibrated(x)
    state = source.state_dict()
    assert list(state) == ["amax", "unsigned"] and state["amax"].shape == () and not state["unsigned"]
    fresh = TensorQuantizer()
    fresh.load_state_dict(state)
    fresh.enable()
    assert torch.equal(fresh(x), source(x))
    conv = QuantConv2d.from_conv(nn.Conv2d(3, 5, 3))
    target = QuantConv2d(nn.Conv2d(3, 5, 3))
    target.load_state_dict(conv.state_dict())
    assert torch.equal(target.weight_quantizer.amax, conv.weight_quantizer.amax)


def test_learned_amax_trains_and_freezes_into_the_buffer():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))
    quantizer = _calibrated(x)
    calibrated = quantizer.amax.clone()
    parameter = quantizer.learn_amax_()
    assert quantizer.learns_amax and "learning amax" in repr(quantizer)
    assert set(quantizer.state_dict()) == {"log_amax", "amax", "unsigned"}
    torch.testing.assert_close(quantizer(x), fake_quantize(x, calibrated), atol=1e-6, rtol=0)  # same forward
    optimizer = torch.optim.Adam([parameter], lr=0.05)
    for _ in range(20):  # shrink the error to a half-range target: the range must follow
        loss = (quantizer(x) - x.clamp(-1, 1)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    learned = float(parameter.detach().exp())
    assert learned < float(calibrated)
    quantizer.freeze_amax_()
    assert not quantizer.learns_amax and list(quantizer.state_dict()) == ["amax", "unsigned"]
    assert float(quantizer.amax) == pytest.approx(learned)
    quantizer.freeze_amax_()  # no-op
    with pytest.raises(ConfigError, match="uncalibrated"):
        TensorQuantizer().learn_amax_()


def test_non_negative_data_makes_an_unsigned_quantizer():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(5)) * 2  # 0 <= x < 2, like a ReLU output
    quantizer = _calibrated(x)
    amax = float(quantizer.amax)
    assert quantizer.is_unsigned and quantizer.quant_max == 255 and amax == float(x.max())
    step = amax / 255
    y = quantizer(torch.cat([x, torch.tensor([-1.0, 5.0])]))
    codes = torch.round(y / step)
    assert torch.allclose(y, codes * step) and codes.min() == 0 and codes.max() == 255  # -1 -> 0, 5 -> 255
    assert torch.equal(y[:-2], torch.round(x / (quantizer.amax / 255)).clamp(0, 255) * (quantizer.amax / 255))
    assert "unsigned" in repr(quantizer)


def test_a_negative_value_or_allow_unsigned_false_keeps_it_signed():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(6))
    with_negative = _calibrated(torch.cat([x, torch.tensor([-1e-3])]))
    assert not with_negative.is_unsigned and with_negative.quant_max == 127
    forced = _calibrated(x, allow_unsigned=False)
    assert not forced.is_unsigned and torch.equal(forced(x), fake_quantize(x, forced.amax))
    # a second calibration starts over: the negative value seen before does not count
    with_negative.start_calibration()
    with_negative(x)
    with_negative.stop_calibration("max")
    assert with_negative.is_unsigned


@pytest.mark.parametrize("method", ["entropy", "mse"])
def test_unsigned_searches_256_levels(method):
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(7)).abs()
    hist = Histogram(2048)
    hist.collect(x)
    unsigned, signed = _calibrated(x, method), _calibrated(x, method, allow_unsigned=False)
    assert unsigned.is_unsigned and not signed.is_unsigned
    assert float(unsigned.amax) == pytest.approx(compute_amax(hist, method, unsigned=True), rel=1e-6)
    assert float(signed.amax) == pytest.approx(compute_amax(hist, method), rel=1e-6)


def test_set_unsigned_and_state_dict_round_trip():
    per_channel = TensorQuantizer(axis=0)
    with pytest.raises(ConfigError, match="per-channel"):
        per_channel.set_unsigned_(True)
    per_channel.set_unsigned_(False)  # signed is fine
    x = torch.rand(64, generator=torch.Generator().manual_seed(8))
    source = _calibrated(x)
    fresh = TensorQuantizer()
    fresh.load_state_dict(source.state_dict())
    fresh.enable()
    assert fresh.is_unsigned and fresh.quant_max == 255 and torch.equal(fresh(x), source(x))
    source.set_unsigned_(False)  # amax kept, scale amax / 127
    assert torch.equal(source.amax, fresh.amax) and torch.equal(source(x), fake_quantize(x, source.amax))
    fresh.load_state_dict(source.state_dict())
    assert not fresh.is_unsigned and torch.equal(fresh(x), source(x))
    with pytest.raises(ConfigError, match="per-channel"):  # an unsigned flag cannot load into a weight quantizer
        per_channel.load_state_dict({"amax": torch.ones(3), "unsigned": torch.tensor(True)})


def test_quant_conv2d_output_quantizer():
    torch.manual_seed(1)
    conv, x = nn.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 6, 6)
    qconv = QuantConv2d.from_conv(conv)
    qconv.quantize_output = True
    assert list(qconv.quantizers()) == ["input", "output"]
    with torch.no_grad():
        for quantizer in qconv.quantizers().values():
            quantizer.start_calibration()
        float_out = qconv(x)
        assert torch.equal(float_out, conv(x))  # calibrating: identity
        qconv.input_quantizer.stop_calibration("max")
        qconv.enable()  # the output quantizer is still uncalibrated: left alone (calibrating)
        assert qconv.output_quantizer.state is QuantState.CALIBRATING
        amax = qconv.output_quantizer.stop_calibration("max", enable=False)
        assert not qconv.output_quantizer.is_unsigned and float(amax) == float(float_out.abs().max())
        qconv.disable()
        qconv.enable()
        assert qconv.output_quantizer.state is QuantState.ENABLED
        x_fq = fake_quantize(x, x.abs().max())
        w_fq = fake_quantize(conv.weight, conv.weight.abs().amax(dim=(1, 2, 3)), axis=0)
        inner = nn.functional.conv2d(x_fq, w_fq, conv.bias, padding=1)
        y = qconv(x)
        assert torch.equal(y, fake_quantize(inner, amax))
        codes = y / symmetric_scale(amax)
        assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 128
        qconv.disable()
        assert torch.equal(qconv(x), conv(x))


def test_quant_silu_quantizes_its_gate_only_while_its_source_is_enabled():
    source = TensorQuantizer()
    source.set_amax_(4.0)
    act, x = QuantSiLU(source), torch.linspace(-6, 6, 96)  # no zero: the gate is act(x) / x
    for state in (QuantState.DISABLED, QuantState.CALIBRATING):
        source.state = state
        assert not act.active and torch.equal(act(x), nn.functional.silu(x))  # bit-identical to nn.SiLU
    source.enable()
    codes = act(x) / x * 255  # uint8 codes of the fixed scale 1/255 (hand-computed: round(sigmoid(x) * 255))
    assert act.active and torch.allclose(codes, (torch.sigmoid(x) * 255).round(), atol=1e-3)
    assert (act(x) - nn.functional.silu(x)).abs().max() <= 6 * 0.5 / 255 + 1e-6  # |x| * half a step
    assert QuantSiLU()(x).equal(nn.functional.silu(x)) and not list(act.children())  # source: not a child


def test_enable_leaves_an_uncalibrated_output_quantizer_disabled():
    qconv = QuantConv2d.from_conv(nn.Conv2d(3, 4, 1))
    qconv.quantize_output = True
    qconv.input_quantizer.set_amax_(1.0)
    qconv.enable()
    assert qconv.input_quantizer.state is QuantState.ENABLED
    assert qconv.output_quantizer.state is QuantState.DISABLED and not qconv.output_quantizer.is_calibrated
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        weight = qconv.weight_quantizer(qconv.conv.weight)
        assert torch.equal(qconv(x), nn.functional.conv2d(qconv.input_quantizer(x), weight, qconv.conv.bias))


def test_zero_amax_is_floored():
    quantizer = _calibrated(torch.zeros(8))
    assert quantizer.amax.item() > 0 and torch.isfinite(quantizer(torch.ones(3))).all()


def test_quant_conv2d_disabled_equals_float_and_enabled_equals_manual():
    torch.manual_seed(0)
    conv, x = nn.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 6, 6)
    qconv = QuantConv2d.from_conv(conv)
    assert list(qconv.state_dict()) == [
        "conv.weight",
        "conv.bias",
        "input_quantizer.amax",
        "input_quantizer.unsigned",
        "weight_quantizer.amax",
        "weight_quantizer.unsigned",
        "output_quantizer.amax",
        "output_quantizer.unsigned",
    ]
    assert not qconv.quantize_output and list(qconv.quantizers()) == ["input"]
    assert qconv.to_conv() is conv and torch.equal(qconv.weight_quantizer.amax, conv.weight.abs().amax(dim=(1, 2, 3)))
    with torch.no_grad():
        assert torch.equal(qconv(x), conv(x))  # disabled: exactly the float conv
        qconv.input_quantizer.start_calibration()
        qconv(x)
        qconv.input_quantizer.stop_calibration("max")
        qconv.enable()
        x_fq = fake_quantize(x, x.abs().max())
        w_fq = fake_quantize(conv.weight, conv.weight.abs().amax(dim=(1, 2, 3)), axis=0)
        assert torch.equal(qconv(x), nn.functional.conv2d(x_fq, w_fq, conv.bias, padding=1))
    qconv(x).sum().backward()  # QAT: gradients reach the float weights through the fake quantizers
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="nn.Conv2d"):
        QuantConv2d(nn.Linear(2, 2))


def _tiny_quantized_net(x: torch.Tensor) -> nn.Sequential:
    """Conv-ReLU-Conv with both convs quantized and calibrated (entropy) on ``x``."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    net[0], net[2] = QuantConv2d.from_conv(net[0]), QuantConv2d.from_conv(net[2])
    for qconv in (net[0], net[2]):
        qconv.input_quantizer.start_calibration()
    with torch.no_grad():
        net(x)
    for qconv in (net[0], net[2]):
        qconv.input_quantizer.stop_calibration("entropy")
        qconv.enable()
    return net


def _ort_outputs(model_bytes: bytes, x: torch.Tensor, optimize: bool) -> torch.Tensor:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _check_qdq_graph_and_parity(model, net: nn.Sequential, x: torch.Tensor, opset: int) -> None:
    """Opset, 4 Q + 4 DQ with initializer scales, and ORT within one input step of the last conv."""
    ops = [node.op_type for node in model.graph.node]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {opset}
    assert ops.count("QuantizeLinear") == 4 and ops.count("DequantizeLinear") == 4
    assert set(ops) <= {"Constant", "QuantizeLinear", "DequantizeLinear", "Conv", "Relu"}  # scales folded
    with torch.no_grad():
        expected = net(x)
    # one quantization step of conv2's input changes an output by at most step * sum |w| of its channel
    last = net[2]
    w_fq = last.weight_quantizer(last.conv.weight)
    bound = float(symmetric_scale(last.input_quantizer.amax) * w_fq.detach().abs().sum(dim=(1, 2, 3)).max())
    plain = (_ort_outputs(model.SerializeToString(), x, optimize=False) - expected).abs().max().item()
    assert plain <= 1e-5  # ORT without graph optimizations runs the same float math: rounding noise only
    # with optimizations ORT fuses Q/DQ into integer kernels whose requantization may round a tie the other way
    optimized = (_ort_outputs(model.SerializeToString(), x, optimize=True) - expected).abs().max().item()
    assert optimized <= bound, (optimized, bound)


def test_torchscript_export_qdq_and_ort_parity():
    onnx = pytest.importorskip("onnx")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    net = _tiny_quantized_net(x)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, dynamo=False, opset_version=13, input_names=["images"])
    _check_qdq_graph_and_parity(onnx.load_from_string(buffer.getvalue()), net, x, opset=13)


def test_dynamo_export_qdq_and_ort_parity():
    pytest.importorskip("onnxscript")
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    net = _tiny_quantized_net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (x,), dynamo=True, opset_version=18, verbose=False)
    _check_qdq_graph_and_parity(program.model_proto, net, x, opset=18)
