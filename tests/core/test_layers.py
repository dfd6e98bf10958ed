"""Every fusable YOLOv6 block: the deploy form computes what the training form computes, and fusing twice
is a no-op. Non-fusable RepOpt blocks are left untouched, as the official deploy procedure leaves them."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_bn_, randomize_constants_, state_dict_manifest
from torch import nn

from yolodeploy import reparameterize_model
from yolodeploy.core.layers import (
    ConvBN,
    ConvBNHS,
    ConvBNReLU,
    ConvBNSiLU,
    ConvModule,
    LinearAddBlock,
    QARepVGGBlock,
    QARepVGGBlockV2,
    RealVGGBlock,
    RepVGGBlock,
    get_block,
)
from yolodeploy.core.layers_csp import (
    CSPSPPF,
    SPPF,
    BepC3,
    BiFusion,
    BottleRep,
    BottleRep3,
    MBLABlock,
    RepBlock,
    SimCSPSPPF,
    SimSPPF,
)

ATOL = 1e-5

# (id, factory, input channels); blocks with a ``reparameterize`` of their own, or made of such blocks
BLOCKS = {
    "conv_module_relu": (lambda: ConvModule(8, 12, 3, 2, "relu"), 8),
    "conv_module_grouped": (lambda: ConvModule(8, 8, 3, 1, None, groups=4, bias=True), 8),
    "conv_bn_relu": (lambda: ConvBNReLU(8, 12, 3, 1), 8),
    "conv_bn_silu": (lambda: ConvBNSiLU(8, 12, 1, 1), 8),
    "conv_bn_hs": (lambda: ConvBNHS(8, 12, 3, 2), 8),
    "conv_bn": (lambda: ConvBN(8, 12, 3, 1), 8),
    "repvgg_identity": (lambda: RepVGGBlock(8, 8), 8),
    "repvgg_stride2": (lambda: RepVGGBlock(8, 16, stride=2), 8),
    "repvgg_grouped_identity": (lambda: RepVGGBlock(8, 8, groups=4), 8),
    "qarepvgg_identity": (lambda: QARepVGGBlock(8, 8), 8),
    "qarepvgg_stride2": (lambda: QARepVGGBlock(8, 16, stride=2), 8),
    "qarepvgg_grouped": (lambda: QARepVGGBlock(8, 8, groups=2), 8),
    "qarepvggv2_identity": (lambda: QARepVGGBlockV2(8, 8), 8),
    "qarepvggv2_stride2": (lambda: QARepVGGBlockV2(8, 16, stride=2), 8),
    "qarepvggv2_grouped": (lambda: QARepVGGBlockV2(8, 8, groups=4), 8),
    "repblock": (lambda: RepBlock(8, 16, n=3), 8),
    "bottlerep": (lambda: BottleRep(16, 16, weight=True), 16),
    "bottlerep3_qa": (lambda: BottleRep3(16, 16, basic_block=QARepVGGBlockV2, weight=True), 16),
    "bepc3_repvgg": (lambda: BepC3(16, 24, n=4, e=2 / 3), 16),
    "bepc3_conv_silu": (lambda: BepC3(16, 24, n=2, block=ConvBNSiLU), 16),
    "mbla_n2": (lambda: MBLABlock(16, 16, n=2, block=ConvBNSiLU), 16),
    "mbla_n8": (lambda: MBLABlock(16, 32, n=8, block=RepVGGBlock), 16),
    "simsppf": (lambda: SimSPPF(16, 16), 16),
    "sppf": (lambda: SPPF(16, 24), 16),
    "simcspsppf": (lambda: SimCSPSPPF(16, 16), 16),
    "cspsppf": (lambda: CSPSPPF(16, 24), 16),
}


def _randomized(factory, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_constants_(randomize_bn_(factory(), seed), seed).eval()


@pytest.mark.parametrize("name", list(BLOCKS))
def test_reparameterize_is_equivalent_and_idempotent(name):
    factory, channels = BLOCKS[name]
    block = _randomized(factory)
    x = torch.randn(2, channels, 12, 12)
    with torch.no_grad():
        expected = block(x)
        fused = reparameterize_model(block)
        actual = fused(x)
        # deep composite blocks grow activations: absolute tolerance relative to the output scale
        scale = float(expected.abs().max().clamp_min(1.0))
        torch.testing.assert_close(actual, expected, atol=ATOL * scale, rtol=1e-5)
        layout = state_dict_manifest(fused)
        reparameterize_model(fused, inplace=True)
        assert state_dict_manifest(fused) == layout
        torch.testing.assert_close(fused(x), actual, atol=0, rtol=0)


@pytest.mark.parametrize("cls", [ConvModule, RepVGGBlock, QARepVGGBlock, QARepVGGBlockV2])
def test_block_reparameterize_method(cls):
    """Calling a leaf block's own ``reparameterize()`` fuses it completely; calling it again does nothing."""
    block = _randomized(lambda: cls(8, 8, 3, 1))
    x = torch.randn(1, 8, 10, 10)
    with torch.no_grad():
        expected = block(x)
        block.reparameterize()
        fused_conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
        block.reparameterize()
        assert next(m for m in block.modules() if isinstance(m, nn.Conv2d)) is fused_conv
        torch.testing.assert_close(block(x), expected, atol=ATOL, rtol=1e-5)
    assert fused_conv.bias is not None
    kept_bn = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(kept_bn) == (1 if cls in (QARepVGGBlock, QARepVGGBlockV2) else 0)  # QARepVGG keeps its post-BN


