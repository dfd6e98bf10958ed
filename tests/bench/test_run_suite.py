"""benchmarks/run_suite.py: suite checks, the markdown summary, and its exit code as a CI gate (no timing)."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import REPO_ROOT, load_benchmark

RECORDED = REPO_ROOT / "tests" / "bench" / "data" / "recorded_suite.json"


@pytest.fixture(scope="module")
def run_suite():
    return load_benchmark("run_suite")


def test_shipped_suite_is_valid(run_suite):
    suite = run_suite.load_suite(REPO_ROOT / "benchmarks" / "suite.json")
    assert suite["models"] == ["yolov6n", "yolov6s"] and suite["backends"] == ["torch", "ort"]
    assert sorted(size for group in suite["batches"] for size in group["sizes"]) == [1, 32]
    assert suite["img_size"] == 640


def test_bad_suite_is_refused(run_suite, tmp_path):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"models": ["yolov6n"], "backends": ["ort"], "batches": [{"size": [1]}]}))
    with pytest.raises(SystemExit, match="batch group"):
        run_suite.load_suite(path)
    path.write_text(json.dumps({"models": ["yolov6n"], "batches": []}))
    with pytest.raises(SystemExit, match="missing keys"):
        run_suite.load_suite(path)


def test_summary_has_ort_over_torch_ratios(run_suite):
    doc = json.loads(RECORDED.read_text())
    summary = run_suite.summarize(doc)
    torch_run, ort_run = (next(r for r in doc["runs"] if r["config"]["backend"] == b) for b in ("torch", "ort"))
    ratio = torch_run["batches"][0]["latency"]["p50_ms"] / ort_run["batches"][0]["latency"]["p50_ms"]
    assert "| yolov6n | 1 | " in summary and f"{ratio:.2f}x |" in summary


@pytest.mark.parametrize(("factor", "code"), [(1.0, 0), (1.3, 1)])
def test_main_gates_on_the_baseline(run_suite, monkeypatch, tmp_path, factor, code):
    baseline = json.loads(RECORDED.read_text())
    current = copy.deepcopy(baseline)
    for run in current["runs"]:
        for batch in run["batches"]:
            batch["latency"]["p50_ms"] *= factor
    monkeypatch.setattr(run_suite, "run_suite", lambda suite, progress, wait_idle, retries: current)
    args = ["--out", str(tmp_path), "--compare", str(RECORDED), "--report", str(tmp_path / "r.md")]
    args += ["--summary", str(tmp_path / "S.md")]
    assert run_suite.main(args) == code
    [written] = tmp_path.glob("suite_*.json")
    assert json.loads(written.read_text())["runs"] == current["runs"]
    assert ("FAIL" in (tmp_path / "r.md").read_text()) == bool(code) and (tmp_path / "S.md").exists()
