"""YOLOv6 stage blocks and feature-fusion layers: RepBlock, BottleRep, BepC3 (CSPStackRep), MBLABlock,
(CSP)SPPF, the transposed-conv upsample and BiFusion.

Names of modules and attributes follow the official implementation (github.com/meituan/YOLOv6, commit
e86a483) so that its state_dicts load unchanged. None of these blocks fuses anything itself: their
re-parameterizable children (:mod:`.layers`) do, when ``reparameterize_model`` reaches them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .layers import ConvBNReLU, ConvBNSiLU, ConvModule, RepVGGBlock

__all__ = [
    "RepBlock",
    "BottleRep",
    "BottleRep3",
    "BepC3",
    "MBLABlock",
    "SPPFModule",
    "SimSPPF",
    "SPPF",
    "CSPSPPFModule",
    "SimCSPSPPF",
    "CSPSPPF",
    "SPPF_LAYERS",
    "Transpose",
    "BiFusion",
]

BlockFactory = Callable[..., nn.Module]


def _activation_of(block: BlockFactory) -> str:
    """The official rule: stage-internal 1x1 convs use SiLU with ``conv_silu`` blocks, else ReLU."""
    return "silu" if block is ConvBNSiLU else "relu"


class RepBlock(nn.Module):
    """``n`` basic blocks in sequence: ``conv1`` then ``block`` (an ``nn.Sequential`` of the other ``n - 1``).

    Args:
        in_channels: input channels (of the first block).
        out_channels: output channels (of every block).
        n: number of blocks.
        block: factory ``block(in_channels, out_channels)`` of one basic block.
    """

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, block: BlockFactory = RepVGGBlock) -> None:
        super().__init__()
        self.conv1 = block(in_channels, out_channels)
        self.block = nn.Sequential(*(block(out_channels, out_channels) for _ in range(n - 1))) if n > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return x if self.block is None else self.block(x)


class BottleRep(nn.Module):
    """Two basic blocks with a residual connection (scaled by a learnable ``alpha`` when ``weight``).

    Args:
        in_channels: input channels.
        out_channels: output channels (the shortcut exists only when equal to ``in_channels``).
        basic_block: factory ``basic_block(in_channels, out_channels)``.
        weight: learn the shortcut scale ``alpha`` (initialized to 1).
    """

    num_convs = 2

    def __init__(
        self, in_channels: int, out_channels: int, basic_block: BlockFactory = RepVGGBlock, weight: bool = False
    ) -> None:
        super().__init__()
        for index in range(self.num_convs):
            channels = in_channels if index == 0 else out_channels
            self.add_module(f"conv{index + 1}", basic_block(channels, out_channels))
        self.shortcut = in_channels == out_channels
        self.alpha = nn.Parameter(torch.ones(1)) if weight else 1.0

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for index in range(self.num_convs):
            out = getattr(self, f"conv{index + 1}")(out)
        return out + self.alpha * x if self.shortcut else out


class BottleRep3(BottleRep):
    """:class:`BottleRep` with three basic blocks."""

    num_convs = 3


class BepC3(nn.Module):
    """CSPStackRep block: ``cv3(cat(m(cv1(x)), cv2(x)))`` with ``m`` a RepBlock of weighted BottleReps.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        n: depth; the inner RepBlock holds ``max(n // 2, 1)`` BottleReps.
        e: hidden-channel ratio.
        block: basic block of the BottleReps (ConvBNSiLU switches the 1x1 convs to SiLU).
    """

    def __init__(
        self, in_channels: int, out_channels: int, n: int = 1, e: float = 0.5, block: BlockFactory = RepVGGBlock
    ) -> None:
        super().__init__()
        hidden = int(out_channels * e)
        conv = ConvBNSiLU if _activation_of(block) == "silu" else ConvBNReLU
        self.cv1 = conv(in_channels, hidden, 1, 1)
        self.cv2 = conv(in_channels, hidden, 1, 1)
        self.cv3 = conv(2 * hidden, out_channels, 1, 1)
        bottle = functools.partial(BottleRep, basic_block=block, weight=True)
        self.m = RepBlock(hidden, hidden, n=max(n // 2, 1), block=bottle)

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


def _mbla_branch_depths(n: int) -> list[int]:
    """Depths of the MBLA branches: [0, 1] for n <= 3, else [0, largest power of two < n/2... , n // 2]."""
    n = max(n // 2, 1)
    if n == 1:
        return [0, 1]
    step = 1
    while step * 2 < n:
        step *= 2
    return [0, step, n]


class MBLABlock(nn.Module):
    """Multi-branch layer aggregation block (YOLOv6 v3 MBLA configs).

    ``cv1`` splits into branches of ``hidden`` channels; branch ``k`` runs a chain of weighted BottleRep3 of
    its depth, every intermediate output is kept, and ``cv2`` aggregates them all.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        n: depth (branch depths from :func:`_mbla_branch_depths`).
        e: hidden-channel ratio.
        block: basic block of the BottleRep3s (ConvBNSiLU switches the 1x1 convs to SiLU).
    """

    def __init__(
        self, in_channels: int, out_channels: int, n: int = 1, e: float = 0.5, block: BlockFactory = RepVGGBlock
    ) -> None:
        super().__init__()
        depths = _mbla_branch_depths(n)
        hidden = int(out_channels * e)
        activation = _activation_of(block)
        self.c = hidden
        self.cv1 = ConvModule(in_channels, len(depths) * hidden, 1, 1, activation)
        self.cv2 = ConvModule((sum(depths) + len(depths)) * hidden, out_channels, 1, 1, activation)
        self.m = nn.ModuleList(
            nn.Sequential(*(BottleRep3(hidden, hidden, basic_block=block, weight=True) for _ in range(depth)))
            for depth in depths[1:]
        )
        self.split_num = (hidden,) * len(depths)

    def forward(self, x: Tensor) -> Tensor:
        branches = self.cv1(x).split(self.split_num, 1)
        outputs = [branches[0]]
        for branch_input, chain in zip(branches[1:], self.m):
            outputs.append(branch_input)
            for bottle in chain:
                outputs.append(bottle(outputs[-1]))
        return self.cv2(torch.cat(outputs, 1))


class SPPFModule(nn.Module):
    """Fast spatial pyramid pooling: three chained max-pools, concatenated with their input."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 5, block: BlockFactory = ConvBNReLU
    ) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = block(in_channels, hidden, 1, 1)
        self.cv2 = block(hidden * 4, out_channels, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class CSPSPPFModule(nn.Module):
    """SPPF inside a cross-stage-partial split (cv1..cv7 as in the official layout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        e: float = 0.5,
        block: BlockFactory = ConvBNReLU,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * e)
        self.cv1 = block(in_channels, hidden, 1, 1)
        self.cv2 = block(in_channels, hidden, 1, 1)
        self.cv3 = block(hidden, hidden, 3, 1)
        self.cv4 = block(hidden, hidden, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=kernel_size, stride=1, padding=kernel_size // 2)
        self.cv5 = block(4 * hidden, hidden, 1, 1)
        self.cv6 = block(hidden, hidden, 3, 1)
        self.cv7 = block(2 * hidden, out_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y0 = self.cv2(x)
        y1 = self.m(x1)
        y2 = self.m(y1)
        y3 = self.cv6(self.cv5(torch.cat((x1, y1, y2, self.m(y2)), 1)))
        return self.cv7(torch.cat((y0, y3), dim=1))


class SPPF(nn.Module):
    """SPPF with SiLU convs (wrapped as ``self.sppf``)."""

    block: BlockFactory = ConvBNSiLU

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.sppf = SPPFModule(in_channels, out_channels, kernel_size, type(self).block)

    def forward(self, x: Tensor) -> Tensor:
        return self.sppf(x)


class SimSPPF(SPPF):
    """SPPF with ReLU convs."""

    block = ConvBNReLU


class CSPSPPF(nn.Module):
    """CSP-SPPF with SiLU convs (wrapped as ``self.cspsppf``)."""

    block: BlockFactory = ConvBNSiLU

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, e: float = 0.5) -> None:
        super().__init__()
        self.cspsppf = CSPSPPFModule(in_channels, out_channels, kernel_size, e, type(self).block)

    def forward(self, x: Tensor) -> Tensor:
        return self.cspsppf(x)


class SimCSPSPPF(CSPSPPF):
    """CSP-SPPF with ReLU convs."""

    block = ConvBNReLU


SPPF_LAYERS: dict[str, type[nn.Module]] = {
    "SimSPPF": SimSPPF,
    "SPPF": SPPF,
    "SimCSPSPPF": SimCSPSPPF,
    "CSPSPPF": CSPSPPF,
}


class Transpose(nn.Module):
    """2x upsampling by a biased transposed convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__()
        self.upsample_transpose = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample_transpose(x)


class BiFusion(nn.Module):
    """Bi-directional fusion of the neck: cat(upsample(top), cv1(same level), downsample(cv2(lower))).

    Args:
        in_channels: channels of the same-level and the lower-level (higher-resolution) inputs.
        out_channels: output channels (also the channels of the top input).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.cv1 = ConvBNReLU(in_channels[0], out_channels, 1, 1)
        self.cv2 = ConvBNReLU(in_channels[1], out_channels, 1, 1)
        self.cv3 = ConvBNReLU(out_channels * 3, out_channels, 1, 1)
        self.upsample = Transpose(out_channels, out_channels)
        self.downsample = ConvBNReLU(out_channels, out_channels, kernel_size=3, stride=2)

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        top, same, lower = x
        return self.cv3(torch.cat((self.upsample(top), self.cv1(same), self.downsample(self.cv2(lower))), dim=1))
