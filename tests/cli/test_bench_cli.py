"""``yolodeploy bench`` and ``yolodeploy bench-compare`` from the command line: JSON, exit codes, one-line errors."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import REPO_ROOT, assert_one_line_error, run_cli
from PIL import Image

RECORDED = REPO_ROOT / "tests" / "bench" / "data" / "recorded_suite.json"
FAST = ["--img", "64", "--warmup", "1", "--iters", "2"]


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_bench_yolov6n_bs1_and_bs32_writes_json(backend, tmp_path):
    out = tmp_path / f"{backend}.json"
    result = run_cli("bench", "yolov6n", "--backend", backend, "--bs", "1", "--bs", "32", *FAST, "--json", out)
    assert result.exit_code == 0, result.output
    assert f"yolov6n | {backend} on cpu | float32 64x64" in result.output and f"wrote {out}" in result.output
    data = json.loads(out.read_text())
    assert data["config"]["backend"] == backend and data["config"]["batch_sizes"] == [1, 32]
    assert [b["batch_size"] for b in data["batches"]] == [1, 32]
    assert all(b["latency"]["iters"] == 2 and b["throughput_ips"] > 0 for b in data["batches"])
    assert data["environment"]["cpu"] and data["reference"]["ms"] > 0 and data["model"]["form"] == "deploy"
    if backend == "ort":  # a registry name on ort goes through a temporary dynamic-batch ONNX export
        assert data["model"]["onnx_export"]["dynamic_batch"] is True
    assert run_cli("bench-compare", out, out).exit_code == 0  # a run compared with itself passes


def test_bench_e2e_on_image_files(tmp_path):
    for i, size in enumerate([(96, 64), (50, 80)]):
        Image.new("RGB", size, (i * 100, 50, 50)).save(tmp_path / f"{i}.jpg")
    out = tmp_path / "e2e.json"
    result = run_cli(
        "bench", "yolov6n", "--bs", "2", *FAST, "--e2e", "--images", tmp_path, "--no-reference", "--json", out
    )
    assert result.exit_code == 0, result.output
    assert "pre ms" in result.output and "e2e img/s" in result.output
    stages = json.loads(out.read_text())["batches"][0]["stages"]
    assert set(stages) == {"preprocess", "inference", "postprocess", "total"}


def test_bench_onnx_file_static_batch(tmp_path):
    from yolodeploy.deploy.export import export_onnx
    from yolodeploy.models import create_model

    path = tmp_path / "n.onnx"
    export_onnx(create_model("yolov6n", num_classes=2), path, img_size=64, check=False)
    result = run_cli("bench", path, "--warmup", "0", "--iters", "1", "--no-reference")
    assert result.exit_code == 0, result.output
    assert "n | ort on cpu | float32 64x64" in result.output  # backend and size from the file
    assert_one_line_error(run_cli("bench", path, "--bs", "2", "--no-reference"), "static batch of 1", "--dynamic-batch")
    assert_one_line_error(run_cli("bench", path, "--backend", "torch"), "--backend ort")
    assert_one_line_error(run_cli("bench", path, "--img", "128"), "fixed at 64x64")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["resnet50"], "resnet50"),
        (["missing.onnx"], "no such file"),
        (["missing.safetensors"], "no such file"),
        (["yolov6n", "--backend", "trt"], "build-engine"),
        (["yolov6n", "--backend", "tensorflow"], "unknown backend"),
        (["yolov6n", "--bs", "x"], "--bs takes integers"),
        (["yolov6n", "--bs", "0"], "batch sizes must be positive"),
        (["yolov6n", "--e2e"], "--images"),
        (["yolov6n", "--iters", "3", "--seconds", "1"], "not both"),
        (["yolov6n", "--device", "tpu"], "cpu or cuda"),
    ],
)
def test_bench_bad_inputs_are_one_line(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli("bench", *args), fragment)


def test_bench_corrupt_onnx_is_one_line(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage")
    result = run_cli("bench", path, "--no-reference")
    assert_one_line_error(result, "corrupt.onnx")


def slowed(tmp_path, factor: float) -> str:
    doc = json.loads(RECORDED.read_text())
    current = copy.deepcopy(doc)
    for run_ in current["runs"]:
        for batch in run_["batches"]:
            batch["latency"] = {k: v * factor if k.endswith("_ms") else v for k, v in batch["latency"].items()}
    path = tmp_path / f"current_{factor}.json"
    path.write_text(json.dumps(current))
    return str(path)


def test_bench_compare_exit_codes_and_report(tmp_path):
    unchanged = run_cli("bench-compare", RECORDED, RECORDED)
    assert unchanged.exit_code == 0 and "Latency comparison: PASS" in unchanged.output
    report = tmp_path / "reports" / "report.md"
    slower = run_cli("bench-compare", RECORDED, slowed(tmp_path, 1.3), "--max-regression", "10%", "--report", report)
    assert slower.exit_code == 1
    assert "FAIL" in slower.output and slower.output.count("**regression**") == 4
    assert report.read_text() == slower.output
    assert run_cli("bench-compare", RECORDED, slowed(tmp_path, 1.3), "--max-regression", "35%").exit_code == 0
    assert run_cli("bench-compare", RECORDED, slowed(tmp_path, 1.05), "--metric", "mean").exit_code == 0
    normalized = run_cli("bench-compare", RECORDED, RECORDED, "--normalize")
    assert normalized.exit_code == 0 and "normalized by the reference workload" in normalized.output


def test_bench_compare_bad_inputs(tmp_path):
    assert_one_line_error(run_cli("bench-compare", tmp_path / "nope.json", RECORDED), "no such benchmark result")
    (tmp_path / "x.json").write_text("[1, 2")
    assert_one_line_error(run_cli("bench-compare", RECORDED, tmp_path / "x.json"), "not a readable JSON")
    assert_one_line_error(run_cli("bench-compare", RECORDED, RECORDED, "--max-regression", "ten"), "10%")
    assert_one_line_error(run_cli("bench-compare", RECORDED, RECORDED, "--metric", "p42"), "metric must be one of")
    report = tmp_path / "r.md"
    run_cli("bench-compare", tmp_path / "nope.json", RECORDED, "--report", report)
    assert not report.exists()
