"""The CLI: each command works, and each bad input gives one line, a non-zero exit and no output file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, assert_one_line_error, reference_dir, run_cli

from yolodeploy.models import create_model, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "n.safetensors"
    torch.manual_seed(0)
    return save_checkpoint(create_model("yolov6n", num_classes=2), path)


def test_models_lists_with_params_and_flops():
    result = run_cli("models", "yolov6n")
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert "GFLOPs@640" in header and row.split()[0] == "yolov6n"
    # deploy params of yolov6n are in the fixture manifests: 4,646,974 (official README: 4.7M, 11.4 GFLOPs)
    assert "4.65M" in row
    assert 10.5 < float(row.split()[-1]) < 12.5


def test_models_pattern_and_unknown():
    names = run_cli("models", "yolov6*_qa", "--no-flops").output.split()
    assert names == ["yolov6m_qa", "yolov6n_qa", "yolov6s_qa"]
    assert_one_line_error(run_cli("models", "resnet*"), "no model matches")


def test_info(checkpoint):
    result = run_cli("info", str(checkpoint))
    assert result.exit_code == 0, result.output
    assert "yolov6n" in result.output and "num_classes     2" in result.output and "train" in result.output


def test_reparam_writes_verified_deploy_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "deploy.safetensors"
    result = run_cli("reparam", str(checkpoint), "-o", str(out), "--img", "128")
    assert result.exit_code == 0, result.output
    assert "train vs deploy: OK" in result.output
    assert load_checkpoint(out).form == "deploy"


def test_convert_official(tmp_path):
    ref = reference_dir("yolov6", "yolov6n")
    out = tmp_path / "official.safetensors"
    result = run_cli("convert", str(ref / "official_checkpoint.pt"), "-o", str(out), "--half")
    assert result.exit_code == 0, result.output
    assert "yolov6n" in result.output
    model = load_checkpoint(out)
    assert model.arch == "yolov6n" and model.class_names[0] == "person"


@pytest.mark.parametrize("command", ["info", "reparam", "convert"])
def test_missing_file(command, tmp_path):
    args = [command, str(tmp_path / "nope.pt")] + ([] if command == "info" else ["-o", str(tmp_path / "o.st")])
    assert_one_line_error(run_cli(*args), "no such file")
    assert not (tmp_path / "o.st").exists()


def test_truncated_and_non_checkpoint_files(checkpoint, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    assert_one_line_error(run_cli("reparam", str(cut), "-o", str(tmp_path / "o.st")), "truncated")
    junk = tmp_path / "notes.txt"
    junk.write_text("these are not weights\n" * 10)
    assert_one_line_error(run_cli("convert", str(junk), "-o", str(tmp_path / "o.st")), "not a checkpoint")
    assert not (tmp_path / "o.st").exists()


def test_unknown_architecture_and_wrong_num_classes(tmp_path):
    assert_one_line_error(
        run_cli("demo", "--model", "yolov6q", "--out", str(tmp_path)), "unknown model", "did you mean"
    )
    assert_one_line_error(run_cli("demo", "--num-classes", "0", "--out", str(tmp_path)), "num_classes")


def test_malicious_pickle_cli(tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    assert_one_line_error(run_cli("convert", str(tmp_path / "evil.pt"), "-o", str(tmp_path / "o.st")), "refusing")
    assert not marker.exists() and not (tmp_path / "o.st").exists()


def test_demo_main_job(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path), "--img", "128")
    assert result.exit_code == 0, result.output
    assert "train vs deploy: OK" in result.output and "deploy vs reloaded: OK" in result.output
    assert (tmp_path / "yolov6n_deploy.safetensors").is_file()


def test_console_script_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "yolodeploy.cli.main", "info", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("family", "folder", "arch", "deploy_arch"),
    [
        ("yolov7", "yolov7-tiny", "yolov7_tiny", "yolov7_tiny"),
        ("yolov9", "yolov9-t", "yolov9_t", "gelan_t"),
        ("yolov9", "gelan-t", "gelan_t", "gelan_t"),
    ],
)
def test_convert_and_reparam_cover_yolov7_and_yolov9(family, folder, arch, deploy_arch, tmp_path):
    official = reference_dir(family, folder) / "official_checkpoint.pt"
    converted, deployed = tmp_path / "c.safetensors", tmp_path / "d.safetensors"
    assert run_cli("convert", str(official), "-o", str(converted)).exit_code == 0
    info = run_cli("info", str(converted)).output
    assert f"arch            {arch}" in info and "num_classes     80" in info
    result = run_cli("reparam", str(converted), "-o", str(deployed), "--img", "128")
    assert result.exit_code == 0 and "train vs deploy: OK" in result.output, result.output
    model = load_checkpoint(deployed)
    assert model.form == "deploy" and model.arch == deploy_arch


def test_models_lists_every_family():
    names = run_cli("models", "--no-flops").output.split()
    assert {"yolov6n", "yolov6_lite_s", "yolov7_tiny", "yolov7_e6e", "yolov9_t", "gelan_c", "yolov9_cf"} <= set(names)
