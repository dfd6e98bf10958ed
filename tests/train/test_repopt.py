"""RepOptimizer (YOLOv6 §2.5.1): the gradient-mask identity, the official reinit rule, scales I/O, the optimizer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from yolodeploy.core.init import randomize_bn_, randomize_constants_
from yolodeploy.core.layers import LinearAddBlock, RealVGGBlock
from yolodeploy.errors import CheckpointError, ConfigError
from yolodeploy.models import create_model, save_checkpoint
from yolodeploy.train.repopt import (
    RepOptimizer,
    build_repopt_optimizer,
    check_scales_match,
    default_param_groups,
    equivalent_kernel,
    extract_scales,
    grad_masks,
    load_scales,
    reinit_from_scales_,
    save_scales,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

# (in, out, stride): with identity, stride 2 (no identity), in != out (no identity)
GEOMETRIES = [(4, 4, 1), (4, 4, 2), (3, 5, 1)]


def _csla_pair(in_channels: int, out_channels: int, stride: int, seed: int = 0):
    """A CSLA hyper-search block (constant conv scales, trainable kernels and identity scale) and its RealVGG twin
    re-initialized from its scales; the 1x1 kernel is the one the reinit draws, so both compute the same function."""
    torch.manual_seed(seed)
    hs = nn.ModuleDict({"b": LinearAddBlock(in_channels, out_channels, stride=stride, is_csla=True)})
    randomize_bn_(hs, seed)
    with torch.no_grad():
        for scale in (hs.b.scale_conv, hs.b.scale_1x1, getattr(hs.b, "scale_identity", None)):
            if scale is not None:
                scale.weight.uniform_(0.3, 1.5)
    opt = nn.ModuleDict({"b": RealVGGBlock(in_channels, out_channels, stride=stride)})
    opt.b.bn.load_state_dict(hs.b.bn.state_dict())
    with torch.no_grad():
        opt.b.conv.weight.copy_(hs.b.conv.weight)
        nn.init.kaiming_uniform_(hs.b.conv_1x1.weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(7))
    scales = extract_scales(hs)
    reinit_from_scales_(opt, scales, generator=torch.Generator().manual_seed(7))
    return hs.eval(), opt.eval(), scales


def _fused(hs: nn.ModuleDict) -> torch.Tensor:
    block = hs.b
    scales = [block.scale_1x1.weight, block.scale_conv.weight]
    if hasattr(block, "scale_identity"):
        scales.insert(0, block.scale_identity.weight)
    return equivalent_kernel(block.conv.weight, block.conv_1x1.weight, scales).detach()


def _loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((model.b(x) - target) ** 2).mean()


@pytest.mark.parametrize("in_channels,out_channels,stride", GEOMETRIES)
def test_reinit_is_the_equivalent_kernel(in_channels, out_channels, stride):
    hs, opt, scales = _csla_pair(in_channels, out_channels, stride)
    torch.testing.assert_close(opt.b.conv.weight, _fused(hs), atol=0, rtol=0)
    assert len(scales["b"]) == (3 if in_channels == out_channels and stride == 1 else 2)
    x = torch.randn(2, in_channels, 9, 9)
    torch.testing.assert_close(opt.b(x), hs.b(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("in_channels,out_channels,stride", GEOMETRIES)
@pytest.mark.parametrize("steps,momentum,nesterov", [(1, 0.0, False), (3, 0.9, True)])
def test_repopt_step_equals_multi_branch_step(in_channels, out_channels, stride, steps, momentum, nesterov):
    """The issue's acceptance test: SGD on the multi-branch block, re-fused, equals RepOptimizer on the fused conv."""
    hs, opt, scales = _csla_pair(in_channels, out_channels, stride)
    x = torch.randn(2, in_channels, 9, 9)
    target = torch.randn_like(hs.b(x))
    block = hs.b  # CSLA: the conv scales are frozen; the kernels and the identity scale train
    assert not block.scale_conv.weight.requires_grad and not block.scale_1x1.weight.requires_grad
    trainable = [block.conv.weight, block.conv_1x1.weight]
    if hasattr(block, "scale_identity"):
        trainable.append(block.scale_identity.weight)
    initial = opt.b.conv.weight.detach().clone()
    sgd = torch.optim.SGD(trainable, lr=0.05, momentum=momentum, nesterov=nesterov)
    repopt = RepOptimizer([opt.b.conv.weight], grad_masks(opt, scales), lr=0.05, momentum=momentum, nesterov=nesterov)
    for _ in range(steps):
        for model, optimizer in ((hs, sgd), (opt, repopt)):
            optimizer.zero_grad()
            _loss(model, x, target).backward()
            optimizer.step()
    assert not torch.equal(opt.b.conv.weight, initial)
    torch.testing.assert_close(opt.b.conv.weight.detach(), _fused(hs), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(opt.b(x), hs.b(x), atol=1e-5, rtol=1e-5)


def test_mask_values_follow_the_official_rule():
    _, opt, scales = _csla_pair(4, 4, 1)
    mask = grad_masks(opt, scales)[opt.b.conv.weight]
    _, s_1x1, s_conv = scales["b"]
    expected = (s_conv**2).view(-1, 1, 1, 1).expand(4, 4, 3, 3).clone()
    expected[:, :, 1, 1] += (s_1x1**2).view(-1, 1)
    expected[range(4), range(4), 1, 1] += 1.0
    torch.testing.assert_close(mask, expected, atol=0, rtol=0)


def test_weight_decay_is_added_after_masking_and_grad_is_untouched():
    _, opt, scales = _csla_pair(4, 4, 1)
    weight = opt.b.conv.weight
    mask = grad_masks(opt, scales)[weight]
    optimizer = RepOptimizer([weight], {weight: mask}, lr=0.1, momentum=0.0, weight_decay=0.01, nesterov=False)
    x = torch.randn(1, 4, 7, 7)
    opt.b(x).square().sum().backward()
    grad, before = weight.grad.clone(), weight.detach().clone()
    optimizer.step()
    torch.testing.assert_close(weight.detach(), before - 0.1 * (grad * mask + 0.01 * before))
    torch.testing.assert_close(weight.grad, grad, atol=0, rtol=0)


def test_step_hooks_run_once_and_closure_is_refused():
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)  # an SGD instance hooks SGD.step for the process
    weight = nn.Parameter(torch.ones(2))
    optimizer = RepOptimizer([weight], {weight: torch.full((2,), 3.0)}, lr=0.1, momentum=0.0, nesterov=False)
    calls = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *_: calls.append("post"))
    weight.sum().backward()
    optimizer.step()
    assert calls == ["pre", "post"]
    torch.testing.assert_close(weight.detach(), torch.full((2,), 0.7))
    with pytest.raises(NotImplementedError, match="closure"):
        optimizer.step(lambda: weight.sum())


