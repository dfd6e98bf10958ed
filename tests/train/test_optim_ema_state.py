"""Optimizer groups, the warm-up + cosine schedule, EMA decay and the resumable state file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolodeploy.errors import CheckpointError
from yolodeploy.train.ema import ModelEMA
from yolodeploy.train.optim import OptimConfig, accumulation_steps, apply_schedule, build_sgd, cosine_factor
from yolodeploy.train.state import load_training_state, save_training_state


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))


def test_param_groups_keep_decay_off_bn_and_biases():
    net = _net()
    optimizer = build_sgd(net, OptimConfig(weight_decay=5e-4, nominal_batch=64), batch_size=16, accumulate=2)
    bn, weights, biases = optimizer.param_groups
    assert [p.shape for p in bn["params"]] == [torch.Size([4])] and bn["weight_decay"] == 0
    assert len(weights["params"]) == 2 and weights["weight_decay"] == pytest.approx(5e-4 * 32 / 64)
    assert len(biases["params"]) == 2 and biases["weight_decay"] == 0
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.937


def test_cosine_factor_and_accumulation():
    assert cosine_factor(0, 10, 0.01) == 1.0
    assert cosine_factor(10, 10, 0.01) == pytest.approx(0.01)
    assert cosine_factor(5, 10, 0.01) == pytest.approx(0.505)
    assert (
        accumulation_steps(16, 1, 64) == 4
        and accumulation_steps(16, 2, 64) == 2
        and accumulation_steps(128, 1, 64) == 1
    )


def test_warmup_ramps_lr_and_momentum_then_follows_cosine():
    config = OptimConfig(lr0=0.01, warmup_epochs=1, min_warmup_steps=0, warmup_bias_lr=0.1, warmup_momentum=0.8)
    optimizer = build_sgd(_net(), config, batch_size=64, accumulate=1)
    apply_schedule(optimizer, config, step=0, epoch=0, epochs=10, steps_per_epoch=10)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0, 0.1]
    assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.8)
    apply_schedule(optimizer, config, step=5, epoch=0, epochs=10, steps_per_epoch=10)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.005)
    assert optimizer.param_groups[2]["lr"] == pytest.approx(0.055)
    assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.8685)
    lr = apply_schedule(optimizer, config, step=50, epoch=5, epochs=10, steps_per_epoch=10)
    assert lr == pytest.approx(0.01 * 0.505) and optimizer.param_groups[2]["lr"] == pytest.approx(0.01 * 0.505)
    assert optimizer.param_groups[0]["momentum"] == 0.937


def test_min_warmup_steps_extends_short_warmups():
    config = OptimConfig(warmup_epochs=1, min_warmup_steps=100)
    optimizer = build_sgd(_net(), config, batch_size=64, accumulate=1)
    apply_schedule(optimizer, config, step=50, epoch=5, epochs=10, steps_per_epoch=10)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.5 * 0.01 * 0.505)


def test_ema_ramps_its_decay_and_averages_weights_and_buffers():
    net = _net()
    ema = ModelEMA(net, decay=0.9, tau=1.0)
    assert ema.current_decay() == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(2.0)
    before = ema.ema[0].weight.clone()
    ema.update(net)
    decay = 0.9 * (1 - torch.exp(torch.tensor(-1.0)).item())
    assert ema.updates == 1 and ema.current_decay() == pytest.approx(decay)
    torch.testing.assert_close(ema.ema[0].weight, before * decay + net[0].weight * (1 - decay))
    torch.testing.assert_close(ema.ema[1].running_mean, torch.full((4,), 2.0 * (1 - decay)))
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_training_state_round_trip_restores_momentum_and_rng(tmp_path):
    net = _net()
    optimizer = build_sgd(net, OptimConfig(), batch_size=16, accumulate=1)
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    ema = ModelEMA(net)
    path = save_training_state(tmp_path / "state.safetensors", net, ema.ema, optimizer, {"next_epoch": 3})
    expected_rng = torch.rand(3)
    restored = _net()
    restored_opt = build_sgd(restored, OptimConfig(), batch_size=16, accumulate=1)
    meta = load_training_state(path, restored, ModelEMA(restored).ema, restored_opt)
    assert meta["next_epoch"] == 3 and torch.equal(torch.rand(3), expected_rng)
    for a, b in zip(net.parameters(), restored.parameters()):
        assert torch.equal(a, b)
        assert torch.equal(optimizer.state[a]["momentum_buffer"], restored_opt.state[b]["momentum_buffer"])
    assert restored_opt.param_groups[1]["weight_decay"] == optimizer.param_groups[1]["weight_decay"]


def test_missing_or_bad_state_is_a_checkpoint_error(tmp_path):
    net = _net()
    optimizer = build_sgd(net, OptimConfig(), batch_size=16, accumulate=1)
    with pytest.raises(CheckpointError, match="no training state"):
        load_training_state(tmp_path / "none.safetensors", net, net, optimizer)
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_training_state(tmp_path / "bad.safetensors", net, net, optimizer)
