"""Latency regression reports: compare a current benchmark against a baseline, entry by entry.

An entry is one (model, backend, image size, batch size) of a result file; a file is either one
``yolodeploy bench`` result or a suite file (``benchmarks/run_suite.py``) holding several. For each entry the
report gives the baseline and current latency (p50 by default), their ratio current / baseline and a verdict:

- ``regression``: ratio > 1 + ``max_regression`` (the only verdict that fails the comparison);
- ``improvement``: ratio < 1 - ``max_regression``;
- ``ok``: in between;
- ``missing``: in the baseline but not in the current file (reported, not failing: the run that should have
  produced it fails on its own);
- ``new``: only in the current file.

A row is also marked *noisy* when either run looks disturbed: its reference workload took more than
``NOISY_REFERENCE`` times longer after the model than before (or the reverse), or other processes used more than
``NOISY_FOREIGN_CORES`` cores during it (recorded by ``benchmarks/run_suite.py``). Noisy rows keep their verdict (a
regression still fails); the mark says to re-run before trusting it.

With ``normalize=True`` each latency is first divided by the reference workload time measured in the same run
(:mod:`yolodeploy.bench.reference`), so that a machine that is uniformly slower or faster than when the baseline
was recorded does not show up as a regression.

Example:
    >>> report = compare_results("benchmarks/baseline.json", "current.json", max_regression=0.10, normalize=True)
    >>> print(report.to_markdown()); raise SystemExit(0 if report.passed else 1)
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from pathlib import Path
from typing import Any

from ..errors import BenchmarkResultError, ConfigError
from .reference import normalized_latency

__all__ = ["Verdict", "ComparisonRow", "ComparisonReport", "compare_results", "load_runs", "parse_threshold"]

RESULT_FORMAT = "yolodeploy.bench.result"
SUITE_FORMAT = "yolodeploy.bench.suite"
METRICS = ("p50_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms")
NOISY_REFERENCE = 1.2
NOISY_FOREIGN_CORES = 0.25


class Verdict(str, enum.Enum):
    OK = "ok"
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    MISSING = "missing"
    NEW = "new"


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One entry: latencies in ms, the compared values (ms, or reference units when normalized), the verdict."""

    model: str
    backend: str
    img_size: int | None
    batch_size: int
    baseline_ms: float | None
    current_ms: float | None
    baseline_value: float | None
    current_value: float | None
    ratio: float | None
    verdict: Verdict
    noisy: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdict": self.verdict.value}