def test_state_dict_resume_continues_identically():
    _, opt, scales = _csla_pair(4, 4, 1)
    resumed_model = copy.deepcopy(opt)
    x = torch.randn(1, 4, 7, 7)

    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            model.b(x).square().mean().backward()
            optimizer.step()

    optimizer = build_repopt_optimizer(opt, scales, lr=0.01)
    train(opt, optimizer, 2)
    resumed_model.load_state_dict(opt.state_dict())
    resumed = build_repopt_optimizer(resumed_model, scales, lr=0.01)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as if saved: no shared momentum buffers
    train(opt, optimizer, 1)
    train(resumed_model, resumed, 1)
    torch.testing.assert_close(resumed_model.b.conv.weight, opt.b.conv.weight, atol=0, rtol=0)


def test_default_param_groups_decay_only_weights():
    model = create_model("yolov6n_opt", num_classes=2)
    bn_weights, weights, biases = default_param_groups(model, 5e-4)
    assert [g["weight_decay"] for g in (bn_weights, weights, biases)] == [0.0, 5e-4, 0.0]
    assert all(p.dim() == 1 for p in bn_weights["params"] + biases["params"])
    grouped = sum(len(g["params"]) for g in (bn_weights, weights, biases))
    assert grouped == len([p for p in model.parameters() if p.requires_grad])  # frozen ones (DFL proj) left out


