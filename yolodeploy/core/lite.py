"""Building blocks of the YOLOv6-Lite (mobile) detectors: squeeze-excite, the shuffle-style efficient blocks
of the backbone, depthwise-pointwise (DP) blocks, the CSP neck block and the lite decoupled head.

Attribute names follow the official implementation (github.com/meituan/YOLOv6, ``yolov6/layers/common.py``
and ``yolov6/models/heads/effidehead_lite.py``) so that its state_dicts load unchanged.

The Conv-BN(-Hardswish) units are the shared :class:`~yolodeploy.core.layers.ConvBN` /
:class:`~yolodeploy.core.layers.ConvBNHS`. Re-parameterization mirrors the official deploy conversion
(``fuse_model``) exactly: the BatchNorm of every such unit is folded into its conv (their ``reparameterize()``);
:class:`DPBlock` keeps its two BatchNorms (the official conversion leaves them in place, and so do its deploy
state_dicts).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .boxes import decode_ltrb_channels, make_anchor_points
from .layers import ConvBN, ConvBNHS, batch_norm
from .shapes import batch_dim, flatten_spatial, halves, static_size

__all__ = [
    "SqueezeExcite",
    "channel_shuffle",
    "LiteEffiBlockS1",
    "LiteEffiBlockS2",
    "DPBlock",
    "DarknetBlock",
    "CSPBlock",
    "LiteEffiDeHead",
]


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with ReLU and a Hardsigmoid gate (the official ``SEBlock``).

    Args:
        channels: input and output channels.
        reduction: channel reduction of the bottleneck.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)
        self.hardsigmoid = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        gate = self.hardsigmoid(self.conv2(self.relu(self.conv1(self.avg_pool(x)))))
        return x * gate


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` equal groups."""
    batch, channels, (height, width) = batch_dim(x), int(x.shape[1]), static_size(x)
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class LiteEffiBlockS1(nn.Module):
    """Stride-1 efficient block: split channels in half, transform one half, concat, shuffle.

    The transformed half goes 1x1 Conv-BN-HS -> 3x3 depthwise Conv-BN -> SE -> 1x1 Conv-BN-HS.

    Args:
        in_channels: input channels (even; equal to ``out_channels``).
        mid_channels: channels of the depthwise stage.
        out_channels: output channels.
        stride: depthwise stride (1 in every official model).
        inference_mode: build the deploy form directly.
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1, inference_mode: bool = False
    ) -> None:
        super().__init__()
        deploy = {"inference_mode": inference_mode}
        self.conv_pw_1 = ConvBNHS(in_channels // 2, mid_channels, 1, padding=0, **deploy)
        self.conv_dw_1 = ConvBN(mid_channels, mid_channels, 3, stride, padding=1, groups=mid_channels, **deploy)
        self.se = SqueezeExcite(mid_channels)
        self.conv_1 = ConvBNHS(mid_channels, out_channels // 2, 1, padding=0, **deploy)

    def forward(self, x: Tensor) -> Tensor:
        kept, transformed = halves(x)
        transformed = self.conv_1(self.se(self.conv_dw_1(self.conv_pw_1(transformed))))
        return channel_shuffle(torch.cat((kept, transformed), 1), 2)


class LiteEffiBlockS2(nn.Module):
    """Downsampling efficient block: two strided branches, concat, then a depthwise-pointwise mix.

    Branch 1: 3x3 depthwise Conv-BN -> 1x1 Conv-BN-HS. Branch 2: 1x1 Conv-BN-HS -> 3x3 depthwise Conv-BN ->
    SE -> 1x1 Conv-BN-HS. After the concat: 3x3 depthwise Conv-BN-HS -> 1x1 Conv-BN-HS.

    Args:
        in_channels: input channels.
        mid_channels: twice the channels of branch 2's depthwise stage.
        out_channels: output channels (even).
        stride: stride of both branches' depthwise convs (2 in every official model).
        inference_mode: build the deploy form directly.
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 2, inference_mode: bool = False
    ) -> None:
        super().__init__()
        deploy = {"inference_mode": inference_mode}
        half_mid, half_out = mid_channels // 2, out_channels // 2
        self.conv_dw_1 = ConvBN(in_channels, in_channels, 3, stride, padding=1, groups=in_channels, **deploy)
        self.conv_1 = ConvBNHS(in_channels, half_out, 1, padding=0, **deploy)
        self.conv_pw_2 = ConvBNHS(in_channels, half_mid, 1, padding=0, **deploy)
        self.conv_dw_2 = ConvBN(half_mid, half_mid, 3, stride, padding=1, groups=half_mid, **deploy)
        self.se = SqueezeExcite(half_mid)
        self.conv_2 = ConvBNHS(half_mid, half_out, 1, padding=0, **deploy)
        self.conv_dw_3 = ConvBNHS(out_channels, out_channels, 3, 1, padding=1, groups=out_channels, **deploy)
        self.conv_pw_3 = ConvBNHS(out_channels, out_channels, 1, padding=0, **deploy)

    def forward(self, x: Tensor) -> Tensor:
        branch1 = self.conv_1(self.conv_dw_1(x))
        branch2 = self.conv_2(self.se(self.conv_dw_2(self.conv_pw_2(x))))
        return self.conv_pw_3(self.conv_dw_3(torch.cat((branch1, branch2), 1)))


