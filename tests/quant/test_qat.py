"""QAT (issue 6 item 5): straight-through gradients, the distillation terms, and run_qat end to end."""

from __future__ import annotations

import copy

import pytest
import torch

from yolodeploy.core.data.train_dataset import train_collate
from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.core.reparam import reparameterize_model
from yolodeploy.errors import ConfigError
from yolodeploy.models import create_model
from yolodeploy.quant.calibrate import calibrate
from yolodeploy.quant.export import build_qdq_graph
from yolodeploy.quant.model import disable_all, enable_all, load_quantized, quant_layers, quantize_model, save_quantized
from yolodeploy.quant.qat import (
    DistillMethod,
    QATConfig,
    QATLoss,
    _train_dataset,
    capture_head_inputs,
    run_qat,
    same_input_groups,
)
from yolodeploy.quant.quantizer import TensorQuantizer
from yolodeploy.train.distill import teacher_forward

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def batch(tiny_dataset):
    train = _train_dataset(tiny_dataset, QATConfig(img_size=64, augment={"mosaic": 0.0}))
    return train_collate([train[i] for i in range(4)])


def _float_and_quantized(name: str = "yolov6n"):
    torch.manual_seed(0)
    teacher = reparameterize_model(randomize_for_verification_(create_model(name, num_classes=2), 0).eval())
    qmodel = quantize_model(teacher)
    calibrate(qmodel, [torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))], method="max")
    return teacher, qmodel


@pytest.fixture()
def models():
    return _float_and_quantized()


def _losses(qmodel, teacher, config, images, targets, epoch=0):
    loss_fn = QATLoss(qmodel, config)
    qmodel.train()
    with capture_head_inputs(qmodel) as neck, capture_head_inputs(teacher) as teacher_neck:
        output = qmodel(images)
        teacher_output = teacher_forward(teacher, images)
        return loss_fn(qmodel, output, teacher_output, list(neck), list(teacher_neck), targets, epoch)


def test_straight_through_gradients_and_detection_loss_decreases(models, batch):
    teacher, qmodel = models
    images, targets = batch
    loss_fn = QATLoss(qmodel, QATConfig(distill="none"))
    optimizer = torch.optim.SGD(qmodel.parameters(), lr=1e-3, momentum=0.9)
    qmodel.train()
    losses = []
    for _ in range(5):
        loss, _parts = loss_fn(qmodel, qmodel(images), None, [], [], targets, 0)
        optimizer.zero_grad()
        loss.backward()
        if not losses:  # every fake-quantized conv weight gets a gradient through the quantizers
            grads = [layer.conv.weight.grad for layer in quant_layers(qmodel).values()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert sum(bool(g.abs().sum() > 0) for g in grads) >= 0.9 * len(grads)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_distillation_terms_vanish_for_identical_student(models, batch):
    teacher, qmodel = models
    images, targets = batch
    for distill, keys in (("cwd", ("kd_cls", "kd_dfl", "cwd")), ("mse", ("mse",))):
        config = QATConfig(distill=distill)
        disable_all(qmodel)
        _, parts = _losses(qmodel, teacher, config, images, targets)
        for key in keys:
            assert float(parts[key]) == pytest.approx(0.0, abs=1e-6), (distill, key)
        enable_all(qmodel)
        _, parts = _losses(qmodel, teacher, config, images, targets)
        for key in keys if distill == "mse" else ("cwd",):
            assert float(parts[key]) > 1e-6, (distill, key)
        if distill == "cwd":  # yolov6n has no DFL: kd_dfl stays 0. The class KD at T=20 is ~1e-5 on this tiny
            assert float(parts["kd_cls"]) != 0.0  # random model, at float32 rounding level: nonzero, sign noise


def test_distillation_weight_decays(models, batch):
    teacher, qmodel = models
    images, targets = batch
    config = QATConfig(distill="cwd", epochs=3)
    first, first_parts = _losses(qmodel, teacher, config, images, targets, epoch=0)
    last, last_parts = _losses(qmodel, teacher, config, images, targets, epoch=2)
    assert first_parts["alpha"] == 1.0 and last_parts["alpha"] < first_parts["alpha"]
    for total, parts in ((first, first_parts), (last, last_parts)):
        distill = float(parts["kd_cls"]) + 0.5 * float(parts["kd_dfl"]) + config.cwd_weight * float(parts["cwd"])
        assert float(total.detach()) - float(parts["det"]) == pytest.approx(parts["alpha"] * distill, rel=1e-3)


@pytest.mark.parametrize("distill", ["cwd", "mse"])
def test_run_qat_end_to_end(models, tiny_dataset, tmp_path, distill):
    teacher, qmodel = models
    amax = {k: v.clone() for k, v in qmodel.state_dict().items() if k.endswith("amax")}
    weights = {k: v.clone() for k, v in qmodel.state_dict().items() if k.endswith("conv.weight")}
    teacher_state = copy.deepcopy(teacher.state_dict())
    snapshots, aps = [], iter([0.5, 0.3])

    def eval_fn(model):
        assert not model.training
        snapshots.append(copy.deepcopy(model.state_dict()))
        return next(aps)

    config = QATConfig(epochs=2, lr=1e-3, batch_size=4, img_size=64, distill=distill)
    result = run_qat(qmodel, teacher, tiny_dataset, config, eval_fn=eval_fn, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2] and result.best_ap == 0.5 and result.best_epoch == 1
    assert {"kd_cls", "cwd", "det"} <= set(result.history[0]) if distill == "cwd" else "mse" in result.history[0]
    state = result.model.state_dict()
    torch.testing.assert_close(state, snapshots[0], atol=0, rtol=0)  # the best epoch's weights
    for key, value in amax.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    assert any(not torch.equal(state[key], value) for key, value in weights.items())
    torch.testing.assert_close(teacher.state_dict(), teacher_state, atol=0, rtol=0)
    path = save_quantized(result.model, tmp_path / "qat.safetensors", qat=config.to_dict())
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_quantized(path)(images), result.model(images), atol=0, rtol=0)


