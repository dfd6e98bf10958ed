"""``yolodeploy quantize --qat``: the QAT stage end to end on a tiny model, the record (``--json``), bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from safetensors.torch import load_file

from yolodeploy.errors import ConfigError
from yolodeploy.models.checkpoint import load_checkpoint, read_metadata
from yolodeploy.quant import model as quant_model
from yolodeploy.quant.ptq import PTQConfig
from yolodeploy.quant.qat import QATConfig
from yolodeploy.quant.qat_run import epoch_choice_note, fusion_regression_note

pytestmark = pytest.mark.usefixtures("single_thread_torch")

_TINY = ("--img", 64, "--calib-images", 4, "--method", "max", "--epochs", 1, "--qat-batch", 4)
_IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def qat_cli(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    """``--ptq --qat`` with --bench and --json; records each saved model's output on ``_IMAGES`` when saved."""
    root = tmp_path_factory.mktemp("qat_cli")
    saved: dict[str, torch.Tensor] = {}
    real_save = quant_model.save_quantized

    def save_and_record(model, path, **meta):
        with torch.no_grad():
            saved[Path(path).name] = model.eval()(_IMAGES)
        return real_save(model, path, **meta)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quant_model, "save_quantized", save_and_record)
        result = run_cli(
            "quantize", tiny_checkpoint, "--data", tiny_dataset, "--ptq", "--qat", *_TINY, "--bench", "--bs", 1,
            "--iters", 2, "--json", root / "record.json", "-o", root / "out",
        )  # fmt: skip
    return result, root, saved


