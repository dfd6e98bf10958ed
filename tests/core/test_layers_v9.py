"""YOLOv9 blocks: RepConvN fusion is exact and idempotent, DFL decodes the expectation over its bins, the
downsamplers and the reversible-branch modules (CBLinear/CBFuse) produce the official shapes and values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_bn_, state_dict_manifest
from torch import nn

from yolodeploy import reparameterize_model
from yolodeploy.core.layers_v9 import (
    DFL,
    ELAN1,
    SPPCSPC,
    SPPELAN,
    AConv,
    ADown,
    CBFuse,
    CBLinear,
    Conv,
    DDetect,
    DualDDetect,
    RepConvN,
    RepNBottleneck,
    RepNCSP,
    RepNCSPELAN4,
    TripleDDetect,
)

BLOCKS = {
    "conv_3x3_s2": (lambda: Conv(8, 12, 3, 2), 8),
    "conv_grouped_relu": (lambda: Conv(8, 8, 3, 1, groups=4, activation="relu"), 8),
    "conv_dilated": (lambda: Conv(8, 8, 3, 1, dilation=2), 8),
    "repconvn": (lambda: RepConvN(8, 12), 8),
    "repconvn_stride2": (lambda: RepConvN(8, 16, stride=2), 8),
    "repconvn_grouped": (lambda: RepConvN(8, 8, groups=2, activation="relu"), 8),
    "repn_bottleneck": (lambda: RepNBottleneck(16, 16), 16),
    "repncsp": (lambda: RepNCSP(16, 24, repeats=2), 16),
    "repncspelan4": (lambda: RepNCSPELAN4(16, 32, 32, 16, 2), 16),
    "elan1": (lambda: ELAN1(16, 32, 32, 16), 16),
    "sppelan": (lambda: SPPELAN(16, 16, 8), 16),
    "sppcspc": (lambda: SPPCSPC(16, 16), 16),
    "aconv": (lambda: AConv(16, 24), 16),
    "adown": (lambda: ADown(16, 24), 16),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_fusion_is_exact_and_idempotent(name):
    factory, channels = BLOCKS[name]
    torch.manual_seed(0)
    block = randomize_bn_(factory(), seed=1).eval()
    x = torch.randn(2, channels, 15, 17)
    with torch.no_grad():
        expected = block(x)
        fused = reparameterize_model(block)
        torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    layout = state_dict_manifest(fused)
    assert state_dict_manifest(reparameterize_model(fused, inplace=True)) == layout


def test_repconvn_layout_has_no_identity_branch_and_fuses_to_one_conv():
    block = RepConvN(8, 8)
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert [key for key in block.state_dict() if not key.endswith(statistics)] == [
        "conv1.conv.weight",
        "conv1.bn.weight",
        "conv1.bn.bias",
        "conv2.conv.weight",
        "conv2.bn.weight",
        "conv2.bn.bias",
    ]
    fused = reparameterize_model(block.eval())
    assert list(fused.state_dict()) == ["conv.weight", "conv.bias"]
    assert list(RepConvN(8, 8, inference_mode=True).state_dict()) == ["conv.weight", "conv.bias"]
    with pytest.raises(ValueError, match="kernel_size=3"):
        RepConvN(8, 8, kernel_size=1)


def test_repconvn_fusion_math():
    """The fused kernel is BN-folded 3x3 + BN-folded 1x1 padded to the centre tap."""
    torch.manual_seed(0)
    block = randomize_bn_(RepConvN(4, 6), seed=2).eval()
    kernel, bias = block._get_kernel_bias()
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        direct = F.conv2d(x, kernel, bias, padding=1)
        torch.testing.assert_close(block.act(direct), block(x), atol=1e-5, rtol=1e-5)


def test_dfl_is_the_expectation_over_bins():
    dfl = DFL(16)
    assert not dfl.conv.weight.requires_grad
    assert dfl.conv.weight.flatten().tolist() == list(range(16))
    logits = torch.randn(2, 64, 7)
    expected = (logits.view(2, 4, 16, 7).softmax(2) * torch.arange(16.0).view(1, 1, 16, 1)).sum(2)
    torch.testing.assert_close(dfl(logits), expected)
    # a one-hot distribution decodes to its bin
    one_hot = torch.full((1, 64, 1), -1e4)
    for side, bin_index in enumerate((0, 3, 9, 15)):
        one_hot[0, side * 16 + bin_index, 0] = 0.0
    assert dfl(one_hot).flatten().tolist() == [0.0, 3.0, 9.0, 15.0]


@pytest.mark.parametrize(("size", "out"), [(32, 16), (33, 16), (7, 3)])
def test_downsamplers_halve_the_grid(size, out):
    x = torch.randn(1, 16, size, size)
    assert ADown(16, 24)(x).shape == (1, 24, out, out)
    assert AConv(16, 24)(x).shape == (1, 24, out, out)


def test_adown_halves():
    """ADown: the first channel half through a strided 3x3 conv, the second through max pool + 1x1 conv."""
    block = ADown(8, 12).eval()
    x = torch.randn(1, 8, 10, 10)
    smoothed = F.avg_pool2d(x, 2, 1)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out[:, :6], block.cv1(smoothed[:, :4]))
        torch.testing.assert_close(out[:, 6:], block.cv2(F.max_pool2d(smoothed[:, 4:], 3, 2, 1)))


def test_cblinear_and_cbfuse():
    linear = CBLinear(8, [4, 6, 10])
    x = torch.randn(1, 8, 4, 4)
    chunks = linear(x)
    assert [tuple(c.shape) for c in chunks] == [(1, 4, 4, 4), (1, 6, 4, 4), (1, 10, 4, 4)]
    assert list(linear.state_dict()) == ["conv.weight", "conv.bias"]
    fuse = CBFuse([1, 0])
    small = (torch.randn(1, 3, 2, 2), torch.randn(1, 6, 2, 2))
    large = (torch.randn(1, 6, 4, 4),)
    target = torch.randn(1, 6, 8, 8)
    out = fuse([small, large, target])
    expected = target + F.interpolate(small[1], size=(8, 8)) + F.interpolate(large[0], size=(8, 8))
    assert out.shape == (1, 6, 8, 8)
    torch.testing.assert_close(out, expected)


def test_head_layouts_and_branches():
    single = DDetect(5, [16, 32, 64])
    assert [name for name, _ in single.named_children()] == ["cv2", "cv3", "dfl"]
    assert single.cv2[0][1].conv.groups == 4 and single.cv2[0][2].groups == 4
    dual = DualDDetect(5, [16, 32, 64, 16, 32, 64])
    assert [name for name, _ in dual.named_children()] == ["cv2", "cv3", "cv4", "cv5", "dfl", "dfl2"]
    triple = TripleDDetect(5, [16, 32, 64] * 3)
    assert [name for name, _ in triple.named_children()][-3:] == ["dfl", "dfl2", "dfl3"]
    with pytest.raises(ValueError, match="2 equal groups"):
        DualDDetect(5, [16, 32, 64])


def test_dual_head_eval_uses_the_main_branch():
    torch.manual_seed(0)
    head = DualDDetect(3, [8, 16, 8, 16], strides=(8, 16)).eval()
    inputs = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        raw = head.forward_raw(inputs)
        torch.testing.assert_close(head(inputs), head.decode(raw[1], 1))
        assert not torch.equal(head.decode(raw[0], 0), head.decode(raw[1], 1))
    head.train()
    assert len(head(inputs)) == 2


def test_activation_is_passed_explicitly():
    assert isinstance(Conv(4, 4).act, nn.SiLU)
    assert isinstance(Conv(4, 4, activation="relu").act, nn.ReLU)
    assert isinstance(Conv(4, 4, activation=None).act, nn.Identity)
    block = RepNCSPELAN4(8, 8, 8, 4, activation="relu")
    assert all(isinstance(m, nn.ReLU) for m in block.modules() if isinstance(m, (nn.SiLU, nn.ReLU)))
