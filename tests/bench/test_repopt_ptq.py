"""benchmarks/repopt_ptq.py: the Table 15 record from two quantize records and the checkpoints they name."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark


@pytest.fixture(scope="module")
def repopt_ptq():
    return load_benchmark("repopt_ptq")


def _trained_checkpoint(tmp_path, arch: str, epochs: int, scales: str | None):
    from yolodeploy.models import create_model, save_checkpoint

    run = tmp_path / f"run_{arch}"
    run.mkdir()
    (run / "results.json").write_text(json.dumps([{"train_seconds": 10.0}] * epochs))
    config = {"model": arch, "epochs": epochs, "img_size": 64, "repopt_scales": scales, "output": str(run),
              "optim": {"warmup_epochs": 1.0}}  # fmt: skip
    torch.manual_seed(0)
    return save_checkpoint(create_model("yolov6n", num_classes=2), run / "best.safetensors",
                           epoch=epochs, train_config=config)  # fmt: skip


def _quant_record(tmp_path, checkpoint, name: str, fp32: float, ptq: float):
    command = f"yolodeploy quantize {checkpoint} --data d --ptq --img 64 --json {name}.json"
    rows = {"fp32": {"ap": fp32, "ap50": fp32 + 0.1, "command": command},
            "ptq": {"ap": ptq, "ap50": ptq + 0.1, "command": command}}  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "rows": rows}))
    return str(path)


def test_pairs_accumulate_and_rows_carry_their_training(repopt_ptq, tmp_path, capsys):
    plain = _quant_record(tmp_path, _trained_checkpoint(tmp_path, "plain", 4, None), "plain", 0.50, 0.49)
    opt = _quant_record(tmp_path, _trained_checkpoint(tmp_path, "opt", 4, "s.safetensors"), "opt", 0.48, 0.478)
    out = tmp_path / "res" / "t15.json"
    assert repopt_ptq.main(["--pair", "4ep", plain, opt, "--json", str(out)]) == 0
    assert repopt_ptq.main(["--pair", "again", opt, plain, "--json", str(out)]) == 0  # kept beside the first
    pairs = json.loads(out.read_text())["pairs"]
    assert list(pairs) == ["4ep", "again"]
    row = pairs["4ep"]["plain"]
    assert row["ptq_ap_drop_points"] == pytest.approx(1.0) and pairs["4ep"]["repopt"]["ptq_ap_drop_points"] == 0.2
    assert row["train"]["epochs"] == 4 and row["train_seconds"] == 40.0 and row["epoch"] == 4
    assert pairs["4ep"]["repopt"]["train"]["repopt_scales"] == "s.safetensors"
    assert "| 4ep | plain (yolov6n) | 4 | 0.5000 | 0.4900 | +1.00 |" in out.with_suffix(".md").read_text()
    assert "+0.20" in capsys.readouterr().out


def test_a_checkpoint_without_training_metadata_takes_it_from_the_demo_record(repopt_ptq, tmp_path, monkeypatch):
    from yolodeploy.models import create_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = str(save_checkpoint(create_model("yolov6n", num_classes=2), tmp_path / "demo.safetensors"))
    record = {"checkpoint": ckpt, "epochs": 32, "best_epoch": 32, "train_seconds": 600.0,
              "train_command": ["yolodeploy", "train", "--model", "yolov6n", "--epochs", "32"]}  # fmt: skip
    (tmp_path / "demo_model.json").write_text(json.dumps(record))
    monkeypatch.setattr(repopt_ptq, "DEMO_RECORD", tmp_path / "demo_model.json")
    summary = repopt_ptq.training_summary(ckpt)
    assert summary["train"]["epochs"] == 32 and summary["train_seconds"] == 600.0
    assert summary["train"]["command"] == "yolodeploy train --model yolov6n --epochs 32"
    monkeypatch.setattr(repopt_ptq, "DEMO_RECORD", tmp_path / "absent.json")
    assert repopt_ptq.training_summary(ckpt)["train"] is None
