"""YOLOv7 layers: RepConv fusion (grouped identity included), implicit-knowledge folding, head decoding."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_bn_, randomize_implicit_
from torch import nn

from yolodeploy.core.fuse import fold_implicit
from yolodeploy.core.layers_v7 import (
    SPPCSPC,
    Concat,
    Detect,
    DownC,
    IAuxDetect,
    IDetect,
    ImplicitA,
    ImplicitM,
    ReOrg,
    RepConv,
    Shortcut,
)


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "stride", "groups", "identity"),
    [(8, 8, 1, 1, True), (8, 8, 1, 2, True), (12, 12, 1, 4, True), (8, 16, 1, 1, False), (8, 8, 2, 2, False)],
)
def test_repconv_reparameterization_is_exact(in_channels, out_channels, stride, groups, identity):
    """The identity branch is built per group: a grouped RepConv fuses exactly (the official fusion does not)."""
    torch.manual_seed(0)
    block = randomize_bn_(RepConv(in_channels, out_channels, 3, stride, groups=groups), seed=1).eval()
    assert (block.rbr_identity is not None) == identity
    x = torch.randn(2, in_channels, 9, 11)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        actual = block(x)
    assert list(block.state_dict()) == ["rbr_reparam.weight", "rbr_reparam.bias"]
    assert block.rbr_reparam.groups == groups and block.rbr_reparam.stride == (stride, stride)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    block.reparameterize()  # idempotent
    assert list(block.state_dict()) == ["rbr_reparam.weight", "rbr_reparam.bias"]


def test_repconv_layout_and_inference_mode():
    """Official keys (``rbr_identity`` first, then the Sequential branches); ``inference_mode`` is the fused layout."""
    keys = list(RepConv(8, 8).state_dict())
    assert keys[:5] == [
        f"rbr_identity.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    assert "rbr_dense.0.weight" in keys and "rbr_1x1.1.running_var" in keys
    assert RepConv(8, 8).rbr_dense[1].eps == 1e-3
    fused = RepConv(8, 8)
    fused.reparameterize()
    assert {k: v.shape for k, v in RepConv(8, 8, inference_mode=True).state_dict().items()} == {
        k: v.shape for k, v in fused.state_dict().items()
    }
    with pytest.raises(ValueError, match="kernel_size=3"):
        RepConv(8, 8, kernel_size=1)


def test_fold_implicit_is_exact():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 1)
    add, mul = ImplicitA(6, std=0.5), ImplicitM(10, std=0.5)
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        kernel, bias = fold_implicit(conv.weight, conv.bias, add.implicit, mul.implicit)
        expected = mul(conv(add(x)))
        actual = nn.functional.conv2d(x, kernel, bias)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)
    kernel, bias = fold_implicit(conv.weight, None, None, None)
    assert torch.equal(kernel, conv.weight) and torch.equal(bias, torch.zeros(10))
    with pytest.raises(ValueError, match="1x1"):
        fold_implicit(torch.zeros(4, 4, 3, 3), None, torch.zeros(4), None)


ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119))


def test_idetect_folds_into_detect():
    """IDetect's implicit knowledge folded into a plain Detect gives the same predictions and raw maps."""
    torch.manual_seed(0)
    head = randomize_implicit_(IDetect([8, 16], 4, ANCHORS, (8, 16)), seed=3).eval()
    deploy = Detect([8, 16], 4, ANCHORS, (8, 16)).eval()
    with torch.no_grad():
        for level, output in enumerate(head.m):
            kernel, bias = fold_implicit(output.weight, output.bias, head.ia[level].implicit, head.im[level].implicit)
            deploy.m[level].weight.copy_(kernel)
            deploy.m[level].bias.copy_(bias)
        features = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
        torch.testing.assert_close(deploy(features), head(features), atol=1e-4, rtol=1e-5)
        for actual, expected in zip(deploy.forward_raw(features), head.forward_raw(features)):
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_head_layouts_and_outputs():
    head = IAuxDetect([8, 16, 4, 4], 2, ANCHORS, (8, 16))
    assert [k.split(".")[0] for k in head.state_dict()][:2] == ["anchors", "anchor_grid"]
    assert list(dict.fromkeys(k.split(".")[0] for k in head.state_dict())) == [
        "anchors",
        "anchor_grid",
        "m",
        "m2",
        "ia",
        "im",
    ]
    torch.testing.assert_close(
        head.anchors[1], torch.tensor([[30 / 16, 61 / 16], [62 / 16, 45 / 16], [59 / 16, 119 / 16]])
    )
    assert head.anchor_grid.shape == (2, 1, 3, 1, 1, 2)
    features = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    assert [o.shape[1:] for o in head.train()(features)] == [(3, 4, 4, 7), (3, 2, 2, 7)] * 2
    assert head.eval()(features).shape == (1, 3 * (16 + 4), 6)
    with pytest.raises(ValueError, match="inputs"):
        IAuxDetect([8, 16], 2, ANCHORS, (8, 16))


def test_plumbing_layers():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = ReOrg()(x)
    assert y.shape == (2, 12, 2, 2) and torch.equal(y[:, 3:6], x[..., 1::2, ::2])
    assert torch.equal(Shortcut()([x, x]), 2 * x) and Concat()([x, x]).shape == (2, 6, 4, 4)
    assert DownC(3, 8)(x).shape == (2, 8, 2, 2)
    spp = SPPCSPC(3, 6)
    assert spp(x).shape == (2, 6, 4, 4) and spp.cv1.conv.out_channels == 6
