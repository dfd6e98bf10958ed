"""``run_ptq`` end to end on a tiny model: files, parity, AP, partial quantization, calibration cache, record.

QAT (``PTQConfig.qat``, ``--qat``) is tested in ``test_quantize_qat.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolodeploy.errors import ConfigError
from yolodeploy.models.checkpoint import read_metadata
from yolodeploy.quant.model import load_quantized
from yolodeploy.quant.ptq import PTQConfig, run_ptq
from yolodeploy.quant.report import NOT_MEASURED, quant_record, report_table, write_record, write_report

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _config(tiny_checkpoint, tiny_dataset, out, **kw) -> PTQConfig:
    return PTQConfig(
        model=str(tiny_checkpoint), data=str(tiny_dataset), output=str(out), img_size=64, calib_images=4, **kw
    )


@pytest.fixture(scope="module")
def plain(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    return run_ptq(_config(tiny_checkpoint, tiny_dataset, tmp_path_factory.mktemp("ptq_plain")))


def test_plain_ptq_writes_everything_and_passes_parity(plain):
    for role in ("fp32_onnx", "int8_ort_onnx", "int8_trt_onnx", "int8_checkpoint", "report_md", "report_json"):
        assert Path(plain.files[role]).is_file(), role
    assert set(plain.parity) == {"int8_ort", "int8_trt"} and all(p["ok"] for p in plain.parity.values())
    assert set(plain.rows) == {"fp32", "ptq"} and plain.float_layers == []
    for row in plain.rows.values():
        assert 0 <= row["ap"] <= 1 and 0 <= row["ap50"] <= 1
    assert not plain.cached
    report = json.loads(open(plain.files["report_json"]).read())
    assert report["rows"] == plain.rows and report["config"]["method"] == "percentile"
    assert "| FP32 |" in open(plain.files["report_md"]).read()
    meta = read_metadata(plain.files["int8_checkpoint"])["user"]
    assert meta["calibration"]["method"] == "percentile" and len(meta["calibration"]["manifest_sha256"]) == 64
    load_quantized(plain.files["int8_checkpoint"])  # round-trips


def test_sensitive_topk_keeps_two_layers_float_and_reuses_the_cache(plain, tiny_checkpoint, tiny_dataset, tmp_path):
    cache = str(Path(plain.files["fp32_onnx"]).parent / "calib_cache")
    result = run_ptq(_config(tiny_checkpoint, tiny_dataset, tmp_path, sensitive_topk=2, cache_dir=cache))
    assert result.cached and "reused" in result.calibration["note"]
    assert len(result.float_layers) == 2 and set(result.rows) == {"fp32", "ptq", "ptq_top2"}
    meta = read_metadata(result.files["int8_checkpoint"])["user"]
    assert meta["ptq"]["float_layers"] == result.float_layers
    assert sorted(meta["quantization"]["disabled_layers"]) == sorted(result.float_layers)
    report = json.loads(open(result.files["report_json"]).read())
    assert report["float_layers"] == result.float_layers
    assert "partial PTQ (top-2)" in open(result.files["report_md"]).read()
    assert all(p["ok"] for p in result.parity.values()) and len(result.parity) == 4


def test_cost_aware_topk_keeps_the_first_layers_of_the_gain_per_ms_order(
    plain, tiny_checkpoint, tiny_dataset, tmp_path
):
    cache = str(Path(plain.files["fp32_onnx"]).parent / "calib_cache")
    config = _config(
        tiny_checkpoint, tiny_dataset, tmp_path, sensitive_topk=2, cost_aware=True, cost_candidates=3, cost_rounds=1,
        cache_dir=cache,
    )  # fmt: skip
    result = run_ptq(config)
    costs = result.float_costs
    assert costs["batch"] == 1 and costs["int8_ms"] > 0 and costs["metric"] == "mse"
    candidates = costs["candidates"]
    assert sorted(row["sensitivity_rank"] for row in candidates) == [1, 2, 3]
    assert [row["gain_per_ms"] for row in candidates] == sorted(
        (row["gain_per_ms"] for row in candidates), reverse=True
    )
    assert result.float_layers == [row["layer"] for row in candidates[:2]]
    assert all(p["ok"] for p in result.parity.values())
    report = json.loads(Path(result.files["report_json"]).read_text())
    assert report["float_costs"] == costs and report["config"]["cost_aware"] is True
    assert "## --cost-aware: float cost of each candidate" in Path(result.files["report_md"]).read_text()


def test_bad_configs_raise_before_writing(tiny_checkpoint, tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="sensitive_topk"):
        _config(tiny_checkpoint, tiny_dataset, tmp_path / "a", sensitive_topk=-1)
    with pytest.raises(ConfigError, match="larger than"):
        run_ptq(_config(tiny_checkpoint, tiny_dataset, tmp_path / "b", sensitive_topk=10_000))
    with pytest.raises(ConfigError, match="no such checkpoint"):
        run_ptq(_config(tmp_path / "missing.safetensors", tiny_dataset, tmp_path / "c"))
    with pytest.raises(ConfigError, match="--cost-aware picks the float layers"):
        _config(tiny_checkpoint, tiny_dataset, tmp_path / "d", cost_aware=True)
    with pytest.raises(ConfigError, match="cost_candidates must be >= 1"):
        _config(tiny_checkpoint, tiny_dataset, tmp_path / "e", sensitive_topk=1, cost_aware=True, cost_candidates=0)
    assert not any((tmp_path / name).exists() for name in "abcde")
    config = _config(tiny_checkpoint, tiny_dataset, tmp_path)
    assert PTQConfig.from_dict(config.to_dict()) == config


def test_report_fills_only_measured_cells(tmp_path):
    results = {"rows": {"ptq": {"ap": 0.3, "latency_ms": {"1": 5.0}}, "fp32": {"ap": 0.31, "ap50": 0.5,
               "latency_ms": {"1": 15.0}}, "qat": {"ap": 0.305}}}  # fmt: skip
    lines = report_table(results).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["FP32", "PTQ", "QAT"]
    assert "3.00×" in lines[3] and lines[4].count(NOT_MEASURED) == 3  # QAT: AP50, latency, speed-up
    md, js = write_report(results, tmp_path)
    assert md.read_text().startswith("# Quantization report") and json.loads(js.read_text()) == results
    results["rows"]["qat"]["history"] = [1]  # not a record field
    record = quant_record(results)
    assert list(record["rows"]) == ["fp32", "ptq", "qat"] and record["rows"]["qat"] == {"ap": 0.305}
    with pytest.raises(ConfigError, match="rows"):
        quant_record({"rows": {}})


def test_record_holds_every_row_with_its_command(plain, tmp_path):
    record = plain.record()
    assert record["version"] == 1 and list(record["rows"]) == ["fp32", "ptq"]
    for row in record["rows"].values():  # run from Python: no argv to record
        assert set(row) == {"ap", "ap50", "command"} and row["command"] is None
    assert json.loads(write_record(plain.to_dict(), tmp_path / "record.json").read_text()) == record
    assert plain.to_dict()["qat"] is None and "qat_checkpoint" not in plain.files


def test_max_ap_drop_records_each_greedy_step(plain, tiny_checkpoint, tiny_dataset, tmp_path):
    cache = str(Path(plain.files["fp32_onnx"]).parent / "calib_cache")
    result = run_ptq(
        _config(
            tiny_checkpoint,
            tiny_dataset,
            tmp_path,
            sensitive_topk=1,
            max_ap_drop=0.0,
            cache_dir=cache,
            bench_batch_sizes=(1,),
            bench_iters=2,
        )  # fmt: skip
    )
    assert result.greedy and result.greedy[0]["float_layers"] == 1
    # with --bench every step has its INT8 model's latency, and each later step the cost of the layer it added
    assert all(set(step["latency_ms"]) == {"1"} and step["latency_ms"]["1"] > 0 for step in result.greedy)
    assert "latency_cost_ms" not in result.greedy[0]
    for before, step in zip(result.greedy, result.greedy[1:]):
        assert step["latency_cost_ms"]["1"] == pytest.approx(step["latency_ms"]["1"] - before["latency_ms"]["1"])
    report = Path(result.files["report_md"]).read_text()
    assert "## --max-ap-drop steps" in report and "bs1 cost ms" in report
    assert [step["float_layers"] for step in result.greedy] == list(range(1, len(result.greedy) + 1))
    assert result.greedy[-1]["ap_drop"] <= 0.0 and len(result.float_layers) == result.greedy[-1]["float_layers"]
    assert json.loads(Path(result.files["report_json"]).read_text())["greedy"] == result.greedy


def test_max_ap_drop_with_bench_reports_the_latency_cost_of_each_float_layer(
    plain, tiny_checkpoint, tiny_dataset, tmp_path, monkeypatch
):
    import yolodeploy.quant.ptq as ptq

    # the greedy's fake-quant AP, scripted: float 0.5, then drops 0.10, 0.05, 0.00 -> three steps
    scripted = iter([0.5, 0.4, 0.45, 0.5])
    monkeypatch.setattr(ptq, "_torch_ap", lambda *args: next(scripted))
    cache = str(Path(plain.files["fp32_onnx"]).parent / "calib_cache")
    config = _config(
        tiny_checkpoint, tiny_dataset, tmp_path, max_ap_drop=0.0, cache_dir=cache, bench_batch_sizes=(1,),
        bench_iters=2,
    )  # fmt: skip
    result = run_ptq(config)
    assert [step["float_layers"] for step in result.greedy] == [0, 1, 2]
    assert [round(step["ap_drop"], 6) for step in result.greedy] == [0.1, 0.05, 0.0]
    assert all(set(step["latency_ms"]) == {"1"} and step["latency_ms"]["1"] > 0 for step in result.greedy)
    assert "latency_cost_ms" not in result.greedy[0]  # the all-quantized step: the reference
    for before, step in zip(result.greedy, result.greedy[1:]):
        assert step["latency_cost_ms"]["1"] == pytest.approx(step["latency_ms"]["1"] - before["latency_ms"]["1"])
    report = Path(result.files["report_md"]).read_text()
    assert "## --max-ap-drop steps" in report and "bs1 cost ms" in report and result.greedy[1]["layer"] in report
