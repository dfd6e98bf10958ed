"""benchmarks/quant_demo.py: the commands of our four rows, how a run folder's files are found (no runs), the
record's rows, and the latency phase on two tiny files (one unloadable)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import load_benchmark
from PIL import Image


@pytest.fixture(scope="module")
def quant_demo():
    return load_benchmark("quant_demo")


def test_our_commands_cover_every_row(quant_demo):
    args = quant_demo.parse_args(["--out", "o", "--topk", "2", "--qat-epochs", "3", "--qat-lr", "1e-4"])
    commands = quant_demo.our_commands(args, quant_demo.qat_flags(args.qat_epochs, args.qat_lr, args.learn_amax))
    assert list(commands) == list(quant_demo.OURS)
    assert commands["qat"][-8:] == ["--qat", "--epochs", "3", "--qat-lr", "0.0001", "--learn-amax", "-o", "o/qat"]
    assert "--learn-amax" not in quant_demo.qat_flags(3, 1e-4, quant_demo.parse_args(["--no-learn-amax"]).learn_amax)
    partial = commands["qat_partial"]
    assert partial[partial.index("--sensitive-topk") + 1] == "2" and "--partial" in partial
    assert "--partial" not in commands["qat"] and "--sensitive-topk" not in commands["qat"]
    assert commands["ptq_cost"][-5:] == ["--max-ap-drop", "0.004", "--cost-aware", "-o", "o/ptq_cost"]
    assert not any("--uint8-input" in argv for argv in commands.values())
    assert quant_demo.parse_args([]).rows == list(quant_demo.OURS)
    assert quant_demo.parse_args(["--rows", "ptq", "qat"]).rows == ["ptq", "qat"]
    pixels = quant_demo.parse_args(["--uint8-input"])
    assert all("--uint8-input" in argv for argv in quant_demo.our_commands(pixels, []).values())


def test_partial_qat_row_reads_the_qat_row_of_its_run(quant_demo, tmp_path):
    """A partial-QAT run names its QAT model ``qat`` in its own report: the ``qat_partial`` row must find it."""
    for name in ("fp32.onnx", "int8_top2_ort.onnx", "qat_ort.onnx"):
        (tmp_path / name).write_bytes(b"")
    report = {
        "command": "yolodeploy quantize m --ptq --sensitive-topk 2 --qat --partial -o x",
        "int8": "ptq_top2",
        "rows": {"fp32": {"ap": 0.5}, "ptq_top2": {"ap": 0.4}, "qat": {"ap": 0.45}},
        "files": {
            "int8_ort_onnx": str(tmp_path / "int8_top2_ort.onnx"),
            "qat_ort_onnx": str(tmp_path / "qat_ort.onnx"),
        },
    }
    (tmp_path / "quant_report.json").write_text(json.dumps(report))
    row = quant_demo.run_ours("qat_partial", ["yolodeploy"], tmp_path, skip=True)
    assert row["onnx"] == str(tmp_path / "qat_ort.onnx") and row["pipeline_row"] == {"ap": 0.45}
    assert row["command"] == report["command"]
    assert quant_demo.run_ours("ptq_top2", ["yolodeploy"], tmp_path, skip=True)["onnx"].endswith("int8_top2_ort.onnx")
    cost_aware = quant_demo.run_ours("ptq_cost", ["yolodeploy"], tmp_path, skip=True)  # the run's delivered INT8
    assert cost_aware["onnx"].endswith("int8_top2_ort.onnx") and cost_aware["pipeline_row"] == {"ap": 0.4}


def test_openvino_rows_and_table_from_one_interleaved_run(quant_demo):
    """``--openvino``: each file's OpenVINO time, over ORT FP32 and over OpenVINO FP32 of the same round."""
    stats = {"fp32": 10.0, "ptq": 4.0, "fp32@openvino": 9.0, "ptq@openvino": 3.0}
    latency = {"1": {key: {"p50_ms": ms} for key, ms in stats.items()}}
    rows = quant_demo.openvino_rows(latency)
    assert list(rows) == ["fp32", "ptq"]
    assert rows["ptq"]["latency_ms"] == {"1": 3.0}
    assert rows["ptq"]["speedup_vs_ort_fp32"]["1"] == pytest.approx(10 / 3)
    assert rows["ptq"]["speedup_vs_openvino_fp32"]["1"] == pytest.approx(3.0)
    assert quant_demo.build_rows({"fp32": {}, "ptq": {}}, latency)["ptq"]["latency_ms"] == {"1": 4.0}  # ORT only
    table = quant_demo.openvino_markdown(rows, ["1"], {"openvino": "2026.4.1"})
    assert "| ours: PTQ | 3.00 (3.33×, 3.00×) |" in table
    assert quant_demo.latency_key("ptq", "ort") == "ptq" and quant_demo.latency_key("ptq", "openvino") == "ptq@openvino"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's, not ours
def test_latency_leaves_out_a_file_the_runtime_cannot_run(quant_demo, tmp_path):
    """... and feeds a --uint8-input file the same images as pixels."""
    import onnx

    from yolodeploy.deploy.image_input import uint8_image_input

    good, bad, pixels = tmp_path / "good.onnx", tmp_path / "bad.onnx", tmp_path / "pixels.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 16, 16), good, dynamo=False,
                      input_names=["images"], dynamic_axes={"images": {0: "batch"}})  # fmt: skip
    onnx.save(uint8_image_input(onnx.load(str(good))), str(pixels))
    bad.write_bytes(b"not an onnx file")
    image = tmp_path / "a.jpg"
    Image.new("RGB", (20, 12), (120, 60, 30)).save(image)
    args = argparse.Namespace(bs=[1], img=16, threads=1, openvino=False, warmup=1, iters=1, block=1)
    errors: dict[str, str] = {}
    files = {"fp32": str(good), "ptq": str(bad), "qat": str(pixels)}
    latency = quant_demo.measure_latency(files, [image], args, errors)
    assert list(latency["1"]) == ["fp32", "qat"] and list(errors) == ["ptq"] and "\n" not in errors["ptq"]
    rows = quant_demo.build_rows({"fp32": {}, "ptq": {}}, latency)
    assert rows["ptq"]["latency_ms"] == {} and rows["fp32"]["speedup_vs_fp32"] == {"1": 1.0}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's, not ours
def test_peer_files_are_converted_to_pixel_input_in_place(tmp_path):
    """``quant_peers.py --uint8-input``: the peer's file takes uint8 pixels afterwards, checked identical."""
    import onnx

    path = tmp_path / "peer.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 16, 16), path, dynamo=False,
                      input_names=["images"], dynamic_axes={"images": {0: "batch"}})  # fmt: skip
    lines = load_benchmark("quant_peers").to_pixel_input(path, 16)
    assert lines[0].startswith("uint8 input (B, 16, 16, 3): converted to float in the graph; ")
    assert "max_abs=0 " in lines[0]
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
