"""``yolodeploy export`` and ``yolodeploy export-triton``: they work, and each bad input gives one ``error:``
line, exit code 1 and no output file."""

from __future__ import annotations

import onnx
import pytest
import torch
from conftest import assert_one_line_error, run_cli

from yolodeploy.models import create_model, save_checkpoint

IMG = "64"


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A dynamic-batch ONNX with the ORT NMS tail, exported through the CLI from a registry name."""
    path = tmp_path_factory.mktemp("cli") / "v6n.onnx"
    result = run_cli("export", "yolov6n", "-o", path, "--img", IMG, "--dynamic-batch", "--nms", "ort", "--topk", "20")
    assert result.exit_code == 0, result.output
    return path, result.output


def test_export_registry_name_with_nms(exported):
    path, output = exported
    assert path.is_file()
    assert "opset 17, torchscript exporter, fp32, nms ort" in output
    assert "parity         outputs (onnxruntime vs torch): OK" in output
    assert "num_dets (onnx NMS vs batched_nms): OK" in output
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]


def test_export_half_with_uint8_input_is_exact(tmp_path):
    path = tmp_path / "half_u8.onnx"
    result = run_cli("export", "yolov6n", "-o", path, "--img", IMG, "--half", "--uint8-input")
    assert result.exit_code == 0, result.output
    assert "inputs         images uint8 1x64x64x3" in result.output
    assert "(uint8 input vs float input): OK max_abs=0 " in result.output


def test_export_checkpoint_half_trt_no_check(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("yolov6n", num_classes=3), tmp_path / "n.safetensors")
    out = tmp_path / "n.onnx"
    result = run_cli("export", ckpt, "-o", out, "--img", IMG, "--half", "--nms", "trt", "--no-check", "--opset", "18")
    assert result.exit_code == 0, result.output
    assert "parity         not checked" in result.output and "fp16, nms trt" in result.output
    model = onnx.load(str(out))
    assert model.graph.node[-1].op_type == "EfficientNMS_TRT"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_export_triton(exported, tmp_path):
    path, _ = exported
    result = run_cli("export-triton", path, "-o", tmp_path / "repo", "--max-batch", "8", "--preferred-batch", "4,8")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "repo" / "v6n" / "config.pbtxt").read_text()
    assert 'name: "v6n"' in config and "preferred_batch_size: [ 4, 8 ]" in config and "max_batch_size: 8" in config
    assert (tmp_path / "repo" / "v6n" / "1" / "model.onnx").is_file()
    assert config.strip() in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["nope.safetensors"], ["nope.safetensors: no such file, nor a model name"]),
        (["resnet50"], ["resnet50: no such file, nor a model name", "yolodeploy models"]),
        (["yolov6n", "--img", "100"], ["multiples of the model's stride 32"]),
        (["yolov6n", "--opset", "9"], ["opset 9 is not supported"]),
        (["yolov6n", "--nms", "ort", "--iou", "2"], ["NMS iou threshold must be in [0, 1]"]),
        (["yolov6n", "--img", IMG, "--exporter", "dynamo", "--opset", "13"], ["not the requested 13", "--opset 18"]),
    ],
)
def test_export_bad_inputs(tmp_path, args, fragments):
    out = tmp_path / "out.onnx"
    assert_one_line_error(run_cli("export", *args, "-o", out), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_export_corrupt_checkpoint(tmp_path):
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(run_cli("export", ckpt, "-o", tmp_path / "o.onnx"), "bad.pt")
    assert not (tmp_path / "o.onnx").exists()


def test_export_triton_bad_inputs(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08garbage")
    assert_one_line_error(run_cli("export-triton", corrupt, "-o", tmp_path / "repo"), "not a valid ONNX model")
    assert_one_line_error(run_cli("export-triton", tmp_path / "missing.onnx", "-o", tmp_path / "repo"), "no such file")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    assert_one_line_error(run_cli("export-triton", engine, "-o", tmp_path / "repo"), "no sidecar m.engine.json")
    assert_one_line_error(
        run_cli("export-triton", engine, "-o", tmp_path / "repo", "--preferred-batch", "a,b"), "--preferred-batch 'a,b'"
    )
    assert not (tmp_path / "repo").exists()


def test_export_triton_non_image_onnx(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 10])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 10])],
    )
    path = tmp_path / "vec.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    assert_one_line_error(run_cli("export-triton", path, "-o", tmp_path / "repo"), "not an image tensor")
    assert not (tmp_path / "repo").exists()


@pytest.fixture(scope="module")
def quantized_checkpoint(tmp_path_factory):
    """A calibrated yolov6n (2 classes) saved as a ``form="quantized"`` checkpoint, and its fake-quant model."""
    from yolodeploy.core.init import randomize_for_verification_
    from yolodeploy.quant.calibrate import calibrate
    from yolodeploy.quant.model import quantize_model, save_quantized

    torch.manual_seed(0)
    qmodel = quantize_model(randomize_for_verification_(create_model("yolov6n", num_classes=2), 0).eval())
    calibrate(qmodel, [torch.rand(4, 3, 64, 64)], method="percentile", percentile=99.99)
    return save_quantized(qmodel, tmp_path_factory.mktemp("q") / "int8.safetensors"), qmodel


@pytest.mark.parametrize("flavour", ["ort", "trt"])
def test_export_quantized_checkpoint_at_another_size(quantized_checkpoint, tiny_dataset, tmp_path, flavour):
    """A quantized checkpoint re-exports as Q/DQ (graph passes applied) at a size it was not calibrated at, and
    the file equals what ``export_qdq_onnx`` writes from the in-memory model."""
    from yolodeploy.deploy.runners.onnxrt import OnnxRuntimeRunner
    from yolodeploy.quant.export import export_qdq_onnx

    ckpt, qmodel = quantized_checkpoint
    out = tmp_path / f"q_{flavour}.onnx"
    args = ["export", ckpt, "-o", out, "--img", "96", "--dynamic-batch", "--flavour", flavour, "--opset", "13"]
    result = run_cli(*args, "--check-data", tiny_dataset)
    assert result.exit_code == 0, result.output
    assert f"Q/DQ ONNX ({flavour} flavour), opset 13, 96x96, dynamic batch" in result.output
    assert "parity ok on 2 images" in result.output  # the tiny calib split has 2
    direct = export_qdq_onnx(qmodel, tmp_path / "direct.onnx", img_size=96, flavour=flavour)
    x = torch.rand(2, 3, 96, 96).numpy()
    with OnnxRuntimeRunner(out, threads=1) as a, OnnxRuntimeRunner(direct, threads=1) as b:
        assert (a.infer({"images": x})["outputs"] == b.infer({"images": x})["outputs"]).all()


def test_export_quantized_checkpoint_with_uint8_input(quantized_checkpoint, tiny_dataset, tmp_path):
    """--uint8-input: the ORT flavour's image quantizer goes (the pixels are its output), the stem reads 4-column
    groups; identical outputs."""
    from yolodeploy.core.preprocess import random_image_batch
    from yolodeploy.deploy.runners.onnxrt import OnnxRuntimeRunner

    ckpt, _ = quantized_checkpoint
    paths = {kind: tmp_path / f"q_{kind}.onnx" for kind in ("float", "uint8")}
    for kind, out in paths.items():
        extra = ["--uint8-input"] if kind == "uint8" else []
        args = ["export", ckpt, "-o", out, "--img", IMG, "--dynamic-batch", "--check-data", tiny_dataset, *extra]
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
    assert "uint8 input (B, 64, 64, 3): pixels feed the first conv's quantized input" in result.output
    assert "(uint8 input vs float input): OK max_abs=0 " in result.output
    assert "stem: reads 4-column groups (12 channels), identical outputs" in result.output
    graph = onnx.load(str(paths["uint8"])).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [node.op_type for node in graph.node if "images" in node.input] == ["Reshape"]  # to 4-column groups
    pixels = random_image_batch(2, 64, "uint8")
    floats = random_image_batch(2, 64, "float32")
    with OnnxRuntimeRunner(paths["float"], threads=1) as a, OnnxRuntimeRunner(paths["uint8"], threads=1) as b:
        assert (a.infer({"images": floats})["outputs"] == b.infer({"images": pixels})["outputs"]).all()


def test_export_quantized_checkpoint_refusals(quantized_checkpoint, tmp_path):
    ckpt, _ = quantized_checkpoint
    out = tmp_path / "q.onnx"
    assert_one_line_error(run_cli("export", ckpt, "-o", out), "--check-data DIR, or --no-check")
    assert_one_line_error(
        run_cli("export", ckpt, "-o", out, "--nms", "ort", "--no-check"), "--nms: not for a quantized"
    )
    assert_one_line_error(run_cli("export", ckpt, "-o", out, "--half", "--no-check"), "--half")
    assert_one_line_error(run_cli("export", "yolov6n", "-o", out, "--flavour", "trt"), "apply to quantized checkpoints")
    assert not out.exists()