def test_masked_weight_missing_from_param_groups():
    _, opt, scales = _csla_pair(4, 4, 1)
    with pytest.raises(ConfigError, match="in no param group"):
        build_repopt_optimizer(opt, scales, lr=0.01, param_groups=[{"params": list(opt.b.bn.parameters())}])


def _trained_like_hs(name: str = "yolov6n_hs") -> nn.Module:
    return randomize_constants_(create_model(name, num_classes=2), seed=1)  # scales no longer all 1.0


def test_extract_save_load_round_trip(tmp_path):
    hs = _trained_like_hs()
    scales = extract_scales(hs)
    blocks = [(n, m) for n, m in hs.named_modules() if isinstance(m, LinearAddBlock)]
    assert list(scales) == [n for n, _ in blocks]
    for name, block in blocks:
        expected = [block.scale_1x1.weight, block.scale_conv.weight]
        if hasattr(block, "scale_identity"):
            expected.insert(0, block.scale_identity.weight)
        assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip(scales[name], expected))
    path = save_scales(scales, tmp_path / "s.safetensors")
    loaded = load_scales(path)
    assert loaded.arch == "yolov6n_hs" and list(loaded) == list(scales)
    assert all(torch.equal(a, b) for name in scales for a, b in zip(loaded[name], scales[name]))
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temp file left behind


def test_load_scales_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_scales(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all")
    with pytest.raises(CheckpointError):
        load_scales(garbage)
    path = save_scales(extract_scales(_trained_like_hs()), tmp_path / "s.safetensors")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(CheckpointError, match="truncated"):
        load_scales(truncated)
    checkpoint = save_checkpoint(create_model("yolov6n_opt", num_classes=2), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a RepOpt scales file"):
        load_scales(checkpoint)


def test_scales_mismatch_errors():
    opt = create_model("yolov6n_opt", num_classes=2)
    scales = extract_scales(_trained_like_hs())
    check_scales_match(opt, scales)
    with pytest.raises(ConfigError, match="another architecture.*yolov6_tiny_hs"):
        check_scales_match(opt, extract_scales(create_model("yolov6_tiny_hs", num_classes=2)))
    first = next(iter(scales))
    for broken, fragment in [
        ({k: v for k, v in scales.items() if k != first}, f"no scales for block {first}"),
        ({**scales, first: scales[first][:1]}, f"block {first} needs 2 scales"),
        ({**scales, "neck.extra": scales[first]}, "neck.extra"),
    ]:
        with pytest.raises(ConfigError, match="another architecture") as info:
            reinit_from_scales_(opt, broken)
        assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no LinearAddBlock"):
        extract_scales(opt)
    with pytest.raises(ConfigError, match="no RealVGGBlock"):
        grad_masks(_trained_like_hs(), scales)


def _sum_tensors(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.float().sum()
    return sum(_sum_tensors(item) for item in (value.values() if isinstance(value, dict) else value))


def test_end_to_end_one_training_step():
    scales = extract_scales(_trained_like_hs())
    model = create_model("yolov6n_opt", num_classes=2)
    check_scales_match(model, scales)
    reinit_from_scales_(model, scales, generator=torch.Generator().manual_seed(0))
    optimizer = build_repopt_optimizer(model, scales, lr=0.01)
    stem = model.backbone.stem.conv.weight
    before = stem.detach().clone()
    model.train()
    loss = _sum_tensors(model(torch.rand(1, 3, 64, 64)))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    assert torch.isfinite(stem).all() and not torch.equal(stem, before)
    assert len(optimizer.masks) == len(scales) and optimizer.state[stem]["momentum_buffer"] is not None
