"""benchmarks/quant_latency.py: per-round paired speed-ups, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark
from torch import nn


@pytest.fixture(scope="module")
def quant_latency():
    return load_benchmark("quant_latency")


def test_speed_up_is_the_median_of_per_round_ratios(quant_latency):
    per_round = {"fp32.onnx": [10.0, 20.0, 12.0], "int8.onnx": [4.0, 5.0, 3.0]}  # ratios 2.5, 4.0, 4.0
    lines = quant_latency.summary_lines(per_round, batch=1)
    assert lines[0].split()[:2] == ["bs1", "fp32.onnx"] and lines[0].endswith("x1.00 (1.00-1.00)")
    assert lines[1].split()[2:] == ["4.00", "ms", "x4.00", "(2.50-4.00)"]  # median time 4.0, median ratio 4.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's, not ours
def test_end_to_end_on_a_tiny_onnx_pair(quant_latency, tmp_path, capsys):
    paths = []
    for width in (4, 8):
        path = tmp_path / f"w{width}.onnx"
        torch.onnx.export(nn.Conv2d(3, width, 3), torch.zeros(1, 3, 16, 16), path, dynamo=False,
                          input_names=["images"], dynamic_axes={"images": {0: "batch"}})  # fmt: skip
        paths.append(str(path))
    record = tmp_path / "latency.json"
    argv = [*paths, "--img", "16", "--rounds", "2", "--bs", "1", "--threads", "1", "--json", str(record)]
    assert quant_latency.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["bs1", paths[0]], ["bs1", paths[1]]]
    assert lines[2] == f"wrote {record}"
    data = json.loads(record.read_text())
    assert data["baseline"] == paths[0] and data["rounds"] == 2 and data["environment"]["cpu"]
    rows = data["batches"]["bs1"]
    assert rows[paths[0]]["speedup"] == 1.0 and len(rows[paths[1]]["per_round_ms"]) == 2
    with pytest.raises(SystemExit):
        quant_latency.main([*paths, "--rounds", "0"])
