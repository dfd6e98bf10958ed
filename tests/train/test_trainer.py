"""The trainer: exact resume, DDP with 2 gloo processes, distillation and RepOpt wiring, bad inputs."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from yolodeploy.core.data.synth import synthesize_dataset
from yolodeploy.errors import ConfigError, DatasetError
from yolodeploy.models.checkpoint import load_checkpoint, save_checkpoint
from yolodeploy.train.config import TrainConfig
from yolodeploy.train.optim import OptimConfig
from yolodeploy.train.trainer import Trainer, resume_config

pytestmark = pytest.mark.usefixtures("single_thread_torch")

_OPTIM = OptimConfig(warmup_epochs=1, min_warmup_steps=0, nominal_batch=8)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "data"
    synthesize_dataset(root, images=20, classes=2, img_size=64, seed=3, splits=(0.6, 0.2, 0.2))
    return root


def _config(data, output, **overrides) -> TrainConfig:
    base = dict(model="yolov6n", data=str(data), epochs=2, img_size=64, batch_size=4, workers=0, output=str(output),
                optim=_OPTIM, close_mosaic=1, eval_batch=4, progress=False)  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_training_writes_checkpoints_history_and_state(tiny_data, tmp_path):
    result = Trainer(_config(tiny_data, tmp_path / "run")).fit()
    assert result.finished and result.epochs_done == 2
    history = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all("ap" in r and "loss" in r for r in history)
    model = load_checkpoint(result.last)
    assert model.num_classes == 2 and model.form == "train" and model.class_names == ["circle", "square"]
    assert result.best.is_file() and not list((tmp_path / "run").glob("*.tmp"))


def test_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    Trainer(_config(tiny_data, tmp_path / "straight")).fit()
    first = Trainer(_config(tiny_data, tmp_path / "chunked", stop_after=1)).fit()
    assert not first.finished and first.epochs_done == 1
    resumed = Trainer(resume_config(tmp_path / "chunked"), resume=True).fit()
    assert resumed.finished and resumed.epochs_done == 2
    straight, chunked = _weights(tmp_path / "straight" / "last.safetensors"), _weights(resumed.last)
    assert straight.keys() == chunked.keys()
    assert all(torch.equal(straight[k], chunked[k]) for k in straight)
    raw_a, raw_b = _weights(tmp_path / "straight" / "state.safetensors"), _weights(resumed.output / "state.safetensors")
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a if k.startswith(("model.", "optimizer.")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, output: str) -> None:
    from safetensors.torch import save_file

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))  # fmt: skip
    torch.set_num_threads(1)
    trainer = Trainer(_config(data, output, epochs=1, batch_size=2, seed=rank * 0))
    trainer.fit()
    state = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, f"{output}/rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_hold_identical_weights(tiny_data, tmp_path):
    from yolodeploy.models import create_model

    output = tmp_path / "ddp"
    output.mkdir()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data), str(output)), nprocs=2)
    rank0, rank1 = _weights(output / "rank0.safetensors"), _weights(output / "rank1.safetensors")
    # parameters are identical after every step; BN running statistics are per rank until DDP re-broadcasts
    # rank 0's buffers at the next forward
    parameters = {name for name, _ in create_model("yolov6n", num_classes=2).named_parameters()}
    rank0 = {k: v for k, v in rank0.items() if k in parameters}
    initial = load_checkpoint(output / "last.safetensors")  # written by rank 0 only
    assert len(rank0) == len(parameters) and initial is not None
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not (output / "rank1").exists()


def test_self_distillation_and_repopt_runs(tiny_data, tmp_path):
    from yolodeploy.models import create_model
    from yolodeploy.train.repopt import extract_scales, save_scales

    save_checkpoint(create_model("yolov6n", num_classes=2, head="fuse_ab"), tmp_path / "teacher.safetensors")
    teacher = str(tmp_path / "teacher.safetensors")
    result = Trainer(_config(tiny_data, tmp_path / "kd", epochs=1, head="distill_ns", teacher=teacher)).fit()
    assert result.history[0]["kd_distill_cls"] > 0 and "kd_distill_dfl" in result.history[0]
    save_scales(extract_scales(create_model("yolov6n_hs", num_classes=2)), tmp_path / "scales.safetensors")
    config = _config(tiny_data, tmp_path / "opt", model="yolov6n_opt", epochs=1,
                     repopt_scales=str(tmp_path / "scales.safetensors"))  # fmt: skip
    assert Trainer(config).fit().finished


def test_bad_boxes_and_unknown_classes_are_dropped_and_training_continues(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    annotation = data / "annotations" / "instances_train.json"
    coco = json.loads(annotation.read_text())
    coco["annotations"][0]["bbox"] = [-20, -20, 500, 500]  # outside the image: clipped
    coco["annotations"][1]["category_id"] = 99  # unknown class: dropped
    annotation.write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match="unknown"):
        assert Trainer(_config(data, tmp_path / "run", epochs=1)).fit().finished


def test_dataset_without_images_stops_with_a_clear_error(tmp_path):
    (tmp_path / "empty" / "images" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "annotations").mkdir()
    (tmp_path / "empty" / "annotations" / "instances_train.json").write_text(
        '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}'
    )  # noqa: E501
    with pytest.raises(DatasetError, match="no images"):
        Trainer(_config(tmp_path / "empty", tmp_path / "run")).fit()
    assert not (tmp_path / "run").exists()


def test_config_errors():
    with pytest.raises(ConfigError, match="--img"):
        TrainConfig(model="yolov6n", data=".", img_size=100)
    with pytest.raises(ConfigError, match="--epochs"):
        TrainConfig(model="yolov6n", data=".", epochs=0)


def test_train_cli_errors(tiny_data, tmp_path):
    assert_one_line_error(run_cli("train", "--model", "yolov6n"), "--data")
    assert_one_line_error(
        run_cli("train", "--model", "nope", "--data", tiny_data, "-o", tmp_path / "x"), "unknown model"
    )
    assert_one_line_error(run_cli("train", "--resume", "-o", tmp_path / "none"), "no training state")
    result = run_cli("train", "--model", "yolov6n", "--data", tiny_data, "--augment", "{bad", "-o", tmp_path / "y")
    assert_one_line_error(result, "--augment")
    result = run_cli("train", "--model", "yolov6n", "--data", tmp_path / "missing", "-o", tmp_path / "z")
    assert_one_line_error(result, "no such directory")


def test_train_cli_runs_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "--model", "yolov6n", "--data", tiny_data, "--epochs", 2, "--img", 64, "--batch", 4,
            "--workers", 0, "--min-warmup-steps", 0, "--quiet", "-o", out]  # fmt: skip
    result = run_cli(*args, "--stop-after", 1)
    assert result.exit_code == 0 and "continue with --resume" in result.output, result.output
    result = run_cli("train", "--resume", "-o", out, "--workers", 0, "--quiet")
    assert result.exit_code == 0 and result.output.startswith("finished"), result.output
