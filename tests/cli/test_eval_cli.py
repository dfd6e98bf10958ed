"""``yolodeploy eval``: prints the COCO table, writes JSON; bad inputs give one ``error:`` line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from yolodeploy.core.data.synth import synthesize_dataset
from yolodeploy.models import create_model, save_checkpoint

IMG = 128


pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthesize_dataset(tmp_path_factory.mktemp("evalcli") / "ds", images=16, classes=3, img_size=IMG).root


def test_eval_checkpoint_prints_table_and_writes_json(data_root, tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("yolov6n", num_classes=3), tmp_path / "n.safetensors")
    out = tmp_path / "sub" / "eval.json"
    result = run_cli("eval", ckpt, "--data", data_root, "--img", IMG, "--batch", 2, "--json", out)
    assert result.exit_code == 0, result.output
    for name in ("AP ", "AP50", "AP75", "APs", "APm", "APl"):
        assert name in result.output
    assert "backend TorchRunner" in result.output
    saved = json.loads(out.read_text())
    assert saved["config"]["model"] == str(ckpt) and saved["config"]["split"] == "val"
    assert all(v == -1 or 0 <= v <= 1 for k, v in saved["metrics"].items() if k.startswith("ap"))
    assert saved["images"] > 0 and saved["seconds"] > 0


def test_eval_registry_name(data_root):
    result = run_cli("eval", "yolov6n", "--data", data_root, "--img", IMG, "--max-det", 50)
    assert result.exit_code == 0, result.output
    assert "AP50" in result.output


def test_eval_missing_data_dir(tmp_path):
    assert_one_line_error(run_cli("eval", "yolov6n", "--data", tmp_path / "nope"), "no such directory")


def test_eval_missing_split(data_root):
    assert_one_line_error(run_cli("eval", "yolov6n", "--data", data_root, "--split", "test"), "no annotation file")


def test_eval_missing_model_file(data_root, tmp_path):
    assert_one_line_error(run_cli("eval", tmp_path / "m.onnx", "--data", data_root), "no such model file")


def test_eval_refuses_nms_tail(data_root, tmp_path):
    from yolodeploy.deploy.export import export_onnx
    from yolodeploy.deploy.nms import NMSConfig

    path = tmp_path / "nms.onnx"
    export_onnx(create_model("yolov6n", num_classes=3), path, img_size=IMG, dynamic_batch=True,
                nms=NMSConfig("ort", topk=20, iou=0.65, conf=0.001), check=False)  # fmt: skip
    assert_one_line_error(run_cli("eval", path, "--data", data_root, "--img", IMG), "export without --nms")
