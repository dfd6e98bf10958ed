"""The OpenVINO backend: runner specifics (the shared contract is in test_runners.py), Q/DQ INT8 parity with the
fake-quant model, IR conversion (``build-engine --backend openvino``), and ``bench`` / ``eval`` on it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, export_tiny_onnx, run_cli

from yolodeploy.deploy.runners import OpenVINORunner, create_runner
from yolodeploy.deploy.runners.openvino_runner import import_openvino, is_available
from yolodeploy.errors import BackendUnavailableError, ConfigError, OnnxModelError

pytestmark = pytest.mark.usefixtures("single_thread_torch")
needs_openvino = pytest.mark.skipif(not is_available(), reason="openvino not installed (pip install openvino)")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("ov") / "tiny.onnx"
    return path, export_tiny_onnx(path, img_size=32)


@pytest.fixture(scope="module")
def qmodel():
    """yolov6n (2 classes) fake-quantized, calibrated with percentile 99.99 on random 64-px images."""
    from yolodeploy.core.init import randomize_for_verification_
    from yolodeploy.models import create_model
    from yolodeploy.quant.calibrate import calibrate
    from yolodeploy.quant.model import quantize_model

    torch.manual_seed(0)
    qmodel = quantize_model(randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval())
    calibrate(qmodel, [torch.rand(4, 3, 64, 64)], method="percentile", percentile=99.99)
    return qmodel


@pytest.fixture(scope="module")
def int8_ort_onnx(qmodel, tmp_path_factory):
    from yolodeploy.quant.export import export_qdq_onnx

    return export_qdq_onnx(qmodel, tmp_path_factory.mktemp("ovq") / "q_ort.onnx", img_size=64, flavour="ort")


def images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)


def test_missing_openvino_is_a_one_line_error(monkeypatch, tiny_onnx):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'yolodeploy\[openvino\]'") as exc_info:
        OpenVINORunner(tiny_onnx[0]).activate()
    assert "\n" not in str(exc_info.value) and not is_available()
    with pytest.raises(BackendUnavailableError):
        import_openvino()


def test_bad_arguments_are_refused_before_loading(tiny_onnx):
    path = tiny_onnx[0]
    with pytest.raises(ConfigError, match="precision must be one of f32, bf16, f16"):
        OpenVINORunner(path, precision="int8")
    with pytest.raises(ConfigError, match="does not run on CUDA"):
        OpenVINORunner(path, device="cuda:0")
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        OpenVINORunner(path, threads=0)
    with pytest.raises(ConfigError, match="performance_hint"):
        OpenVINORunner(path, performance_hint="FAST")


@needs_openvino
def test_bad_files_are_one_line_errors(tiny_onnx, tmp_path):
    with pytest.raises(OnnxModelError, match="no such model file"):
        OpenVINORunner(tmp_path / "absent.onnx").activate()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx[0].read_bytes()[:200])
    with pytest.raises(OnnxModelError, match="OpenVINO cannot read it") as exc_info:
        OpenVINORunner(corrupt).activate()
    assert "\n" not in str(exc_info.value)
    with pytest.raises(ConfigError, match=r"\.onnx or \.xml"):
        OpenVINORunner(tmp_path / "model.safetensors").activate()


@needs_openvino
def test_compiles_once_per_batch_shape_and_evicts_the_oldest(tiny_onnx):
    path, net = tiny_onnx
    with OpenVINORunner(path, threads=1, max_compiled=2) as runner:
        assert runner.device == "cpu" and runner.ov_device == "CPU"  # torch-style device, OpenVINO's own name
        assert runner.compiled_shapes == []  # a dynamic batch: nothing compiled before the first feed
        for batch in (1, 2, 1, 3):
            x = images(batch, 32)
            got = runner.infer({"images": x})["outputs"]
            with torch.no_grad():
                np.testing.assert_allclose(got, net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
        assert runner.compiled_shapes == [((1, 3, 32, 32),), ((3, 3, 32, 32),)]
        assert runner.compiled_precision() == "f32"  # not OpenVINO's bf16 default on CPUs that have it
    with OpenVINORunner(path, threads=1, static_shapes=False) as runner:
        assert runner.compiled_shapes == [None]  # one dynamic compile serves every batch
        assert runner.infer({"images": images(4, 32)})["outputs"].shape == (4, 6, 32 * 32)


@needs_openvino
def test_int8_ort_flavour_matches_the_fake_quant_model(qmodel, int8_ort_onnx):
    """The u8 (ORT) Q/DQ file on OpenVINO: every conv runs an int8 kernel, and the outputs agree with the
    fake-quant model within one quantization step (the same check every quantize command runs on ORT)."""
    from yolodeploy.deploy.openvino_build import conv_precisions
    from yolodeploy.quant.export import check_qdq_parity

    batches = [torch.from_numpy(images(2, 64, seed)) for seed in range(2)]
    report = check_qdq_parity(qmodel, int8_ort_onnx, batches, runner=OpenVINORunner(int8_ort_onnx, threads=1))
    assert report.ok, report.summary()
    precisions = conv_precisions(import_openvino().Core().read_model(str(int8_ort_onnx)))
    assert precisions.get("Convolution u8", 0) >= 60 and "Convolution f32" not in precisions, precisions
    assert "FullyConnected f32" not in precisions, precisions  # the 1x1 convs written as MatMuls run int8 too


@needs_openvino
def test_build_engine_openvino_writes_ir_that_runs_like_the_onnx(int8_ort_onnx, tmp_path):
    xml = tmp_path / "ir" / "q.xml"
    result = run_cli("build-engine", int8_ort_onnx, "--backend", "openvino", "--int8", "-o", xml)
    assert result.exit_code == 0, result.output
    kernels = dict(item.rsplit(" ", 1) for item in result.output.split("f32 hint): ")[1].splitlines()[0].split(", "))
    int8_convs = sum(int(count) for kind, count in kernels.items() if kind in ("Convolution u8", "Convolution i8"))
    assert int8_convs >= 60 and "Convolution f32" not in kernels, kernels  # u8 or i8 input: the CPU decides
    assert sorted(p.name for p in xml.parent.iterdir()) == ["q.bin", "q.xml", "q.xml.json"]  # no temp leftovers
    sidecar = json.loads((xml.parent / "q.xml.json").read_text())
    assert sidecar["format"] == "yolodeploy-openvino-ir" and sidecar["fake_quantize"] > 60
    assert sidecar["activation_dtype"] == "uint8" and "note:" not in result.output
    x = images(2, 64)
    with create_runner(xml, threads=1) as from_ir, OpenVINORunner(int8_ort_onnx, threads=1) as from_onnx:
        assert from_ir.backend == "openvino"
        diff = np.abs(from_ir.infer({"images": x})["outputs"] - from_onnx.infer({"images": x})["outputs"])
    # the IR's constants went through OpenVINO's save passes: a rare box coordinate moves by one int8 step
    assert diff.max() < 0.05 and np.mean(diff > 1e-4) < 0.01, (diff.max(), np.mean(diff > 1e-4))


@needs_openvino
def test_build_engine_openvino_refusals_are_one_line(tiny_onnx, tmp_path):
    path = tiny_onnx[0]
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["--int8", "-o", out / "t.xml"], "has no Q/DQ nodes"),
        (["-o", out / "t.bin"], "name the output *.xml"),
        (["--fp16", "-o", out / "t.xml"], "--fp16: TensorRT options"),
        (["--threads", "2", "-o", out / "t.xml"], "--backend ort only"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli("build-engine", path, "--backend", "openvino", *args), fragment)
    assert list(out.iterdir()) == []


@needs_openvino
def test_bench_onnx_and_ir_on_openvino(int8_ort_onnx, tmp_path):
    xml = tmp_path / "q.xml"
    assert run_cli("build-engine", int8_ort_onnx, "--backend", "openvino", "-o", xml).exit_code == 0
    out = tmp_path / "bench.json"
    fast = ["--bs", "1", "--bs", "2", "--warmup", "1", "--iters", "2", "--threads", "1", "--no-reference"]
    result = run_cli("bench", int8_ort_onnx, "--backend", "openvino", *fast, "--json", out)
    assert result.exit_code == 0, result.output
    assert "q_ort | openvino on cpu | float32 64x64" in result.output
    data = json.loads(out.read_text())
    assert data["config"]["backend"] == "openvino" and [b["batch_size"] for b in data["batches"]] == [1, 2]
    result = run_cli("bench", xml, *fast[:-1])  # .xml picks OpenVINO by itself; with the (PyTorch) reference workload
    assert result.exit_code == 0 and "q | openvino on cpu" in result.output, result.output
    assert "reference workload" in result.output
    assert_one_line_error(run_cli("bench", xml, "--backend", "ort"), "OpenVINO IR file", "--backend openvino")
    assert_one_line_error(run_cli("bench", int8_ort_onnx, "--backend", "openvino", "--device", "cuda"), "on the CPU")


@needs_openvino
@pytest.mark.slow
def test_eval_on_openvino_equals_ort(tiny_dataset, tmp_path):
    """The same float ONNX evaluated on ORT and on OpenVINO: same COCO AP (f32 on both)."""
    from yolodeploy.core.init import randomize_for_verification_
    from yolodeploy.deploy.export import export_onnx
    from yolodeploy.models import create_model

    torch.manual_seed(0)
    path = tmp_path / "v6.onnx"
    export_onnx(randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval(), path, img_size=64,
                dynamic_batch=True, check=False)  # fmt: skip
    aps = {}
    for backend in ("ort", "openvino"):
        out = tmp_path / f"{backend}.json"
        result = run_cli("eval", path, "--data", tiny_dataset, "--img", 64, "--backend", backend, "--json", out)
        assert result.exit_code == 0, result.output
        aps[backend] = json.loads(out.read_text())["metrics"]
    assert aps["openvino"] == pytest.approx(aps["ort"], abs=1e-3)


@needs_openvino
def test_build_engine_openvino_warns_about_int8_activations(qmodel, tmp_path):
    from yolodeploy.quant.export import export_qdq_onnx

    trt = export_qdq_onnx(qmodel, tmp_path / "q_trt.onnx", img_size=64, flavour="trt")
    result = run_cli("build-engine", trt, "--backend", "openvino", "--int8", "-o", tmp_path / "q.xml")
    assert result.exit_code == 0, result.output
    assert "note: int8 (TensorRT-style) activations" in result.output and "*_ort.onnx" in result.output
