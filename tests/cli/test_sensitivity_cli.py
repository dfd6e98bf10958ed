"""``yolodeploy sensitivity``: the ranked table, JSON and chart end to end; bad inputs give one ``error:`` line."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_sensitivity_all_metrics_end_to_end(tiny_dataset, tiny_checkpoint, tmp_path):
    out_json, out_png = tmp_path / "sens.json", tmp_path / "sens.png"
    result = run_cli(
        "sensitivity", tiny_checkpoint, "--data", tiny_dataset, "--img", 64, "--images", 4, "--metric", "all",
        "--ap-images", 2, "--ap-top", 2, "--top", 5, "--json", out_json, "--plot", out_png,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("sensitivity (one-on, ranked by mse")
    assert lines[1].split() == ["rank", "index", "layer", "mse", "snr_db", "cosine", "ap_drop"]
    assert [line.split()[0] for line in lines[2:7]] == ["1", "2", "3", "4", "5"]
    saved = json.loads(out_json.read_text())
    assert len(saved["rankings"]["ap"]) == 2 and saved["rankings"]["ap"][0] in saved["rankings"]["mse"][:2]
    assert saved["config"]["metrics"] == ["mse", "snr", "cosine", "ap"] and "ap_float" in saved["baseline"]
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_sensitivity_one_off_registry_model(tiny_dataset):
    result = run_cli("sensitivity", "yolov6n", "--data", tiny_dataset, "--img", 64, "--images", 1, "--mode", "one-off",
                     "--metric", "cosine", "--top", 3, "--method", "max")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "one-off, ranked by cosine" in result.output and len(result.output.splitlines()) == 2 + 3


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["missing.safetensors"], ["missing.safetensors"]),
        (["CKPT", "--metric", "psnr"], ["unknown sensitivity metric 'psnr'", "mse, snr, cosine, ap"]),
        (["CKPT", "--mode", "half"], ["one-on, one-off"]),
        (["CKPT", "--img", 50], ["--img must be a positive multiple of 32"]),
        (["CKPT", "--method", "kl"], ["unknown calibration method"]),
    ],
)
def test_sensitivity_bad_inputs(tiny_dataset, tiny_checkpoint, tmp_path, args, fragments):
    args = [tiny_checkpoint if a == "CKPT" else a for a in args]
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    common = ["--data", tiny_dataset, "--img", 64, "--images", 1, "--json", out_json, "--plot", out_png]
    result = run_cli("sensitivity", args[0], *common, *args[1:])  # the bad option last: it wins over common's
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_sensitivity_missing_data(tiny_checkpoint, tmp_path):
    result = run_cli("sensitivity", tiny_checkpoint, "--data", tmp_path / "nope", "--json", tmp_path / "s.json")
    assert_one_line_error(result, "nope", "no such directory")
    assert list(tmp_path.iterdir()) == []