def test_run_qat_learn_amax_moves_the_ranges_and_saves_them(models, tiny_dataset, tmp_path):
    teacher, qmodel = models
    amax = {k: v.clone() for k, v in qmodel.state_dict().items() if k.endswith("amax") and v.numel()}
    ptq_ops = build_qdq_graph(qmodel, img_size=64, flavour="ort")[1].ort_ops
    config = QATConfig(epochs=1, lr=1e-3, batch_size=4, img_size=64, distill="cwd", learn_amax=True, amax_lr=0.01)
    result = run_qat(qmodel, teacher, tiny_dataset, config, progress=False)
    state = result.model.state_dict()
    assert not any(key.endswith("log_amax") for key in state)  # frozen back into the amax buffers
    assert not any(p.requires_grad and p.dim() == 0 for p in result.model.parameters())
    moved = [key for key, value in amax.items() if not torch.allclose(state[key], value, rtol=1e-4, atol=0)]
    assert len(moved) >= 0.9 * len(amax)  # activation and weight ranges alike
    path = save_quantized(result.model, tmp_path / "qat.safetensors", qat=config.to_dict())
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_quantized(path)(images), result.model(images), atol=0, rtol=0)
    # quantizers of one tensor learned one range: the export still merges them, ORT fuses as many int8 convs
    quantizers = [m for m in result.model.modules() if isinstance(m, TensorQuantizer) and m.axis is None]
    shared = [g for g in same_input_groups(result.model, [q for q in quantizers if q.is_calibrated]) if len(g) > 1]
    assert shared and all(torch.equal(g[0].amax, q.amax) for g in shared for q in g)
    assert build_qdq_graph(result.model, img_size=64, flavour="ort")[1].ort_ops == ptq_ops


def test_yolov9_family_mse_step(tiny_dataset):
    teacher, qmodel = _float_and_quantized("gelan_t")
    before = {k: v.clone() for k, v in qmodel.state_dict().items() if k.endswith("conv.weight")}
    config = QATConfig(epochs=1, lr=1e-3, batch_size=8, img_size=64, distill="mse")
    train = torch.utils.data.Subset(_train_dataset(tiny_dataset, config), range(2))
    result = run_qat(qmodel, teacher, train, config, progress=False)
    assert result.history[0]["mse"] > 0 and result.best_ap is None
    assert any(not torch.equal(qmodel.state_dict()[k], v) for k, v in before.items())


def test_config_validation_and_round_trip():
    config = QATConfig(distill="MSE", epochs=3)
    assert config.distill is DistillMethod.MSE
    assert QATConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="choose one of: cwd, mse, none"):
        QATConfig(distill="kl")
    with pytest.raises(ConfigError, match="unknown augment"):
        QATConfig(augment={"mosiac": 0.0})
    with pytest.raises(ConfigError, match="calibrate"):
        run_qat(quantize_model(create_model("yolov6n", num_classes=2)), None, ".", QATConfig(), progress=False)
