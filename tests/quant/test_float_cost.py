"""Cost-aware partial quantization: sensitivity gains, the gain-per-ms order, and the measured float costs."""

from __future__ import annotations

import math

import pytest
import torch

from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.errors import ConfigError
from yolodeploy.models import create_model
from yolodeploy.quant.calibrate import calibrate
from yolodeploy.quant.float_cost import cost_aware_order, measure_float_costs, sensitivity_gains
from yolodeploy.quant.model import quant_layers, quantize_model, set_layer_enabled
from yolodeploy.quant.quantizer import QuantState
from yolodeploy.quant.sensitivity import SensitivityConfig, SensitivityReport

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _report(mode: str, metrics: tuple[str, ...], results: dict, baseline: dict) -> SensitivityReport:
    config = SensitivityConfig(metrics=metrics, mode=mode)
    return SensitivityReport(config, list(results), results, baseline, amax={}, images=4, timing={})


def test_one_on_gains_are_the_error_of_the_layer_alone():
    results = {"a": {"mse": 0.5, "snr_db": 10.0, "cosine": 0.9}, "b": {"mse": 0.25, "snr_db": 20.0, "cosine": 0.99}}
    report = _report("one-on", ("mse", "snr", "cosine"), results, {"mse": 1.0, "snr_db": 5.0, "cosine": 0.8})
    assert sensitivity_gains(report, "mse") == {"a": 0.5, "b": 0.25}
    assert sensitivity_gains(report, "snr") == pytest.approx({"a": 0.1, "b": 0.01})  # noise power 10^(-snr/10)
    assert sensitivity_gains(report, "cosine") == pytest.approx({"a": 0.1, "b": 0.01})
    with pytest.raises(ConfigError, match="no 'ap' values"):
        sensitivity_gains(report, "ap")


def test_one_off_gains_are_what_the_layer_removes_from_the_all_quantized_error():
    results = {"a": {"mse": 0.75, "ap_drop": 0.01}, "b": {"mse": 0.25, "ap_drop": 0.03}}
    baseline = {"mse": 1.0, "ap_float": 0.5, "ap_quantized": 0.46}
    report = _report("one-off", ("mse", "ap"), results, baseline)
    assert sensitivity_gains(report, "mse") == {"a": 0.25, "b": 0.75}
    assert sensitivity_gains(report, "ap") == pytest.approx({"a": 0.03, "b": 0.01})


def test_cost_aware_order_ranks_timed_layers_by_gain_per_ms_then_the_rest():
    ranking = ["big", "mid", "stem", "small", "untimed"]
    gains = {"big": 4.0, "mid": 2.0, "stem": 1.8, "small": 0.3, "untimed": 9.0}
    costs = {"big": 0.5, "mid": 0.2, "stem": -0.01, "small": 0.02}  # the stem: free (under the floor)
    # per ms with floor 0.02: big 8, mid 10, stem 90, small 15
    assert cost_aware_order(ranking, gains, costs, floor_ms=0.02) == ["stem", "small", "mid", "big", "untimed"]
    tied = cost_aware_order(["x", "y"], {"x": 1.0, "y": 1.0}, {"x": 0.0, "y": -1.0}, floor_ms=0.1)
    assert tied == ["x", "y"]  # both at the floor: equal gain per ms keeps the sensitivity order
    with pytest.raises(ConfigError, match="floor_ms"):
        cost_aware_order(ranking, gains, costs, floor_ms=0.0)


@pytest.fixture(scope="module")
def calibrated():
    torch.manual_seed(0)
    qmodel = quantize_model(randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval())
    gen = torch.Generator().manual_seed(0)
    calibrate(qmodel, [torch.rand(2, 3, 64, 64, generator=gen) for _ in range(2)], method="max")
    return qmodel


def test_measure_float_costs_times_each_candidate_and_restores_the_model(calibrated):
    layers = list(quant_layers(calibrated))
    set_layer_enabled(calibrated, layers[-1], False)  # a partial model: left as it was
    candidates = [layers[0], layers[5]]
    costs = measure_float_costs(calibrated, candidates, img_size=64, batch=1, rounds=2, threads=1)
    assert list(costs.costs_ms) == candidates and all(math.isfinite(c) for c in costs.costs_ms.values())
    assert costs.int8_ms > 0 and costs.floor_ms == pytest.approx(0.01 * costs.int8_ms)
    assert costs.to_dict()["batch"] == 1 and costs.to_dict()["floor_ms"] == costs.floor_ms
    states = {name: layer.input_quantizer.state for name, layer in quant_layers(calibrated).items()}
    assert states[layers[-1]] is QuantState.DISABLED
    assert all(state is QuantState.ENABLED for name, state in states.items() if name != layers[-1])
    with pytest.raises(ConfigError, match="quantized layers"):
        measure_float_costs(calibrated, ["no.such.layer"], img_size=64)
    with pytest.raises(ConfigError, match="rounds"):
        measure_float_costs(calibrated, candidates, img_size=64, rounds=0)


def test_float_costs_of_a_uint8_input_run_time_pixel_input_graphs(calibrated, monkeypatch):
    """``quantize --uint8-input`` deploys pixel-input files, so its float costs are timed on those."""
    import onnx

    from yolodeploy.quant import float_cost

    inputs, real = {}, float_cost._time_models

    def spy(paths, *args):
        for key, path in paths.items():
            inputs[key] = onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type
        return real(paths, *args)

    monkeypatch.setattr(float_cost, "_time_models", spy)
    layer = list(quant_layers(calibrated))[0]
    costs = measure_float_costs(calibrated, [layer], img_size=64, rounds=1, threads=1, uint8_input=True)
    assert inputs == {None: onnx.TensorProto.UINT8, layer: onnx.TensorProto.UINT8}
    assert math.isfinite(costs.costs_ms[layer]) and costs.int8_ms > 0
