"""Per-layer sensitivity analysis (issue 6 item 3): rankings, modes, direct AP selection, JSON, chart."""

from __future__ import annotations

import json

import pytest
import torch

from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.errors import ConfigError
from yolodeploy.models import create_model
from yolodeploy.quant.model import quant_layers, quantize_model
from yolodeploy.quant.quantizer import QuantState
from yolodeploy.quant.sensitivity import (
    SensitivityConfig,
    SensitivityMetric,
    SensitivityMode,
    SensitivityReport,
    analyze_sensitivity,
)
from yolodeploy.quant.sensitivity_plot import plot_sensitivity

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SENSITIVE = "backbone.ERBlock_2.0.rbr_reparam"  # fed only by the stem


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval()


def _batches(seed: int, count: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 64, 64, generator=gen) for _ in range(count)]


@pytest.fixture(scope="module")
def sensitive_qmodel():
    """A quantized model where one layer's input quantization is known to dominate the error.

    The stem's output channel 0 gets a +1000 bias, and the next conv (``SENSITIVE``) ignores that channel (zero
    weights), so the float outputs keep carrying signal. With max calibration the next conv's per-tensor input
    scale is then ~1000/127: all its real inputs (order 1) round to 0 or one step, and its output is wrecked,
    far beyond the quantization error of any other layer.
    """
    qmodel = quantize_model(_model())
    with torch.no_grad():
        qmodel.get_submodule("backbone.stem.rbr_reparam").conv.bias[0] += 1000.0
        qmodel.get_submodule(SENSITIVE).conv.weight[:, 0] = 0.0
    return qmodel


@pytest.fixture(scope="module")
def one_on_report(sensitive_qmodel):
    config = SensitivityConfig(metrics="all", method="max", ap_top=0)
    config.metrics = config.metrics[:3]  # the cheap ones only
    return analyze_sensitivity(sensitive_qmodel, _batches(0), heldout=_batches(1), config=config)


def test_sensitive_layer_ranks_first(one_on_report, sensitive_qmodel):
    report = one_on_report
    assert report.layers == list(quant_layers(sensitive_qmodel))
    for metric in ("mse", "snr", "cosine"):
        assert report.ranking(metric)[0] == SENSITIVE, metric
        assert report.top(3, metric)[0] == SENSITIVE
    stats = report.results[SENSITIVE]
    assert set(stats) == {"mse", "snr_db", "cosine", "max_abs"}
    assert report.images == 4 and report.timing["layers"] > 0
    # quantizing everything is at least as bad as the sensitive layer alone is bad, and the model ends enabled
    assert report.baseline["mse"] > 0
    assert all(m.input_quantizer.state is QuantState.ENABLED for m in quant_layers(sensitive_qmodel).values())


def test_ranking_directions(one_on_report):
    report = one_on_report
    mse = [report.results[n]["mse"] for n in report.ranking("mse")]
    snr = [report.results[n]["snr_db"] for n in report.ranking("snr")]
    cosine = [report.results[n]["cosine"] for n in report.ranking("cosine")]
    assert mse == sorted(mse, reverse=True) and snr == sorted(snr) and cosine == sorted(cosine)


def test_rankings_reproducible():
    config = SensitivityConfig(metrics=("mse", "snr", "cosine"), method="percentile")
    runs = [analyze_sensitivity(_model(), _batches(0, 1), heldout=_batches(1, 1), config=config) for _ in range(2)]
    assert runs[0].results == runs[1].results and runs[0].amax == runs[1].amax
    for metric in ("mse", "snr", "cosine"):
        assert runs[0].ranking(metric) == runs[1].ranking(metric)


def test_one_off_mode(sensitive_qmodel):
    config = SensitivityConfig(metrics=("mse", "cosine"), mode="one-off", method="max")
    report = analyze_sensitivity(sensitive_qmodel, None, heldout=_batches(1, count=1), config=config)
    assert report.config.mode is SensitivityMode.ONE_OFF
    # keeping the sensitive layer float removes the dominant error: the best gain, ranked first
    assert report.ranking("mse")[0] == SENSITIVE and report.ranking("cosine")[0] == SENSITIVE
    assert report.results[SENSITIVE]["mse"] < report.baseline["mse"]
    mse = [report.results[n]["mse"] for n in report.ranking("mse")]
    assert mse == sorted(mse)


