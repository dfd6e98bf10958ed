"""Re-parameterization math, written once as pure functions.

Every fusable block sums branch kernels/biases produced here; nothing in this module touches module
state. Conventions: conv kernels are ``(out, in/groups, kh, kw)``; a BatchNorm2d is reduced to a per-channel
``scale`` and ``shift`` (``y = x * scale + shift``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "bn_scale_shift",
    "fold_bn",
    "conv_bn_kernel_bias",
    "pad_kernel",
    "identity_kernel",
    "avgpool_kernel",
    "fused_conv",
    "identity_bn_kernel_bias",
    "fold_implicit",
]


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as an affine map: ``bn(x) == x * scale + shift`` per channel."""
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def fold_bn(kernel: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv ``(kernel, bias)`` into a new ``(kernel, bias)``."""
    scale, shift = bn_scale_shift(bn)
    if bias is None:
        bias = torch.zeros_like(shift)
    return kernel * scale.reshape(-1, 1, 1, 1), bias * scale + shift


def conv_bn_kernel_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor]:
    """Kernel and bias of ``bn(conv(x))`` (``bn`` may be None or Identity: the conv alone)."""
    if bn is None or isinstance(bn, nn.Identity):
        bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
        return conv.weight, bias
    return fold_bn(conv.weight, conv.bias, bn)


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a square kernel symmetrically to ``size x size`` (e.g. a 1x1 to the 3x3 it runs beside)."""
    pad = (size - kernel.shape[-1]) // 2
    if pad < 0 or kernel.shape[-1] + 2 * pad != size:
        raise ValueError(f"cannot centre a {kernel.shape[-1]}x{kernel.shape[-1]} kernel in {size}x{size}")
    return F.pad(kernel, [pad, pad, pad, pad]) if pad else kernel


def identity_kernel(channels: int, groups: int, size: int, *, dtype=None, device=None) -> Tensor:
    """The ``size x size`` (grouped) conv kernel that maps x to x: a 1 at the centre tap of channel ``i % (c/g)``."""
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, size, size, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    kernel[idx, idx % in_per_group, size // 2, size // 2] = 1.0
    return kernel


def identity_bn_kernel_bias(bn: nn.BatchNorm2d, groups: int, size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Kernel and bias of an identity branch followed by BatchNorm ``bn`` (dtype/device taken from ``like``)."""
    kernel = identity_kernel(bn.num_features, groups, size, dtype=like.dtype, device=like.device)
    return fold_bn(kernel, None, bn)


def avgpool_kernel(channels: int, groups: int, size: int, *, dtype=None, device=None) -> Tensor:
    """The (grouped) conv kernel equal to a ``size x size`` average pool (count_include_pad) per channel."""
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, size, size, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    kernel[idx, idx % in_per_group] = 1.0 / (size * size)
    return kernel


def fused_conv(like: nn.Conv2d, kernel: Tensor, bias: Tensor) -> nn.Conv2d:
    """A new biased ``nn.Conv2d`` with the geometry of ``like`` holding ``kernel`` and ``bias``."""
    conv = nn.Conv2d(
        like.in_channels,
        like.out_channels,
        kernel.shape[-1],
        stride=like.stride,
        padding=kernel.shape[-1] // 2 if like.padding == "same" else _scaled_padding(like, kernel.shape[-1]),
        dilation=like.dilation,
        groups=like.groups,
        bias=True,
        device=kernel.device,
        dtype=kernel.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
    conv.weight.requires_grad_(like.weight.requires_grad)
    conv.bias.requires_grad_(like.weight.requires_grad)
    return conv


def _scaled_padding(like: nn.Conv2d, size: int) -> tuple[int, int]:
    """Padding for a ``size`` kernel that keeps the output grid of ``like`` (which may be smaller)."""
    grow = (size - like.kernel_size[0]) // 2
    return (like.padding[0] + grow, like.padding[1] + grow)


def fold_implicit(
    kernel: Tensor, bias: Tensor | None, implicit_add: Tensor | None, implicit_mul: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Fold YOLOR implicit knowledge around a 1x1 conv: ``mul * conv(x + add)`` as one ``(kernel, bias)``.

    ``implicit_add`` (ImplicitA, added to the conv input) has one value per input channel, ``implicit_mul``
    (ImplicitM, multiplying the conv output) one per output channel (any shape with that many elements, e.g.
    ``(1, C, 1, 1)``). ``mul * (W (x + add) + b) = (mul W) x + mul (W add + b)``, exact for 1x1 kernels only
    (a padded larger kernel would see the added constant at the borders too).
    """
    if kernel.shape[-1] != 1 or kernel.shape[-2] != 1:
        raise ValueError(f"implicit knowledge folds exactly into 1x1 convs only, got a {tuple(kernel.shape)} kernel")
    if bias is None:
        bias = kernel.new_zeros(kernel.shape[0])
    if implicit_add is not None:
        bias = bias + (kernel * implicit_add.reshape(1, -1, 1, 1)).sum((1, 2, 3))
    if implicit_mul is not None:
        scale = implicit_mul.reshape(-1)
        kernel, bias = kernel * scale.reshape(-1, 1, 1, 1), bias * scale
    return kernel, bias
