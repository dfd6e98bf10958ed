"""Latency measurement: warm-up, perf_counter timing, percentiles, and interleaved A/B runs.

Shared machines are noisy; comparing two variants by timing them in turn (A, B, A, B, ...) inside one run
exposes both to the same background load, so their *ratio* is far more stable than either time alone.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

__all__ = ["LatencyStats", "time_calls", "time_interleaved"]


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Per-call latency in milliseconds."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    iters: int

    @classmethod
    def from_times(cls, seconds: list[float]) -> LatencyStats:
        if not seconds:
            raise ValueError("no timings")
        ms = sorted(s * 1e3 for s in seconds)
        return cls(statistics.fmean(ms), _percentile(ms, 50), _percentile(ms, 90), _percentile(ms, 99), ms[0], len(ms))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def time_calls(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20) -> LatencyStats:
    """Time ``fn()`` ``iters`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return LatencyStats.from_times(times)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int = 3,
    iters: int = 20,
    block: int = 1,
    settle: int = 0,
    pause_s: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, LatencyStats]:
    """Time several callables round-robin so they share the same noise: per round, each waits ``pause_s``, runs
    ``settle`` untimed calls, then ``block`` timed ones (``iters * block`` timings each).

    For ONNX Runtime sessions use a pause and a settle call: after a call their worker threads spin-wait for
    more work (the default ``session.intra_op.allow_spinning``) and compete with the next session for the
    cores. Measured here with 4 sessions, 2 threads, batch 1, one timed call per round: 3-4x the time of the
    same calls made in blocks; a 100 ms pause brought the medians back to those of each model timed alone.
    """
    if block < 1 or settle < 0 or pause_s < 0:
        raise ValueError(f"block must be >= 1, settle and pause_s >= 0, got {block}, {settle} and {pause_s}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(iters):
        for name, fn in fns.items():
            if pause_s:
                time.sleep(pause_s)
            for _ in range(settle):
                fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        if progress:
            progress(i + 1)
    return {name: LatencyStats.from_times(values) for name, values in times.items()}
