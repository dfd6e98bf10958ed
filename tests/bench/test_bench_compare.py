"""Latency regression reports on RECORDED benchmark JSON (no timing here): slowdowns, normalization, missing."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import REPO_ROOT

from yolodeploy.bench.compare import Verdict, compare_results, load_runs, parse_threshold
from yolodeploy.errors import BenchmarkResultError, ConfigError

# A suite file recorded by `benchmarks/run_suite.py --suite tests/bench/data/tiny_suite.json` on the project
# machine: yolov6n at 128, torch and ort, batch 1 and 2 (4 entries).
RECORDED = REPO_ROOT / "tests" / "bench" / "data" / "recorded_suite.json"


@pytest.fixture()
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def scale_latency(doc: dict, factor: float, *, backend: str | None = None, batch: int | None = None) -> dict:
    """A copy of ``doc`` with the latencies of the chosen entries multiplied by ``factor``."""
    doc = copy.deepcopy(doc)
    for run in doc["runs"]:
        if backend and run["config"]["backend"] != backend:
            continue
        for entry in run["batches"]:
            if batch is None or entry["batch_size"] == batch:
                entry["latency"] = {k: v * factor if k.endswith("_ms") else v for k, v in entry["latency"].items()}
    return doc


def scale_reference(doc: dict, factor: float) -> dict:
    doc = copy.deepcopy(doc)
    for run in doc["runs"]:
        run["reference"]["ms"] *= factor
    return doc


def test_recorded_file_is_a_suite_of_four_entries(recorded):
    runs, label = load_runs(RECORDED)
    assert len(runs) == 2 and "recorded_suite.json" in label
    assert {run["config"]["backend"] for run in runs} == {"torch", "ort"}
    assert all(run["reference"]["ms"] > 0 for run in runs)


def test_unchanged_run_passes(recorded):
    report = compare_results(recorded, copy.deepcopy(recorded))
    assert report.passed and bool(report)
    assert len(report.rows) == 4 and {row.verdict for row in report.rows} == {Verdict.OK}
    assert all(row.ratio == pytest.approx(1.0) for row in report.rows)
    assert report.to_markdown().startswith("## Latency comparison: PASS")


def test_injected_30_percent_slowdown_is_flagged(recorded):
    report = compare_results(recorded, scale_latency(recorded, 1.3, backend="ort", batch=2), max_regression=0.10)
    assert not report.passed
    [row] = report.regressions
    assert (row.model, row.backend, row.img_size, row.batch_size) == ("yolov6n", "ort", 128, 2)
    assert row.ratio == pytest.approx(1.3)
    assert sum(r.verdict is Verdict.OK for r in report.rows) == 3
    markdown = report.to_markdown()
    assert "FAIL" in markdown and "| yolov6n | ort | 128 | 2 |" in markdown and "1.30x | **regression**" in markdown


def test_threshold_and_improvement(recorded):
    assert compare_results(recorded, scale_latency(recorded, 1.3), max_regression=0.35).passed
    assert compare_results(recorded, scale_latency(recorded, 1.09)).passed  # within 10 %
    report = compare_results(recorded, scale_latency(recorded, 0.7))
    assert report.passed and {row.verdict for row in report.rows} == {Verdict.IMPROVEMENT}


def test_normalize_uses_the_reference_workload(recorded):
    # the whole machine is 30 % slower: model and reference alike -> raw regression, normalized ok
    slower_machine = scale_reference(scale_latency(recorded, 1.3), 1.3)
    assert not compare_results(recorded, slower_machine).passed
    normalized = compare_results(recorded, slower_machine, normalize=True)
    assert normalized.passed and all(row.ratio == pytest.approx(1.0) for row in normalized.rows)
    # the model is 30 % slower on an unchanged machine -> a regression either way
    assert not compare_results(recorded, scale_latency(recorded, 1.3), normalize=True).passed
    # normalized values are latency / reference, shown in reference units
    row = normalized.rows[0]
    run = next(r for r in recorded["runs"] if r["config"]["backend"] == row.backend)
    assert row.baseline_value == pytest.approx(row.baseline_ms / run["reference"]["ms"])
    assert " ref (" in normalized.to_markdown()


def test_normalize_needs_a_reference(recorded):
    stripped = copy.deepcopy(recorded)
    stripped["runs"][0]["reference"] = None
    assert compare_results(recorded, stripped).passed  # raw mode does not need it
    with pytest.raises(BenchmarkResultError, match="no reference workload"):
        compare_results(recorded, stripped, normalize=True)


def test_missing_and_new_entries_are_reported(recorded):
    current = copy.deepcopy(recorded)
    removed = current["runs"][0]["batches"].pop()  # e.g. bs 2 of the first run did not run
    current["runs"][1]["name"] = "yolov6s"  # and another model appears
    report = compare_results(recorded, current)
    verdicts = [row.verdict for row in report.rows]
    assert verdicts.count(Verdict.MISSING) == 3 and verdicts.count(Verdict.NEW) == 2
    missing = [row for row in report.rows if row.verdict is Verdict.MISSING]
    assert (recorded["runs"][0]["name"], removed["batch_size"]) in {(r.model, r.batch_size) for r in missing}
    assert report.passed and report.counts()["missing"] == 3
    assert "| - | missing |" in report.to_markdown()


def test_disturbed_runs_are_marked_noisy(recorded):
    for run in recorded["runs"]:
        run["reference"]["after_p50_ms"] = run["reference"]["before_p50_ms"]
        run.pop("machine", None)
    assert not any(row.noisy for row in compare_results(recorded, recorded).rows)
    current = copy.deepcopy(recorded)
    current["runs"][0]["reference"]["after_p50_ms"] *= 1.5  # the machine slowed down during the run
    current["runs"][1]["machine"] = {"foreign_cores": 0.9}  # another process took most of a core
    report = compare_results(recorded, current)
    assert all(row.noisy for row in report.rows) and report.passed
    assert "ok (noisy run) |" in report.to_markdown() and "re-run before trusting it" in report.to_markdown()


def test_single_result_against_suite(recorded):
    single = recorded["runs"][1]
    report = compare_results(recorded, single)
    assert {row.verdict for row in report.rows} == {Verdict.OK, Verdict.MISSING}


@pytest.mark.parametrize(("text", "value"), [("10%", 0.10), ("0.1", 0.1), ("0%", 0.0), (" 25 % ".strip(), 0.25)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["-5%", "ten", "10", "1.5"])
def test_parse_threshold_refuses(text):
    with pytest.raises(ConfigError, match="10%"):
        parse_threshold(text)


def test_bad_files(tmp_path, recorded):
    with pytest.raises(BenchmarkResultError, match="no such benchmark result"):
        compare_results(tmp_path / "nope.json", recorded)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BenchmarkResultError, match="not a readable JSON"):
        compare_results(tmp_path / "bad.json", recorded)
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(BenchmarkResultError, match="not a yolodeploy benchmark result"):
        compare_results(tmp_path / "other.json", recorded)
    broken = copy.deepcopy(recorded)
    del broken["runs"][0]["batches"][0]["latency"]
    with pytest.raises(BenchmarkResultError, match="malformed"):
        compare_results(recorded, broken)
    with pytest.raises(ConfigError):
        compare_results(recorded, recorded, max_regression=-1)
