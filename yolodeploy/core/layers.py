"""Conv-BN-activation modules and the re-parameterizable 3x3 blocks of YOLOv6.

Module and attribute names follow the official implementation (github.com/meituan/YOLOv6, commit e86a483)
so that its state_dicts load unchanged: ``ConvBNReLU.block.conv``, ``RepVGGBlock.rbr_dense``, ... Every
BatchNorm is created with ``eps=1e-3, momentum=0.03``, the values the official ``initialize_weights`` sets.

Fusable blocks expose one idempotent ``reparameterize()``; the fusion math lives in :mod:`.fuse`.
:class:`RealVGGBlock` and :class:`LinearAddBlock` (RepOpt training modes) are deliberately NOT fusable: the
official deploy procedure leaves them as they are, and so do we.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .fuse import (
    avgpool_kernel,
    conv_bn_kernel_bias,
    fused_conv,
    identity_bn_kernel_bias,
    identity_kernel,
    pad_kernel,
)

__all__ = [
    "batch_norm",
    "make_activation",
    "ConvModule",
    "ConvBNAct",
    "ConvBNReLU",
    "ConvBNSiLU",
    "ConvBNHS",
    "ConvBN",
    "RepVGGBlock",
    "QARepVGGBlock",
    "QARepVGGBlockV2",
    "RealVGGBlock",
    "ScaleLayer",
    "LinearAddBlock",
    "TRAINING_MODE_BLOCKS",
    "get_block",
]

BN_EPS = 1e-3
BN_MOMENTUM = 0.03

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),  # YOLOv7-tiny's activation
}


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """A BatchNorm2d with the eps/momentum every YOLOv6 model uses."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def make_activation(name: str | None) -> nn.Module:
    """The activation module for a config name (None: identity)."""
    if name is None:
        return nn.Identity()
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)} or None")
    return _ACTIVATIONS[name]()