@dataclasses.dataclass(frozen=True)
class ComparisonReport:
    """All rows of a comparison; ``passed`` (and ``bool(report)``) is False when any entry regressed."""

    rows: list[ComparisonRow]
    max_regression: float
    normalize: bool
    metric: str
    baseline_label: str = "baseline"
    current_label: str = "current"

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [row for row in self.rows if row.verdict is Verdict.REGRESSION]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def __bool__(self) -> bool:
        return self.passed

    def counts(self) -> dict[str, int]:
        return {verdict.value: sum(row.verdict is verdict for row in self.rows) for verdict in Verdict}

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_regression": self.max_regression,
            "normalize": self.normalize,
            "metric": self.metric,
            "counts": self.counts(),
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_markdown(self) -> str:
        """A markdown report: verdict line, method, one table row per entry."""
        counts = self.counts()
        how = "normalized by the reference workload of each run" if self.normalize else "raw milliseconds"
        lines = [
            f"## Latency comparison: {'PASS' if self.passed else 'FAIL'}",
            "",
            f"{self.metric.removesuffix('_ms')} latency, {how}; a regression is a current/baseline ratio above "
            f"{1 + self.max_regression:.2f} (+{self.max_regression:.0%}).",
            f"Baseline: {self.baseline_label}. Current: {self.current_label}.",
            ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" of {len(self.rows)} entries.",
            "",
            "| model | backend | img | batch | baseline | current | ratio | verdict |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in self.rows:
            verdict = f"**{row.verdict.value}**" if row.verdict is Verdict.REGRESSION else row.verdict.value
            verdict += " (noisy run)" if row.noisy else ""
            ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
            lines.append(
                f"| {row.model} | {row.backend} | {row.img_size or '-'} | {row.batch_size} | "
                f"{self._cell(row.baseline_value, row.baseline_ms)} | {self._cell(row.current_value, row.current_ms)} "
                f"| {ratio} | {verdict} |"
            )
        if any(row.noisy for row in self.rows):
            lines += [
                "",
                f"noisy run: the reference workload's time changed by more than {NOISY_REFERENCE - 1:.0%} during the "
                f"run, or other processes used more than {NOISY_FOREIGN_CORES} cores; re-run before trusting it.",
            ]
        return "\n".join(lines) + "\n"

    def _cell(self, value: float | None, ms: float | None) -> str:
        if value is None or ms is None:
            return "-"
        return f"{value:.3f} ref ({ms:.1f} ms)" if self.normalize else f"{ms:.2f} ms"


def parse_threshold(text: str | float) -> float:
    """``"10%"`` or ``0.1`` -> 0.1; refuses negatives and bare numbers >= 1 (ambiguous: say ``10%``)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"invalid threshold {text!r}; write a percentage like 10% or a fraction like 0.10") from None
    if value < 0 or (not raw.endswith("%") and value >= 1):
        raise ConfigError(f"invalid threshold {text!r}; write a percentage like 10% or a fraction like 0.10")
    return value


def load_runs(source: str | os.PathLike | dict | list | Any) -> tuple[list[dict[str, Any]], str]:
    """The benchmark runs of a result file, suite file, dict, BenchResult or list of them, and a label."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BenchmarkResultError(f"no such benchmark result: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchmarkResultError(f"{path} is not a readable JSON benchmark result ({exc})") from None
        runs, _ = load_runs(data)
        return runs, _describe(path.name, runs)
    if hasattr(source, "to_dict"):
        source = source.to_dict()
    if isinstance(source, list):
        runs = [run for item in source for run in load_runs(item)[0]]
        return runs, _describe("runs", runs)
    kind = source.get("format") if isinstance(source, dict) else None
    if kind == RESULT_FORMAT:
        return [source], _describe("result", [source])
    if kind == SUITE_FORMAT:
        return list(source.get("runs", [])), _describe("suite", source.get("runs", []))
    raise BenchmarkResultError(
        f"not a yolodeploy benchmark result (format {kind!r}); expected the JSON of `yolodeploy bench --json` "
        "or of benchmarks/run_suite.py"
    )


def _describe(name: str, runs: list[dict[str, Any]]) -> str:
    created = sorted(str(run.get("created", ""))[:19] for run in runs if run.get("created"))
    cpus = sorted({str(run.get("environment", {}).get("cpu", "?")) for run in runs})
    when = f", {created[0]}" if created else ""
    return f"{name} ({len(runs)} runs{when}, {'/'.join(cpus) or '?'})"


def _is_noisy(run: dict[str, Any]) -> bool:
    reference = run.get("reference") or {}
    before, after = reference.get("before_p50_ms"), reference.get("after_p50_ms")
    drift = max(before, after) / min(before, after) if before and after else 1.0
    foreign = (run.get("machine") or {}).get("foreign_cores") or 0.0
    return drift > NOISY_REFERENCE or foreign > NOISY_FOREIGN_CORES


def _entries(runs: list[dict[str, Any]], metric: str, normalize: bool, label: str) -> dict[tuple, tuple]:
    """(model, backend, img, batch) -> (ms, compared value, noisy) of every batch of every run."""
    entries: dict[tuple, tuple] = {}
    for run in runs:
        try:
            config, model = run["config"], run.get("model", {})
            backend = _backend_label(config)
            img = model.get("img_size") or config.get("img_size")
            reference_ms = (run.get("reference") or {}).get("ms")
            if normalize and not reference_ms:
                raise BenchmarkResultError(
                    f"{label}: run {run['name']!r} has no reference workload time; re-run it with the reference "
                    "workload on (the default) or compare without --normalize"
                )
            for batch in run["batches"]:
                key = (run["name"], backend, img, int(batch["batch_size"]))
                if key in entries:
                    raise BenchmarkResultError(f"{label}: entry {key} appears twice")
                ms = float(batch["latency"][metric])
                value = normalized_latency(ms, reference_ms) if normalize else ms
                entries[key] = (ms, value, _is_noisy(run))
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchmarkResultError(f"{label}: malformed benchmark run ({exc!r})") from None
    return entries


def _backend_label(config: dict[str, Any]) -> str:
    label = str(config["backend"])
    if config.get("precision", "fp32") != "fp32":
        label += f" {config['precision']}"
    if config.get("device", "cpu") != "cpu":
        label += f" {config['device']}"
    return label


def _verdict(ratio: float, max_regression: float) -> Verdict:
    if ratio > 1 + max_regression:
        return Verdict.REGRESSION
    if ratio < 1 - max_regression:
        return Verdict.IMPROVEMENT
    return Verdict.OK


def compare_results(
    baseline: Any,
    current: Any,
    *,
    max_regression: float = 0.10,
    normalize: bool = False,
    metric: str = "p50_ms",
) -> ComparisonReport:
    """Compare two benchmark results (paths, dicts, BenchResults, or suite files) entry by entry.

    Args:
        baseline, current: what :func:`load_runs` accepts.
        max_regression: the tolerated slowdown as a fraction (0.10 = current may be 10 % slower).
        normalize: divide each latency by its run's reference workload time first.
        metric: the latency statistic compared (``p50_ms`` by default; the median is the most robust).

    Raises:
        BenchmarkResultError: a file that is missing, not a benchmark result, or (normalized) has no
            reference time.
    """
    if max_regression < 0:
        raise ConfigError(f"max_regression must be >= 0, got {max_regression}")
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    base_runs, base_label = load_runs(baseline)
    cur_runs, cur_label = load_runs(current)
    base = _entries(base_runs, metric, normalize, f"baseline {base_label}")
    cur = _entries(cur_runs, metric, normalize, f"current {cur_label}")
    rows = []
    for key in list(base) + [k for k in cur if k not in base]:
        (b_ms, b_val, b_noisy), (c_ms, c_val, c_noisy) = base.get(key, (None,) * 3), cur.get(key, (None,) * 3)
        if b_ms is None or c_ms is None:
            verdict, ratio = (Verdict.MISSING if c_ms is None else Verdict.NEW), None
        else:
            ratio = c_val / b_val
            verdict = _verdict(ratio, max_regression)
        rows.append(ComparisonRow(*key, b_ms, c_ms, b_val, c_val, ratio, verdict, bool(b_noisy or c_noisy)))
    return ComparisonReport(rows, max_regression, normalize, metric, base_label, cur_label)
