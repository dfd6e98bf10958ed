"""YOLOv9 building blocks: GELAN (RepNCSPELAN4, ELAN1, ADown, AConv, SPPELAN), the PGI reversible branch
(CBLinear / CBFuse), and the anchor-free DFL heads (Detect, DDetect, DualDDetect, TripleDDetect).

Paper: "YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information" (arXiv:2402.13616).
Reference: https://github.com/WongKinYiu/yolov9 (commit 5b1ea9a). Class and attribute names are the official
ones so that official state_dicts load unchanged (``RepNCSPELAN4.cv2.0.m.0.cv1.conv1.conv.weight``, ...);
constructor arguments use full words, in the official positional order (the order of the layer-table args).

Every module that has activations takes ``activation`` explicitly (a key of the activation table of
:mod:`.layers`); the official code instead sets a class-global ``Conv.default_act`` when a config names one,
which leaks into every model built afterwards in the same process.

Fusable blocks (:class:`Conv` via :class:`~.layers.ConvModule`, :class:`RepConvN`) expose one idempotent
``reparameterize()``; the fusion math lives in :mod:`.fuse`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import decode_ltrb_channels, make_anchor_points
from .fuse import conv_bn_kernel_bias, fused_conv, pad_kernel
from .layers import make_activation
from .layers_v7 import DEFAULT_ACTIVATION, MP, SP, SPPCSPC, Concat, Conv, autopad
from .shapes import batch_dim, flatten_spatial, halves, static_size

__all__ = [
    "DEFAULT_ACTIVATION",
    "autopad",
    "Conv",
    "RepConvN",
    "RepNBottleneck",
    "RepNCSP",
    "RepNCSPELAN4",
    "ELAN1",
    "AConv",
    "ADown",
    "SP",
    "MP",
    "SPPELAN",
    "SPPCSPC",
    "Concat",
    "Silence",
    "CBLinear",
    "CBFuse",
    "DFL",
    "Detect",
    "DDetect",
    "DualDDetect",
    "TripleDDetect",
]


class RepConvN(nn.Module):
    """act(BN(conv3x3(x)) + BN(conv1x1(x))): the RepVGG-style block of GELAN, with NO identity branch.

    ``reparameterize()`` merges both branches into one biased 3x3 ``conv`` (the official fused layout).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: must be 3.
        stride: conv stride.
        padding: must be 1.
        groups: conv groups.
        activation: activation name, or None.
        inference_mode: build the fused ``conv`` directly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        groups: int = 1,
        activation: str | None = DEFAULT_ACTIVATION,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size != 3 or padding != 1:
            raise ValueError(f"RepConvN needs kernel_size=3, padding=1 (got {kernel_size}, {padding})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.act = make_activation(activation)
        if inference_mode:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=True)
            return
        self.conv1 = Conv(in_channels, out_channels, 3, stride, 1, groups, activation=None)
        self.conv2 = Conv(in_channels, out_channels, 1, stride, 0, groups, activation=None)

    @property
    def is_reparameterized(self) -> bool:
        return "conv" in self._modules

    def forward(self, x: Tensor) -> Tensor:
        if self.is_reparameterized:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    def _get_kernel_bias(self) -> tuple[Tensor, Tensor]:
        kernel, bias = conv_bn_kernel_bias(self.conv1.conv, self.conv1.bn)
        kernel_1x1, bias_1x1 = conv_bn_kernel_bias(self.conv2.conv, self.conv2.bn)
        return kernel + pad_kernel(kernel_1x1, kernel.shape[-1]), bias + bias_1x1

    def reparameterize(self) -> None:
        """Merge both branches into ``conv`` (no-op when already merged)."""
        if self.is_reparameterized:
            return
        kernel, bias = self._get_kernel_bias()
        conv = fused_conv(self.conv1.conv, kernel, bias)
        del self.conv1, self.conv2
        self.conv = conv


