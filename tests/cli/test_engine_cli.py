"""``yolodeploy build-engine`` and ``yolodeploy env``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, export_tiny_onnx, run_cli

from yolodeploy.deploy.runners import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    net = export_tiny_onnx(path, img_size=32)
    return path, net


def test_build_engine_ort_end_to_end(tiny, tmp_path):
    onnx_path, net = tiny
    out = tmp_path / "tiny.ort.onnx"
    result = run_cli("build-engine", str(onnx_path), "-o", str(out), "--backend", "ort", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "optimized graph (level extended" in result.output
    sidecar = json.loads((tmp_path / "tiny.ort.onnx.json").read_text())
    assert sidecar["optimization_level"] == "extended" and sidecar["providers"] == ["CPUExecutionProvider"]
    assert sidecar["onnxruntime_version"] and len(sidecar["onnx"]["sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.ort.onnx", "tiny.ort.onnx.json"]  # no temp files
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with OnnxRuntimeRunner(out) as runner:
        got = runner.infer({"images": x})["outputs"]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_build_engine_ort_default_output_and_trt_only_options(tiny, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(tiny[0].read_bytes())
    result = run_cli("build-engine", str(onnx_path), "--backend", "ort", "--level", "basic")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.ort.onnx").is_file()
    assert_one_line_error(
        run_cli("build-engine", str(onnx_path), "--backend", "ort", "--fp16", "--bs", "1,32"), "--fp16, --bs"
    )


def test_build_engine_trt_without_tensorrt_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # absent here; made absent on GPU machines too
    engine = tmp_path / "m.engine"
    result = run_cli("build-engine", str(tiny[0]), "-o", str(engine), "--fp16", "--bs", "1,32")
    assert_one_line_error(result, "TensorRT is not installed: pip install yolodeploy[tensorrt]")
    assert list(tmp_path.iterdir()) == []


def test_build_engine_refusals_are_one_line(tiny, tmp_path):
    onnx_path = str(tiny[0])
    assert_one_line_error(run_cli("build-engine", onnx_path, "--int8"), "run `yolodeploy quantize` first")
    assert_one_line_error(
        run_cli("build-engine", onnx_path, "--bs", "1,4", "--min-shape", "1x3x32x32", "--max-shape", "4x3x32x32"),
        "not both",
    )
    assert_one_line_error(run_cli("build-engine", onnx_path, "--bs", "0"), "batch sizes")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    assert_one_line_error(run_cli("build-engine", str(corrupt), "-o", str(tmp_path / "c.engine")), "corrupt.onnx")


def test_env_prints_backends():
    result = run_cli("env")
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[2:]]
    assert names == ["torch", "onnxruntime", "tensorrt", "openvino"]
    assert "CPUExecutionProvider" in result.output
    report = json.loads(run_cli("env", "--json").output)
    assert report["backends"]["onnxruntime"]["available"] is True
    assert report["backends"]["torch"]["version"] == torch.__version__
    tensorrt = report["backends"]["tensorrt"]
    assert tensorrt["available"] or "pip install yolodeploy[tensorrt]" in tensorrt["reason"]


@pytest.fixture(scope="module")
def qdq_ort(tmp_path_factory):
    """A calibrated yolov6n (random weights) as ORT-flavour Q/DQ ONNX at 64 px, dynamic batch."""
    from yolodeploy.models import create_model
    from yolodeploy.quant.calibrate import calibrate
    from yolodeploy.quant.export import export_qdq_onnx
    from yolodeploy.quant.model import quantize_model

    torch.manual_seed(0)
    qmodel = quantize_model(create_model("yolov6n", num_classes=2))
    calibrate(qmodel, [torch.rand(2, 3, 64, 64)])
    return export_qdq_onnx(qmodel, tmp_path_factory.mktemp("q") / "q_ort.onnx", img_size=64, flavour="ort")


def test_build_engine_int8_on_ort_counts_int8_kernels(qdq_ort, tmp_path):
    out = tmp_path / "q.ort.onnx"
    result = run_cli("build-engine", str(qdq_ort), "--int8", "--backend", "ort", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.is_file() and "int8 kernels (ORT CPU" in result.output
    kernels = result.output.split("int8 kernels")[1]
    assert int(kernels.split("QLinearConv ")[1].split(",")[0]) >= 60  # of 69 quantized convs


def test_build_engine_int8_on_ort_tunes_conv_kernels_exactly(qdq_ort, tmp_path):
    out = tmp_path / "tuned.ort.onnx"
    result = run_cli("build-engine", str(qdq_ort), "--int8", "--backend", "ort", "--tune-bs", "2", "--threads", "1",
                     "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "conv kernels tuned at batch 2: GEMM kernel for" in result.output
    assert "whole model at batch 2:" in result.output or "saved as it was" in result.output
    tactics = json.loads((tmp_path / "tuned.ort.onnx.json").read_text())["conv_tactics"]
    assert tactics["batch"] == 2 and tactics["timed"] >= 50 and len(tactics["convs"]) == tactics["timed"]
    assert tactics["gemm_chosen"] == sum(c["gemm_chosen"] for c in tactics["convs"])
    assert all(c["input_shape"][0] == 2 and c["symmetric_us"] > 0 < c["gemm_us"] for c in tactics["convs"])
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    outputs = []
    for path in (qdq_ort, out):
        with OnnxRuntimeRunner(path, threads=1) as runner:
            outputs.append(runner.infer({"images": x})["outputs"])
    np.testing.assert_array_equal(outputs[1], outputs[0])  # whichever kernels were chosen


def test_tune_bs_needs_int8_on_ort(qdq_ort, tmp_path):
    for backend in (["--backend", "ort"], ["--backend", "openvino", "--int8"]):
        result = run_cli("build-engine", str(qdq_ort), *backend, "--tune-bs", "1", "-o", str(tmp_path / "x.onnx"))
        assert_one_line_error(result, "--tune-bs applies to --backend ort --int8 only")
    assert list(tmp_path.iterdir()) == []


def test_build_engine_int8_on_ort_refuses_a_float_graph(tiny, tmp_path):
    result = run_cli("build-engine", str(tiny[0]), "--int8", "--backend", "ort", "-o", str(tmp_path / "x.onnx"))
    assert_one_line_error(result, "has no Q/DQ nodes", "yolodeploy quantize")
    assert list(tmp_path.iterdir()) == []
