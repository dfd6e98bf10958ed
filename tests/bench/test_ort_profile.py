"""benchmarks/ort_profile.py: per-part sums of an ONNX Runtime profile (rules, not layer names), end to end."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark
from torch import nn


@pytest.fixture(scope="module")
def ort_profile():
    return load_benchmark("ort_profile")


def _event(op: str, name: str, dur: float) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}


def test_parts_first_conv_scope_and_kind(ort_profile):
    profile = [
        {"cat": "Session", "name": "model_run", "dur": 999},
        _event("QuantizeLinear", "/backbone/stem/input_quantizer/QuantizeLinear", 5),
        _event("QLinearConv", "/backbone/stem/rbr_reparam/Conv_token_3", 40),
        _event("QLinearConv", "/backbone/ERBlock_2/conv/Conv_token_4", 20),
        _event("Transpose", "Transpose_token_9", 3),
        _event("QLinearSigmoid", "/detect/stems.0/act/Sigmoid", 2),
        _event("Reshape", "/detect/Reshape", 1),
        _event("Conv", "/detect/cls_preds.0/Conv", 4),
        {"cat": "Node", "name": "/detect/Reshape_fence_before", "dur": 0, "args": {"op_name": "Reshape"}},
    ]
    events = ort_profile.kernel_events(profile)
    assert [e[0] for e in events] == ["QuantizeLinear", "QLinearConv", "QLinearConv", "Transpose", "QLinearSigmoid",
                                      "Reshape", "Conv"]  # fmt: skip
    parts = ort_profile.summarize(events * 2, calls=2)  # two calls: per-call means
    assert parts["first conv"] == {"ms": 0.04, "nodes": 1}
    assert parts["backbone conv"] == {"ms": 0.02, "nodes": 1}
    assert parts["backbone q/dq"]["ms"] == pytest.approx(0.005)
    assert parts["graph layout"]["nodes"] == 1 and parts["detect int8 act"]["nodes"] == 1
    assert parts["detect other"]["ms"] == pytest.approx(0.001) and parts["detect conv"]["ms"] == pytest.approx(0.004)
    assert ort_profile._first_run_length(events * 3) == len(events)


def test_table_ratio_and_total(ort_profile):
    fp32 = {"backbone conv": {"ms": 6.0, "nodes": 50}, "detect other": {"ms": 1.0, "nodes": 100}}
    int8 = {"backbone conv": {"ms": 2.0, "nodes": 50}, "detect other": {"ms": 1.0, "nodes": 110},
            "graph layout": {"ms": 0.5, "nodes": 10}}  # fmt: skip
    lines = ort_profile.table(fp32, int8).splitlines()
    assert lines[2] == "| backbone conv | 6.000 | 2.000 | 3.00 | 50 / 50 |"
    assert "| graph layout | 0.000 | 0.500 | - | 0 / 10 |" in lines
    assert lines[-1] == "| total | 7.000 | 3.500 | 2.00 | 150 / 170 |"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's, not ours
def test_end_to_end_on_a_tiny_onnx_pair(ort_profile, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1)).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), path, dynamo=False, input_names=["images"])
    out = tmp_path / "profile.json"
    assert ort_profile.main([str(path), str(path), "--img", "32", "--threads", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    fp32 = record["parts_ms_per_call"]["fp32"]
    assert fp32["first conv"]["nodes"] == 1 and sum(p["nodes"] for p in fp32.values()) >= 2
    assert record["command"].startswith("python benchmarks/ort_profile.py") and "| total |" in record["table"]