def test_repvgg_deploy_is_one_conv():
    fused = reparameterize_model(_randomized(lambda: RepVGGBlock(8, 8, groups=2)))
    assert [name for name, _ in fused.state_dict().items()] == ["rbr_reparam.weight", "rbr_reparam.bias"]
    assert fused.rbr_reparam.groups == 2


@pytest.mark.parametrize("cls", [ConvModule, RepVGGBlock, QARepVGGBlock, QARepVGGBlockV2])
def test_inference_mode_builds_the_deploy_layout(cls):
    fused = reparameterize_model(cls(8, 8, 3, 1).eval())
    direct = cls(8, 8, 3, 1, inference_mode=True)
    assert state_dict_manifest(direct) == state_dict_manifest(fused)


def test_bifusion_is_equivalent_after_fusion():
    block = _randomized(lambda: BiFusion((16, 8), 12))
    inputs = (torch.randn(1, 12, 4, 4), torch.randn(1, 16, 8, 8), torch.randn(1, 8, 16, 16))
    with torch.no_grad():
        expected = block(inputs)
        torch.testing.assert_close(reparameterize_model(block)(inputs), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize(
    "factory", [lambda: RealVGGBlock(8, 8), lambda: LinearAddBlock(8, 8), lambda: LinearAddBlock(8, 16, stride=2)]
)
def test_repopt_blocks_are_left_unfused(factory):
    """The official deploy pass does not touch RealVGGBlock/LinearAddBlock; neither do we."""
    block = _randomized(factory)
    fused = reparameterize_model(block)
    assert state_dict_manifest(fused) == state_dict_manifest(block)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), block(x), atol=0, rtol=0)


def test_linear_add_block_identity_scale_only_when_shapes_allow():
    assert hasattr(LinearAddBlock(8, 8), "scale_identity")
    assert not hasattr(LinearAddBlock(8, 8, stride=2), "scale_identity")
    assert not hasattr(LinearAddBlock(8, 16), "scale_identity")


def test_batchnorm_uses_official_eps_and_momentum():
    bn = next(m for m in RepVGGBlock(8, 8).modules() if isinstance(m, nn.BatchNorm2d))
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)


def test_get_block_lookup():
    assert get_block("repvgg") is RepVGGBlock
    assert get_block("conv_silu") is ConvBNSiLU
    with pytest.raises(ValueError, match="repvgg"):
        get_block("nope")


def test_mbla_branch_layout():
    block = MBLABlock(16, 16, n=8, block=ConvBNReLU)
    assert [len(chain) for chain in block.m] == [2, 4]  # branch depths 0, 2, 4
    assert block.cv2.conv.in_channels == (0 + 2 + 4 + 3) * 8