class DPBlock(nn.Module):
    """Depthwise kxk conv -> BN -> Hardswish -> pointwise 1x1 conv -> BN -> Hardswish (both convs biased).

    Not re-parameterized: the official deploy conversion keeps both BatchNorms, and the deploy state_dicts
    (and with them every exported official lite model) contain them.

    Args:
        in_channels: input channels (must equal ``out_channels``: the depthwise conv has ``out_channels`` groups).
        out_channels: output channels.
        kernel_size: depthwise kernel size.
        stride: depthwise stride.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw_1 = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=out_channels
        )
        self.bn_1 = batch_norm(out_channels)
        self.act_1 = nn.Hardswish()
        self.conv_pw_1 = nn.Conv2d(out_channels, out_channels, 1)
        self.bn_2 = batch_norm(out_channels)
        self.act_2 = nn.Hardswish()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_1(self.bn_1(self.conv_dw_1(x)))
        return self.act_2(self.bn_2(self.conv_pw_1(x)))


class DarknetBlock(nn.Module):
    """1x1 Conv-BN-HS to ``out_channels * expansion`` channels, then a :class:`DPBlock`.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: depthwise kernel size of the DPBlock.
        expansion: hidden-channel ratio.
        inference_mode: build the deploy form directly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        expansion: float = 0.5,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        hidden_channels = int(out_channels * expansion)
        self.conv_1 = ConvBNHS(in_channels, hidden_channels, 1, padding=0, inference_mode=inference_mode)
        self.conv_2 = DPBlock(hidden_channels, out_channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_2(self.conv_1(x))


class CSPBlock(nn.Module):
    """Cross-stage-partial block: two 1x1 branches (one through a :class:`DarknetBlock`), concat, 1x1 fuse.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: depthwise kernel size inside the DarknetBlock.
        expand_ratio: channels of each branch relative to ``out_channels``.
        inference_mode: build the deploy form directly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        expand_ratio: float = 0.5,
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        mid_channels = int(out_channels * expand_ratio)
        deploy = {"inference_mode": inference_mode}
        self.conv_1 = ConvBNHS(in_channels, mid_channels, 1, padding=0, **deploy)
        self.conv_2 = ConvBNHS(in_channels, mid_channels, 1, padding=0, **deploy)
        self.conv_3 = ConvBNHS(2 * mid_channels, out_channels, 1, padding=0, **deploy)
        self.blocks = DarknetBlock(mid_channels, mid_channels, kernel_size, 1.0, **deploy)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_3(torch.cat((self.blocks(self.conv_1(x)), self.conv_2(x)), 1))


class LiteEffiDeHead(nn.Module):
    """The lite efficient decoupled head: per level a DPBlock stem, then DPBlock + 1x1 class and box branches.

    Anchor-free, no DFL: the box branch regresses (left, top, right, bottom) distances in grid units around
    each cell centre.

    Args:
        num_classes: number of classes.
        in_channels: channels of each input level.
        strides: stride of each input level in input pixels.
        kernel_size: depthwise kernel size of the DPBlocks.
        prior_prob: initial class probability the class bias is set to.

    Outputs:
        * eval ``forward(features)``: (B, N, 4 + C), xyxy boxes in input pixels then sigmoid class scores;
          N ordered level, row, column.
        * training ``forward(features)``: the official training output ``(stem_features, class_scores,
          box_distances)``: the per-level stem outputs (list), sigmoid scores (B, N, C) and raw distances (B, N, 4).
        * :meth:`forward_raw` (any mode): per-level class logits (B, C, H, W) and box distances (B, 4, H, W).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: tuple[int, ...],
        strides: tuple[int, ...],
        kernel_size: int = 5,
        prior_prob: float = 1e-2,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"got {len(in_channels)} input levels but {len(strides)} strides")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.prior_prob = prior_prob
        self.stems = nn.ModuleList()
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        for channels in in_channels:  # built level by level, in the official construction order
            self.stems.append(DPBlock(channels, channels, kernel_size))
            self.cls_convs.append(DPBlock(channels, channels, kernel_size))
            self.reg_convs.append(DPBlock(channels, channels, kernel_size))
            self.cls_preds.append(nn.Conv2d(channels, num_classes, 1))
            self.reg_preds.append(nn.Conv2d(channels, 4, 1))
        self.initialize_biases()

    def initialize_biases(self) -> None:
        """The official output-conv init: zero weights, class bias at ``prior_prob``, box bias 1."""
        with torch.no_grad():
            for conv in self.cls_preds:
                conv.weight.zero_()
                conv.bias.fill_(-math.log((1 - self.prior_prob) / self.prior_prob))
            for conv in self.reg_preds:
                conv.weight.zero_()
                conv.bias.fill_(1.0)

    def _forward_levels(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        stems, class_logits, box_distances = [], [], []
        for level, feature in enumerate(features):
            stem = self.stems[level](feature)
            stems.append(stem)
            class_logits.append(self.cls_preds[level](self.cls_convs[level](stem)))
            box_distances.append(self.reg_preds[level](self.reg_convs[level](stem)))
        return stems, class_logits, box_distances

    def forward_raw(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per-level class logits (B, C, H, W) (before the sigmoid) and box distances (B, 4, H, W) in grid units."""
        _, class_logits, box_distances = self._forward_levels(features)
        return class_logits, box_distances

    def forward(self, features: list[Tensor]) -> Tensor | tuple[list[Tensor], Tensor, Tensor]:
        stems, class_logits, box_distances = self._forward_levels(features)
        scores = torch.cat([flatten_spatial(logits) for logits in class_logits], 2).sigmoid()
        distances = torch.cat([flatten_spatial(distance) for distance in box_distances], 2)
        if self.training:
            return stems, scores.transpose(1, 2), distances.transpose(1, 2)
        return torch.cat((self.decode_boxes(distances, features), scores), 1).transpose(1, 2)

    def decode_boxes(self, distances: Tensor, features: list[Tensor]) -> Tensor:
        """(B, 4, N) xyxy boxes in input pixels from (B, 4, N) distances around the cell centres of ``features``."""
        sizes = [static_size(feature) for feature in features]
        points, point_strides = make_anchor_points(
            sizes, list(self.strides), 0.5, dtype=distances.dtype, device=distances.device
        )
        return decode_ltrb_channels(distances, points, point_strides)