class ConvModule(nn.Module):
    """Conv2d -> BatchNorm2d -> activation.

    ``reparameterize()`` folds the BatchNorm into the conv (which gains a bias) and replaces ``bn`` by
    ``nn.Identity``, giving the official fused layout (``conv.weight``, ``conv.bias``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: conv stride.
        activation: ``"relu"``, ``"silu"``, ``"hardswish"`` or None.
        padding: conv padding; None means ``kernel_size // 2``.
        groups: conv groups.
        bias: whether the (unfused) conv has a bias.
        inference_mode: build the fused form directly (to load deploy weights).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        activation: str | None = None,
        padding: int | None = None,
        groups: int = 1,
        bias: bool = False,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias or inference_mode
        )
        self.bn = nn.Identity() if inference_mode else batch_norm(out_channels)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def reparameterize(self) -> None:
        """Fold ``bn`` into ``conv`` (no-op when already folded)."""
        if isinstance(self.bn, nn.Identity):
            return
        self.conv = fused_conv(self.conv, *conv_bn_kernel_bias(self.conv, self.bn))
        self.bn = nn.Identity()


class ConvBNAct(nn.Module):
    """A :class:`ConvModule` wrapped as ``self.block`` (the official ConvBNReLU/ConvBNSiLU/... layout)."""

    activation: str | None = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bias: bool = False,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        self.block = ConvModule(
            in_channels, out_channels, kernel_size, stride, self.activation, padding, groups, bias, inference_mode
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConvBNReLU(ConvBNAct):
    """Conv-BN-ReLU."""

    activation = "relu"


class ConvBNSiLU(ConvBNAct):
    """Conv-BN-SiLU."""

    activation = "silu"


class ConvBNHS(ConvBNAct):
    """Conv-BN-Hardswish."""

    activation = "hardswish"


class ConvBN(ConvBNAct):
    """Conv-BN without activation."""

    activation = None


class _Rep3x3Block(nn.Module):
    """What RepVGG-style 3x3 blocks share: argument checks, the activation, and the fused-state test."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size != 3 or padding != 1:
            raise ValueError(f"{type(self).__name__} needs kernel_size=3, padding=1 (got {kernel_size}, {padding})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()

    @property
    def is_reparameterized(self) -> bool:
        return "rbr_reparam" in self._modules

    def _fused_3x3(self, stride: int, dilation: int) -> nn.Conv2d:
        """The empty deploy conv (``inference_mode``), filled later by a state_dict load."""
        return nn.Conv2d(self.in_channels, self.out_channels, 3, stride, 1, dilation, self.groups, bias=True)


class RepVGGBlock(_Rep3x3Block):
    """RepVGG block: ReLU(BN(conv3x3) + BN(conv1x1) + BN(x)), the identity branch only when shapes allow.

    ``reparameterize()`` merges the three branches into one biased 3x3 conv ``rbr_reparam``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: must be 3.
        stride: conv stride (the identity branch exists only for stride 1 and equal channels).
        padding: must be 1.
        dilation: conv dilation.
        groups: conv groups (the identity kernel is built per group).
        inference_mode: build the fused ``rbr_reparam`` directly (to load deploy weights).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        inference_mode: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        if inference_mode:
            self.rbr_reparam = self._fused_3x3(stride, dilation)
            return
        has_identity = in_channels == out_channels and stride == 1
        self.rbr_identity = batch_norm(in_channels) if has_identity else None
        self.rbr_dense = ConvModule(in_channels, out_channels, 3, stride, None, padding, groups)
        self.rbr_1x1 = ConvModule(in_channels, out_channels, 1, stride, None, padding - 1, groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.is_reparameterized:
            return self.nonlinearity(self.se(self.rbr_reparam(x)))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.nonlinearity(self.se(out))

    def _get_kernel_bias(self) -> tuple[Tensor, Tensor]:
        kernel, bias = conv_bn_kernel_bias(self.rbr_dense.conv, self.rbr_dense.bn)
        kernel_1x1, bias_1x1 = conv_bn_kernel_bias(self.rbr_1x1.conv, self.rbr_1x1.bn)
        kernel, bias = kernel + pad_kernel(kernel_1x1, kernel.shape[-1]), bias + bias_1x1
        if self.rbr_identity is not None:
            kernel_id, bias_id = identity_bn_kernel_bias(self.rbr_identity, self.groups, kernel.shape[-1], kernel)
            kernel, bias = kernel + kernel_id, bias + bias_id
        return kernel, bias

    def reparameterize(self) -> None:
        """Merge all branches into ``rbr_reparam`` (no-op when already merged)."""
        if self.is_reparameterized:
            return
        kernel, bias = self._get_kernel_bias()
        self.rbr_reparam = fused_conv(self.rbr_dense.conv, kernel, bias)
        for name in ("rbr_identity", "rbr_dense", "rbr_1x1"):
            delattr(self, name)


class QARepVGGBlock(_Rep3x3Block):
    """Quantization-aware RepVGG block (arXiv:2212.01593): ReLU(BN(BN(conv3x3) + conv1x1 + x)).

    The branches have no per-branch BN except the 3x3 one; a post-sum ``bn`` stays in the deploy form (as in
    the official implementation, for QAT): ``reparameterize()`` merges the branches into ``rbr_reparam``
    and keeps ``bn``. Arguments as :class:`RepVGGBlock`.
    """

    _use_avg_branch = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        inference_mode: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        if not inference_mode:
            has_identity = in_channels == out_channels and stride == 1
            self.rbr_identity = nn.Identity() if has_identity else None
            self.rbr_dense = ConvModule(in_channels, out_channels, 3, stride, None, padding, groups)
            self.rbr_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, groups=groups, bias=False)
        self.bn = batch_norm(out_channels)
        if inference_mode:
            self.rbr_reparam = self._fused_3x3(stride, dilation)
        elif self._use_avg_branch:
            self.rbr_avg = nn.AvgPool2d(3, stride, padding) if has_identity else None

    def forward(self, x: Tensor) -> Tensor:
        if self.is_reparameterized:
            return self.nonlinearity(self.bn(self.se(self.rbr_reparam(x))))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        if getattr(self, "rbr_avg", None) is not None:
            out = out + self.rbr_avg(x)
        return self.nonlinearity(self.bn(self.se(out)))

    def _get_kernel_bias(self) -> tuple[Tensor, Tensor]:
        kernel, bias = conv_bn_kernel_bias(self.rbr_dense.conv, self.rbr_dense.bn)
        size, options = kernel.shape[-1], {"dtype": kernel.dtype, "device": kernel.device}
        kernel = kernel + pad_kernel(self.rbr_1x1.weight, size)
        if getattr(self, "rbr_avg", None) is not None:
            kernel = kernel + avgpool_kernel(self.in_channels, self.groups, size, **options)
        if self.rbr_identity is not None:
            kernel = kernel + identity_kernel(self.in_channels, self.groups, size, **options)
        return kernel, bias

    def reparameterize(self) -> None:
        """Merge the pre-``bn`` branches into ``rbr_reparam``; ``bn`` is kept (no-op when already merged)."""
        if self.is_reparameterized:
            return
        kernel, bias = self._get_kernel_bias()
        self.rbr_reparam = fused_conv(self.rbr_dense.conv, kernel, bias)
        for name in ("rbr_identity", "rbr_dense", "rbr_1x1", "rbr_avg"):
            if hasattr(self, name):
                delattr(self, name)


class QARepVGGBlockV2(QARepVGGBlock):
    """:class:`QARepVGGBlock` with an extra 3x3 average-pool branch (when the identity branch exists)."""

    _use_avg_branch = True


class RealVGGBlock(nn.Module):
    """Plain ReLU(BN(conv3x3)) block of the RepOpt ``repopt`` training mode (not fused by the deploy pass)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1
    ) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = batch_norm(out_channels)
        self.se = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.se(self.bn(self.conv(x))))