class RepNBottleneck(nn.Module):
    """RepConvN -> Conv, with a residual when shapes allow.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        shortcut: add the input when ``in_channels == out_channels``.
        groups: groups of the second conv.
        kernel_sizes: kernels of the two convs (the first must be 3).
        expansion: hidden channels = ``int(out_channels * expansion)``.
        activation: activation name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        shortcut: bool = True,
        groups: int = 1,
        kernel_sizes: tuple[int, int] = (3, 3),
        expansion: float = 0.5,
        activation: str | None = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.cv1 = RepConvN(in_channels, hidden, kernel_sizes[0], 1, activation=activation)
        self.cv2 = Conv(hidden, out_channels, kernel_sizes[1], 1, groups=groups, activation=activation)
        self.add = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.cv2(self.cv1(x))
        return x + out if self.add else out


class RepNCSP(nn.Module):
    """CSP stage of RepNBottlenecks: cv3(cat(m(cv1(x)), cv2(x))).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        repeats: number of bottlenecks.
        shortcut: residual bottlenecks.
        groups: bottleneck conv groups.
        expansion: hidden channels = ``int(out_channels * expansion)``.
        activation: activation name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        repeats: int = 1,
        shortcut: bool = True,
        groups: int = 1,
        expansion: float = 0.5,
        activation: str | None = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.cv1 = Conv(in_channels, hidden, 1, 1, activation=activation)
        self.cv2 = Conv(in_channels, hidden, 1, 1, activation=activation)
        self.cv3 = Conv(2 * hidden, out_channels, 1, activation=activation)
        self.m = nn.Sequential(
            *(
                RepNBottleneck(hidden, hidden, shortcut, groups, expansion=1.0, activation=activation)
                for _ in range(repeats)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class RepNCSPELAN4(nn.Module):
    """GELAN block: split cv1(x) in two, chain two (RepNCSP -> 3x3 Conv) stages on the second half, concat all.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        hidden_channels: channels of cv1 (split into two halves).
        block_channels: channels of each RepNCSP stage.
        repeats: bottlenecks per RepNCSP.
        activation: activation name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        block_channels: int,
        repeats: int = 1,
        activation: str | None = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__()
        self.c = hidden_channels // 2
        act = {"activation": activation}
        self.cv1 = Conv(in_channels, hidden_channels, 1, 1, **act)
        self.cv2 = nn.Sequential(
            RepNCSP(hidden_channels // 2, block_channels, repeats, **act),
            Conv(block_channels, block_channels, 3, 1, **act),
        )
        self.cv3 = nn.Sequential(
            RepNCSP(block_channels, block_channels, repeats, **act), Conv(block_channels, block_channels, 3, 1, **act)
        )
        self.cv4 = Conv(hidden_channels + 2 * block_channels, out_channels, 1, 1, **act)

    def forward(self, x: Tensor) -> Tensor:
        outputs = list(halves(self.cv1(x)))
        outputs.extend(stage(outputs[-1]) for stage in (self.cv2, self.cv3))
        return self.cv4(torch.cat(outputs, 1))


class ELAN1(nn.Module):
    """Light ELAN block (YOLOv9-T/S): like :class:`RepNCSPELAN4` with single 3x3 convs as stages.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        hidden_channels: channels of cv1 (split into two halves).
        block_channels: channels of each 3x3 stage.
        activation: activation name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        block_channels: int,
        activation: str | None = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__()
        self.c = hidden_channels // 2
        self.cv1 = Conv(in_channels, hidden_channels, 1, 1, activation=activation)
        self.cv2 = Conv(hidden_channels // 2, block_channels, 3, 1, activation=activation)
        self.cv3 = Conv(block_channels, block_channels, 3, 1, activation=activation)
        self.cv4 = Conv(hidden_channels + 2 * block_channels, out_channels, 1, 1, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        outputs = list(halves(self.cv1(x)))
        outputs.extend(stage(outputs[-1]) for stage in (self.cv2, self.cv3))
        return self.cv4(torch.cat(outputs, 1))


def _smooth(x: Tensor) -> Tensor:
    """The 2x2 stride-1 average pool (no padding) both downsamplers start with."""
    return F.avg_pool2d(x, 2, 1, 0, False, True)


class AConv(nn.Module):
    """Downsample: 2x2 average pool (stride 1), then a 3x3 stride-2 Conv."""

    def __init__(self, in_channels: int, out_channels: int, activation: str | None = DEFAULT_ACTIVATION) -> None:
        super().__init__()
        self.cv1 = Conv(in_channels, out_channels, 3, 2, 1, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.cv1(_smooth(x))


class ADown(nn.Module):
    """Downsample: 2x2 average pool, then half the channels through a 3x3 stride-2 Conv and half through a
    3x3 stride-2 max pool and a 1x1 Conv; the halves are concatenated."""

    def __init__(self, in_channels: int, out_channels: int, activation: str | None = DEFAULT_ACTIVATION) -> None:
        super().__init__()
        self.c = out_channels // 2
        self.cv1 = Conv(in_channels // 2, self.c, 3, 2, 1, activation=activation)
        self.cv2 = Conv(in_channels // 2, self.c, 1, 1, 0, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        first, second = halves(_smooth(x))
        return torch.cat((self.cv1(first), self.cv2(F.max_pool2d(second, 3, 2, 1))), 1)


class SPPELAN(nn.Module):
    """SPP in ELAN form: cv1, then three chained 5x5 max pools, all four concatenated into cv5.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        hidden_channels: channels of cv1 (and of each pooled map).
        activation: activation name.
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int, activation: str | None = DEFAULT_ACTIVATION
    ) -> None:
        super().__init__()
        self.c = hidden_channels
        self.cv1 = Conv(in_channels, hidden_channels, 1, 1, activation=activation)
        self.cv2, self.cv3, self.cv4 = SP(5), SP(5), SP(5)
        self.cv5 = Conv(4 * hidden_channels, out_channels, 1, 1, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [self.cv1(x)]
        outputs.extend(pool(outputs[-1]) for pool in (self.cv2, self.cv3, self.cv4))
        return self.cv5(torch.cat(outputs, 1))


class Silence(nn.Module):
    """Identity. In a layer table it gives later layers a handle on the input image (PGI's auxiliary branch)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class CBLinear(nn.Module):
    """One biased conv whose output is split into ``out_channels`` chunks (the reversible branch's taps).

    Args:
        in_channels: input channels.
        out_channels: channels of each output chunk.
        kernel_size: conv kernel.
        stride: conv stride.
        padding: conv padding (None: 'same').
        groups: conv groups.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c2s = [int(c) for c in out_channels]
        padding = autopad(kernel_size, padding)
        self.conv = nn.Conv2d(in_channels, sum(self.c2s), kernel_size, stride, padding, groups=groups, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.conv(x).split(self.c2s, dim=1)


class CBFuse(nn.Module):
    """Sum the last input with chunks of earlier :class:`CBLinear` outputs, resized (nearest) to its size.

    Args:
        indices: for each CBLinear input, which of its chunks to take.
    """

    def __init__(self, indices: Sequence[int]) -> None:
        super().__init__()
        self.idx = [int(i) for i in indices]

    def forward(self, xs: list) -> Tensor:
        target = xs[-1]
        resized = [F.interpolate(x[self.idx[i]], size=target.shape[2:], mode="nearest") for i, x in enumerate(xs[:-1])]
        return torch.sum(torch.stack(resized + [target]), dim=0)


class DFL(nn.Module):
    """Distribution focal loss decoding: per side, softmax over ``bins`` logits and the expectation over 0..bins-1.

    The expectation is a fixed (non-trainable) 1x1 conv ``conv`` holding 0..bins-1, as in the official code.
    """

    def __init__(self, bins: int = 16) -> None:
        super().__init__()
        self.c1 = bins
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(bins, dtype=torch.float).view(1, bins, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 4 * bins, N) side-major logits -> (B, 4, N) expected distances."""
        batch, points = batch_dim(x), int(x.shape[-1])  # constant reshapes in an ONNX export (``static_size``)
        probabilities = x.view(batch, 4, self.c1, points).transpose(2, 1).softmax(1)
        return self.conv(probabilities).view(batch, 4, points)


class Detect(nn.Module):
    """Anchor-free decoupled head with DFL boxes (official ``Detect``); base of the YOLOv9 heads.

    Per branch and level: ``cv2`` (box: two 3x3 Convs and a 1x1 conv to 4 x 16 bin logits) and ``cv3`` (class:
    two 3x3 Convs and a 1x1 conv to C logits). Multi-branch heads take their inputs branch after branch and name
    the branches' modules ``cv2/cv3/dfl``, ``cv4/cv5/dfl2``, ``cv6/cv7/dfl3``; the LAST branch is the one used
    at inference (the main branch of PGI's DualDDetect, the "fine" branch of TripleDDetect).

    Forward, eval: (B, N, 4 + C) of the inference branch: boxes xyxy in input pixels, then sigmoid scores; N
    anchor points ordered level, row, column. Forward, training: the official raw outputs (a list of per-level
    maps; for multi-branch heads one such list per branch). Raw maps in any mode: :meth:`forward_raw`.

    Args:
        num_classes: number of classes.
        in_channels: channels of every input (``num_branches x levels``).
        strides: stride of each level in input pixels.
        activation: activation name of the Convs.
    """

    num_branches: ClassVar[int] = 1
    grouped_box_convs: ClassVar[bool] = False  # DDetect: the second box conv and the output conv use groups=4
    reg_max: ClassVar[int] = 16

    def __init__(
        self,
        num_classes: int = 80,
        in_channels: Sequence[int] = (),
        strides: Sequence[int] = (8, 16, 32),
        activation: str | None = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__()
        if not in_channels or len(in_channels) % self.num_branches:
            raise ValueError(f"{type(self).__name__} needs {self.num_branches} equal groups of inputs")
        self.nc, self.nl = num_classes, len(in_channels) // self.num_branches
        if len(strides) < self.nl:
            raise ValueError(f"{self.nl} head levels but only {len(strides)} strides")
        self.no = num_classes + 4 * self.reg_max
        self.strides = tuple(int(s) for s in strides[: self.nl])
        for branch in range(self.num_branches):
            channels = in_channels[branch * self.nl : (branch + 1) * self.nl]
            box, cls, _ = self.branch_names(branch)
            setattr(self, box, self._box_convs(channels, activation))
            setattr(self, cls, self._class_convs(channels, activation))
        for branch in range(self.num_branches):
            setattr(self, self.branch_names(branch)[2], DFL(self.reg_max))
        self.initialize_biases_()

    @staticmethod
    def branch_names(branch: int) -> tuple[str, str, str]:
        """Attribute names of one branch's (box convs, class convs, DFL)."""
        return f"cv{2 * branch + 2}", f"cv{2 * branch + 3}", "dfl" if branch == 0 else f"dfl{branch + 1}"

    def _box_convs(self, channels: Sequence[int], activation: str | None) -> nn.ModuleList:
        hidden = max(channels[0] // 4, self.reg_max * 4, 16)
        groups = 4 if self.grouped_box_convs else 1
        if self.grouped_box_convs:
            hidden = math.ceil(hidden / 4) * 4
        return nn.ModuleList(
            nn.Sequential(
                Conv(c, hidden, 3, activation=activation),
                Conv(hidden, hidden, 3, groups=groups, activation=activation),
                nn.Conv2d(hidden, 4 * self.reg_max, 1, groups=groups),
            )
            for c in channels
        )

    def _class_convs(self, channels: Sequence[int], activation: str | None) -> nn.ModuleList:
        hidden = max(channels[0], min(self.nc * 2, 128))
        return nn.ModuleList(
            nn.Sequential(
                Conv(c, hidden, 3, activation=activation),
                Conv(hidden, hidden, 3, activation=activation),
                nn.Conv2d(hidden, self.nc, 1),
            )
            for c in channels
        )

    @torch.no_grad()
    def initialize_biases_(self) -> None:
        """Official init: box output bias 1.0; class bias log(5 / nc / (640 / stride)^2)."""
        for branch in range(self.num_branches):
            box, cls, _ = (getattr(self, name) for name in self.branch_names(branch))
            for box_convs, class_convs, stride in zip(box, cls, self.strides):
                box_convs[-1].bias.fill_(1.0)
                class_convs[-1].bias.fill_(math.log(5 / self.nc / (640 / stride) ** 2))

    @property
    def inference_branch(self) -> int:
        return self.num_branches - 1

    def branch_inputs(self, inputs: Sequence[Tensor], branch: int) -> list[Tensor]:
        """The inputs one branch reads (branch ``-1``: the inference branch)."""
        branch %= self.num_branches
        return list(inputs[branch * self.nl : (branch + 1) * self.nl])

    def _branch_raw(self, inputs: Sequence[Tensor], branch: int) -> list[Tensor]:
        box, cls, _ = (getattr(self, name) for name in self.branch_names(branch))
        return [torch.cat((box[i](x), cls[i](x)), 1) for i, x in enumerate(self.branch_inputs(inputs, branch))]

    def forward_raw(self, inputs: Sequence[Tensor]) -> list[list[Tensor]]:
        """Per branch (official order), per level: pre-activation (B, 4 * 16 + C, H, W) maps, box logits first."""
        return [self._branch_raw(inputs, branch) for branch in range(self.num_branches)]

    def decode(self, levels: Sequence[Tensor], branch: int = -1) -> Tensor:
        """(B, N, 4 + C) predictions (xyxy pixels, sigmoid scores) from one branch's raw maps."""
        dfl = getattr(self, self.branch_names(branch % self.num_branches)[2])
        box, cls = torch.cat([flatten_spatial(level) for level in levels], 2).split((4 * self.reg_max, self.nc), 1)
        distances = dfl(box)
        sizes = [static_size(level) for level in levels]
        points, point_strides = make_anchor_points(
            sizes, list(self.strides), dtype=distances.dtype, device=distances.device
        )
        boxes = decode_ltrb_channels(distances, points, point_strides)
        return torch.cat((boxes, cls.sigmoid()), 1).transpose(1, 2)

    def forward(self, inputs: list[Tensor]) -> Tensor | list:
        if self.training:
            raw = self.forward_raw(inputs)
            return raw[0] if self.num_branches == 1 else raw
        branch = self.inference_branch
        return self.decode(self._branch_raw(inputs, branch), branch)


class DDetect(Detect):
    """:class:`Detect` whose second box conv and box output conv are grouped (groups=4): the GELAN head."""

    grouped_box_convs = True


class DualDDetect(DDetect):
    """PGI head: an auxiliary branch (``cv2/cv3/dfl``, first half of the inputs) and the main branch
    (``cv4/cv5/dfl2``, second half), which alone is used at inference and survives the GELAN conversion."""

    num_branches = 2


class TripleDDetect(DDetect):
    """Three-branch head of yolov9-cf (auxiliary, coarse, fine); inference uses the third (fine) branch only."""

    num_branches = 3