def test_qat_cli_writes_the_qat_row_checkpoint_and_record(qat_cli):
    result, root, _ = qat_cli
    assert result.exit_code == 0, result.output
    out = root / "out"
    for name in ("qat.safetensors", "qat_ort.onnx", "qat_trt.onnx", "int8.safetensors", "quant_report.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "quant_report.json").read_text())
    assert list(report["rows"]) == ["fp32", "ptq", "qat"]
    for key, row in report["rows"].items():
        assert set(row) == {"ap", "ap50", "latency_ms", "command"}, key
        assert 0 <= row["ap"] <= 1 and set(row["latency_ms"]) == {"1"}
        assert row["command"].startswith("yolodeploy") and row["command"] == report["command"]
    record = json.loads((root / "record.json").read_text())
    assert record == {"version": 1, "rows": report["rows"]}
    assert all(p["ok"] for p in report["parity"].values()) and {"qat_ort", "qat_trt"} <= set(report["parity"])
    qat = report["qat"]
    assert qat["start"] == "ptq" and qat["float_layers"] == [] and qat["best_epoch"] == 1
    assert qat["int8_convs"]["qat"] == qat["int8_convs"]["ptq"] > 0  # QAT left ORT's int8 fusion as it was
    assert not any("QLinearConv" in note for note in report["notes"])
    assert [h["epoch"] for h in qat["history"]] == [1]
    assert {"loss", "det", "kd_cls", "cwd", "ap"} <= set(qat["history"][0])
    assert qat["config"]["epochs"] == 1 and qat["config"]["lr"] == 1e-5 and qat["config"]["distill"] == "cwd"
    assert any(line.startswith("| QAT |") for line in result.output.splitlines())
    assert f"wrote {root / 'record.json'} (record)" in result.output


def test_fusion_regression_note():
    assert fusion_regression_note({"ptq": 61, "qat": 61}, "ptq") is None
    assert fusion_regression_note({"ptq_top6": 50, "qat": None}, "ptq_top6") is None  # no onnxruntime: no check
    note = fusion_regression_note({"ptq": 61, "qat": 55}, "ptq")
    assert note and "runs 55 convs" in note and "ptq file it started from 61" in note


def test_epoch_choice_note():
    history = [{"epoch": 1, "ap": 0.5}, {"epoch": 2, "ap": 0.6}, {"epoch": 3, "ap": 0.55}]
    note = epoch_choice_note(history, 2, same_images=True)
    assert note and "kept epoch 2 of 3" in note and "optimistic" in note and "0.5500" in note
    assert epoch_choice_note(history, 3, same_images=True) is None  # the last epoch: no choice was made
    assert epoch_choice_note(history, 2, same_images=False) is None  # chosen on other images
    assert epoch_choice_note([], None, same_images=True) is None  # no per-epoch AP


def test_qat_checkpoint_round_trips_with_ptq_amax(qat_cli):
    _, root, saved = qat_cli
    out = root / "out"
    qat_model, ptq_model = load_checkpoint(out / "qat.safetensors"), load_checkpoint(out / "int8.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(qat_model(_IMAGES), saved["qat.safetensors"], atol=0, rtol=0)
    qat_state, ptq_state = qat_model.state_dict(), ptq_model.state_dict()
    amax = [key for key in qat_state if key.endswith("amax")]
    assert amax and all(torch.equal(qat_state[key], ptq_state[key]) for key in amax)  # ranges frozen during QAT
    assert any(not torch.equal(qat_state[key], ptq_state[key]) for key in qat_state if key.endswith("conv.weight"))
    meta = read_metadata(out / "qat.safetensors")["user"]
    assert QATConfig.from_dict(meta["qat"]).epochs == 1 and meta["qat_run"]["best_epoch"] == 1
    assert meta["calibration"]["method"] == "max"


@pytest.mark.slow
def test_partial_qat_keeps_float_layers_and_label_free_recipe(tiny_checkpoint, tiny_dataset, tmp_path):
    result = run_cli(
        "quantize", tiny_checkpoint, "--data", tiny_dataset, "--qat", *_TINY, "--sensitive-topk", 1, "--partial",
        "--distill", "mse", "--qat-val-images", 0, "--learn-amax", "--amax-lr", 0.01, "-o", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "quant_report.json").read_text())
    assert list(report["rows"]) == ["fp32", "ptq", "ptq_top1", "qat"]
    assert report["qat"]["config"]["learn_amax"] and report["qat"]["config"]["amax_lr"] == 0.01
    start, trained = (load_file(tmp_path / f"{stem}.safetensors") for stem in ("int8_top1", "qat"))
    ranges = [key for key in start if key.endswith("amax") and start[key].numel()]
    float_layer = report["float_layers"][0]
    moved = {key for key in ranges if not torch.equal(start[key], trained[key])}
    assert moved and not any(key.startswith(float_layer + ".") for key in moved)  # learned where quantized only
    qat = report["qat"]
    assert qat["start"] == "ptq_top1" and len(qat["float_layers"]) == 1
    assert qat["float_layers"] == report["float_layers"]
    assert "ap" not in qat["history"][0] and qat["best_ap"] is None and "mse" in qat["history"][0]
    meta = read_metadata(tmp_path / "qat.safetensors")["user"]
    assert meta["quantization"]["disabled_layers"] == qat["float_layers"] and meta["qat"]["distill"] == "mse"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--qat", "--epochs", 0), ("epochs must be >= 1",)),
        (("--ptq", "--qat", "--distill", "foo"), ("foo", "cwd, mse, none")),
        (("--ptq", "--epochs", 3, "--distill", "mse"), ("--epochs, --distill", "--qat")),
        (("--qat", "--partial"), ("--partial", "--sensitive-topk")),
        (("--ptq", "--qat-val-images", 4), ("--qat",)),
        (("--qat", "--qat-val-images", -1), ("qat_val_images must be >= 0",)),
        (("--qat", "--train-split", "nope"), ("split 'nope'",)),
    ],
)
def test_bad_qat_inputs_fail_in_one_line_before_writing(tiny_checkpoint, tiny_dataset, tmp_path, args, fragments):
    result = run_cli("quantize", tiny_checkpoint, "--data", tiny_dataset, "--img", 64, *args, "-o", tmp_path / "out")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_ptq_config_with_qat_round_trips_and_checks_the_size(tiny_checkpoint, tiny_dataset, tmp_path):
    base = {"model": str(tiny_checkpoint), "data": str(tiny_dataset), "output": str(tmp_path), "img_size": 64}
    config = PTQConfig(**base, qat=QATConfig(img_size=64, distill="mse", epochs=2), sensitive_topk=2, qat_partial=True)
    assert PTQConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="img_size=64"):
        PTQConfig(**base, qat=QATConfig(epochs=2))