class ScaleLayer(nn.Module):
    """Per-channel learnable scale (and optional bias): ``x * weight (+ bias)``."""

    def __init__(self, num_features: int, use_bias: bool = True, scale_init: float = 1.0) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.full((num_features,), float(scale_init)))
        self.bias = nn.Parameter(torch.zeros(num_features)) if use_bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = x * self.weight.view(1, -1, 1, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class LinearAddBlock(nn.Module):
    """RepOpt hyper-search block: ReLU(BN(s1 * conv3x3 + s2 * conv1x1 + s3 * x)) with learnable scales.

    Used by the ``hyper_search`` training mode; the official deploy pass leaves it unfused.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: main conv kernel size.
        stride: conv stride (the scaled identity exists only for stride 1 and equal channels).
        padding: main conv padding.
        is_csla: freeze the conv scales (the CSLA variant).
        conv_scale_init: initial value of the conv scales.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        is_csla: bool = False,
        conv_scale_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.scale_conv = ScaleLayer(out_channels, use_bias=False, scale_init=conv_scale_init)
        self.conv_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
        self.scale_1x1 = ScaleLayer(out_channels, use_bias=False, scale_init=conv_scale_init)
        if in_channels == out_channels and stride == 1:
            self.scale_identity = ScaleLayer(out_channels, use_bias=False, scale_init=1.0)
        self.bn = batch_norm(out_channels)
        if is_csla:
            self.scale_1x1.requires_grad_(False)
            self.scale_conv.requires_grad_(False)
        self.se = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.scale_conv(self.conv(x)) + self.scale_1x1(self.conv_1x1(x))
        if hasattr(self, "scale_identity"):
            out = out + self.scale_identity(x)
        return self.relu(self.se(self.bn(out)))


TRAINING_MODE_BLOCKS: dict[str, type[nn.Module]] = {
    "repvgg": RepVGGBlock,
    "qarepvgg": QARepVGGBlock,
    "qarepvggv2": QARepVGGBlockV2,
    "hyper_search": LinearAddBlock,
    "repopt": RealVGGBlock,
    "conv_relu": ConvBNReLU,
    "conv_silu": ConvBNSiLU,
}


def get_block(training_mode: str) -> type[nn.Module]:
    """The basic 3x3 block class of an official ``training_mode``.

    Raises:
        ValueError: unknown mode (the message lists the valid ones).
    """
    try:
        return TRAINING_MODE_BLOCKS[training_mode]
    except KeyError:
        raise ValueError(
            f"unknown training_mode {training_mode!r}; expected one of {', '.join(TRAINING_MODE_BLOCKS)}"
        ) from None
