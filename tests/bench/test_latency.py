from __future__ import annotations

import pytest

from yolodeploy.bench.env import capture_environment
from yolodeploy.bench.latency import LatencyStats, time_interleaved


def test_percentiles_on_known_values():
    stats = LatencyStats.from_times([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.min_ms == pytest.approx(1.0)
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.iters == 100


def test_interleaved_runs_every_callable_equally():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    stats = time_interleaved({"a": make("a"), "b": make("b")}, warmup=2, iters=5)
    assert calls == {"a": 7, "b": 7}
    assert stats["a"].iters == stats["b"].iters == 5
    order = []
    stats = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=0, iters=2,
                             block=2, settle=1)  # fmt: skip
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # per round: settle + block calls, model by model
    assert stats["a"].iters == stats["b"].iters == 4  # the settle calls are not timed
    with pytest.raises(ValueError, match="block"):
        time_interleaved({"a": lambda: None}, block=0)


def test_environment_capture_has_the_basics():
    env = capture_environment()
    assert env["cpu_count"] >= 1 and env["torch"] and "yolodeploy" in env
