"""The pure fusion functions equal the ops they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_bn_
from torch import nn

from yolodeploy.core.fuse import (
    avgpool_kernel,
    bn_scale_shift,
    conv_bn_kernel_bias,
    fold_bn,
    fused_conv,
    identity_kernel,
    pad_kernel,
)

ATOL = 1e-5


def _bn(channels: int, seed: int = 0) -> nn.BatchNorm2d:
    return randomize_bn_(nn.BatchNorm2d(channels, eps=1e-3), seed).eval()


def test_bn_scale_shift_is_eval_batchnorm():
    bn = _bn(8)
    x = torch.randn(2, 8, 5, 5)
    scale, shift = bn_scale_shift(bn)
    torch.testing.assert_close(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), bn(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_bn_equals_conv_then_bn(groups, bias):
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=groups, bias=bias)
    bn = _bn(12)
    x = torch.randn(2, 8, 9, 9)
    kernel, fused_bias = fold_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        expected = bn(conv(x))
        actual = F.conv2d(x, kernel, fused_bias, stride=2, padding=1, groups=groups)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def test_conv_bn_kernel_bias_without_bn_is_the_conv():
    conv = nn.Conv2d(4, 6, 1, bias=False)
    for bn in (None, nn.Identity()):
        kernel, bias = conv_bn_kernel_bias(conv, bn)
        assert kernel is conv.weight
        assert torch.equal(bias, torch.zeros(6))


@pytest.mark.parametrize("groups", [1, 2])
def test_pad_kernel_keeps_the_1x1_conv(groups):
    conv = nn.Conv2d(4, 6, 1, groups=groups, bias=False)
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        padded = F.conv2d(x, pad_kernel(conv.weight, 3), padding=1, groups=groups)
        torch.testing.assert_close(padded, conv(x), atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        pad_kernel(torch.zeros(1, 1, 3, 3), 4)


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_identity_kernel_is_identity(groups):
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(F.conv2d(x, identity_kernel(8, groups, 3), padding=1, groups=groups), x)


@pytest.mark.parametrize("groups", [1, 4])
def test_avgpool_kernel_is_average_pool(groups):
    x = torch.randn(2, 8, 6, 6)
    expected = F.avg_pool2d(x, 3, stride=1, padding=1)  # count_include_pad=True, as nn.AvgPool2d
    actual = F.conv2d(x, avgpool_kernel(8, groups, 3), padding=1, groups=groups)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def test_fused_conv_keeps_geometry():
    like = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
    kernel, bias = torch.randn(8, 4, 3, 3), torch.randn(8)
    conv = fused_conv(like, kernel, bias)
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, kernel, bias, stride=2, padding=1, groups=2))
