"""``yolodeploy quantize --ptq``: end to end with small numbers; bad inputs give one ``error:`` line, no files."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli

from yolodeploy.deploy.runners.openvino_runner import is_available as openvino_available

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.mark.parametrize(
    "bench_backend, uint8_input",
    [
        ("ort", False),
        pytest.param("openvino", False, marks=pytest.mark.skipif(not openvino_available(), reason="no openvino")),
        ("ort", True),
    ],
    ids=["ort", "openvino", "ort-uint8-input"],
)
def test_quantize_ptq_end_to_end(tiny_dataset, tiny_checkpoint, tmp_path, bench_backend, uint8_input):
    out = tmp_path / "out"
    result = run_cli(
        "quantize", tiny_checkpoint, "--data", tiny_dataset, "--ptq", "--img", 64, "--calib-images", 4,
        "--val-images", 4, "--method", "max", "--bench", "--bs", 1, "--bs", 2, "--iters", 2, "-o", out,
        "--bench-backend", bench_backend, *(["--uint8-input"] if uint8_input else []),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("| model | AP | AP50 | bs1 p50 ms | bs1 speed-up | bs2 p50 ms")
    assert lines[2].startswith("| FP32 |") and lines[3].startswith("| PTQ |")
    assert any(line.startswith("wrote ") and line.endswith("(int8_ort_onnx)") for line in lines)
    report = json.loads((out / "quant_report.json").read_text())
    assert report["config"]["method"] == "max" and report["command"].startswith("yolodeploy")
    assert report["config"]["bench_backend"] == bench_backend
    assert set(report["rows"]["ptq"]["latency_ms"]) == {"1", "2"}
    assert (
        (out / "int8_ort.onnx").is_file() and (out / "int8_trt.onnx").is_file() and (out / "int8.safetensors").is_file()
    )
    input_types = {name: onnx_input_type(out / f"{name}.onnx") for name in ("fp32", "int8_ort", "int8_trt")}
    if uint8_input:  # AP and latency were measured on pixel-input files; the TensorRT flavour keeps its float input
        assert input_types == {"fp32": "uint8", "int8_ort": "uint8", "int8_trt": "float32"}
        assert "note: int8_ort.onnx: uint8 input (B, 64, 64, 3): pixels feed the first conv's quantized input" in (
            result.output
        )
        assert "stem: reads 4-column groups (12 channels), identical outputs" in result.output
    else:
        assert set(input_types.values()) == {"float32"}


def onnx_input_type(path) -> str:
    import onnx

    elem_type = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.elem_type
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--ptq", "--data", "{missing}"), ("no such dataset",)),
        (("--data", "{data}"), ("--ptq",)),
        (("--ptq", "--qat", "--epochs", "0", "--data", "{data}"), ("epochs",)),
        (("--ptq", "--sensitive-topk", "-1", "--data", "{data}"), ("sensitive_topk must be >= 0",)),
        (("--ptq", "--img", "60", "--data", "{data}"), ("multiple of 32",)),
        (("--ptq", "--method", "median", "--data", "{data}"), ("median",)),
        (("--ptq", "--cost-aware", "--data", "{data}"), ("--cost-aware", "--sensitive-topk K")),
        (("--ptq", "--sensitive-topk", "1", "--cost-aware", "--cost-bs", "0", "--data", "{data}"), ("cost_batch",)),
    ],
)
def test_quantize_bad_inputs(tiny_dataset, tiny_checkpoint, tmp_path, args, fragments):
    out = tmp_path / "out"
    filled = [a.format(missing=tmp_path / "nope", data=tiny_dataset) for a in args]
    result = run_cli("quantize", tiny_checkpoint, *filled, "-o", out)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_quantize_missing_model(tiny_dataset, tmp_path):
    result = run_cli("quantize", tmp_path / "nope.safetensors", "--ptq", "--data", tiny_dataset, "-o", tmp_path / "o")
    assert_one_line_error(result, "no such checkpoint")
    assert not (tmp_path / "o").exists()