def test_direct_ap_only_for_top_layers(sensitive_qmodel):
    calls = []

    def eval_fn(model):  # a fake AP: 0.5 minus 0.01 per quantized layer, and 0.3 more when SENSITIVE is on
        enabled = [n for n, m in quant_layers(model).items() if m.input_quantizer.state is QuantState.ENABLED]
        calls.append(enabled)
        return 0.5 - 0.01 * len(enabled) - (0.3 if SENSITIVE in enabled else 0.0)

    config = SensitivityConfig(metrics=("mse", "ap"), ap_top=3, method="max")
    report = analyze_sensitivity(sensitive_qmodel, None, heldout=_batches(1, count=1), config=config, eval_fn=eval_fn)
    assert len(calls) == 1 + 3 and calls[0] == []  # the float AP once, then one per selected layer
    assert report.ranking("ap")[0] == SENSITIVE
    assert set(report.ranking("ap")) == set(report.top(3, "mse"))
    assert report.results[SENSITIVE]["ap_drop"] == pytest.approx(0.31)
    assert report.baseline["ap_float"] == 0.5
    assert "ap_drop" in report.table() and "-" not in report.table(k=3).splitlines()[1]
    with pytest.raises(ConfigError, match="eval_fn"):
        analyze_sensitivity(sensitive_qmodel, None, heldout=_batches(1, count=1), config=config)


def test_ap_only_evaluates_every_layer_without_cheap_pass(sensitive_qmodel):
    calls = []
    config = SensitivityConfig(metrics="ap", mode="one-off")
    report = analyze_sensitivity(sensitive_qmodel, None, config=config, eval_fn=lambda m: calls.append(1) or 0.4)
    layers = len(quant_layers(sensitive_qmodel))
    assert len(calls) == 2 + layers  # float, all quantized, then every layer
    assert report.images == 0 and "ap_quantized" in report.baseline
    assert len(report.ranking("ap")) == layers
    with pytest.raises(ConfigError, match="no 'mse' values"):
        report.ranking("mse")


def test_config_validation_and_round_trip():
    config = SensitivityConfig(metrics=["snr", "all"], mode="one-off", ap_top=4, method="percentile")
    assert config.metrics == (
        SensitivityMetric.SNR,
        SensitivityMetric.MSE,
        SensitivityMetric.COSINE,
        SensitivityMetric.AP,
    )
    assert SensitivityConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad, match in [
        ({"metrics": "psnr"}, "unknown sensitivity metric 'psnr'"),
        ({"mode": "one"}, "one-on, one-off"),
        ({"ap_top": -1}, "ap_top"),
        ({"images": 0}, "images"),
        ({"method": "kl"}, "calibration method"),
    ]:
        with pytest.raises(ConfigError, match=match):
            SensitivityConfig(**bad)


def test_json_round_trip_and_table(one_on_report, tmp_path):
    path = one_on_report.save_json(tmp_path / "sub" / "sens.json")
    data = json.loads(path.read_text())  # standard JSON (infinities as strings)
    assert data["version"] == 1 and data["rankings"]["mse"][0] == SENSITIVE
    loaded = SensitivityReport.load_json(path)
    assert loaded.results == one_on_report.results and loaded.layers == one_on_report.layers
    assert loaded.ranking("snr") == one_on_report.ranking("snr") and loaded.config == one_on_report.config
    lines = one_on_report.table(k=5).splitlines()
    assert len(lines) == 1 + 1 + 5 and SENSITIVE in lines[2] and lines[2].split()[0] == "1"
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    with pytest.raises(ConfigError, match="not a readable"):
        SensitivityReport.load_json(tmp_path / "missing.json")


def test_plot_writes_png(one_on_report, tmp_path):
    report = SensitivityReport.from_dict(one_on_report.to_dict())
    report.results[SENSITIVE].update(ap=0.1, ap_drop=0.2)  # a second axis with AP drop
    for metric in ("mse", "snr", "cosine"):
        path = plot_sensitivity(report, tmp_path / f"sens_{metric}.png", metric=metric)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sens_cosine.png", "sens_mse.png", "sens_snr.png"]
