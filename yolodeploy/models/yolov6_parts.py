"""YOLOv6 backbone and neck builders (used by :mod:`.yolov6`).

One backbone class covers the official EfficientRep, EfficientRep6, CSPBepBackbone and CSPBepBackbone_P6
(they differ only in the stage block, the number of levels and the SPPF layer), and one neck class covers
RepPANNeck(6), RepBiFPANNeck(6), CSPRepPANNeck(_P6) and CSPRepBiFPANNeck(_P6) (stage block, number of
levels, and transposed-conv upsampling vs. BiFusion). Module names and registration order reproduce the
official ones (github.com/meituan/YOLOv6, commit e86a483), so the state_dicts are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..core.layers import ConvBNReLU
from ..core.layers_csp import BiFusion, Transpose

__all__ = ["EfficientRep", "RepPANNeck"]

StageFactory = Callable[[int, int, int], nn.Module]  # stage(in_channels, out_channels, depth)


class EfficientRep(nn.Module):
    """EfficientRep / CSPBep backbone: a stride-2 ``stem``, then ``ERBlock_2`` ... ``ERBlock_{L}``.

    Each ``ERBlock_k`` is a stride-2 basic block followed by a stage block; the last one ends with an SPPF
    layer. The forward returns the outputs of ``ERBlock_3`` onward (and of ``ERBlock_2`` first if ``emit_p2``,
    which BiFPAN necks need).

    Args:
        in_channels: image channels.
        channels: output channels of the stem and of every ERBlock (5 for P5 models, 6 for P6).
        repeats: stage depth per entry of ``channels`` (the first one, the stem's, is unused).
        block: basic block class (from the training mode).
        stage: ``stage(in_channels, out_channels, depth)`` builds one stage block.
        sppf: SPPF layer class, called as ``sppf(in_channels, out_channels, kernel_size)``.
        emit_p2: also return the stride-4 feature map.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        repeats: Sequence[int],
        block: Callable[..., nn.Module],
        stage: StageFactory,
        sppf: Callable[..., nn.Module],
        emit_p2: bool,
    ) -> None:
        super().__init__()
        self.emit_p2 = emit_p2
        self.stem = block(in_channels, channels[0], 3, 2)
        for level in range(1, len(channels)):
            layers = [
                block(channels[level - 1], channels[level], 3, 2),
                stage(channels[level], channels[level], repeats[level]),
            ]
            if level == len(channels) - 1:
                layers.append(sppf(channels[level], channels[level], 5))
            self.add_module(f"ERBlock_{level + 1}", nn.Sequential(*layers))
        self.num_stages = len(channels) - 1

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outputs = []
        for level in range(2, self.num_stages + 2):
            x = getattr(self, f"ERBlock_{level}")(x)
            if level > 2 or self.emit_p2:
                outputs.append(x)
        return outputs


def _bottom_up_channels(channels: Sequence[int], levels: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Output channels of the bottom-up downsample convs and stage blocks.

    The official neck channel lists mean different things for 3 and 4 levels:
    P5 necks list ``[reduce0, reduce1, downsample2, Rep_n3, downsample1, Rep_n4]``; P6 necks list
    ``[reduce0, reduce1, reduce2, Rep_n4, Rep_n5, Rep_n6]`` and each downsample keeps its input width.
    """
    if levels == 3:
        return (channels[2], channels[4]), (channels[3], channels[5])
    stage_out = tuple(channels[levels - 1 : 2 * levels - 1])
    return (channels[levels - 2],) + stage_out[:-1], stage_out


class RepPANNeck(nn.Module):
    """Rep-PAN / Rep-BiFPAN neck with 3 (P3-P5) or 4 (P3-P6) output levels.

    Top-down, level by level: ``reduce_layer{i}`` (1x1 conv), then either ``upsample{i}`` (transposed conv)
    concatenated with the same-level backbone map, or ``Bifusion{i}`` (which also takes the next lower
    level), then the stage block ``Rep_p*``. Bottom-up: ``downsample*`` (3x3 stride-2 conv) concatenated with
    the matching ``reduce_layer`` output, then ``Rep_n*``.

    Args:
        backbone_channels: the backbone's channel list (stem first), 5 or 6 entries.
        channels: the official neck channel list (6 entries, see :func:`_bottom_up_channels`).
        repeats: stage depth per stage block, top-down ones first (4 or 6 entries).
        stage: ``stage(in_channels, out_channels, depth)`` builds one stage block.
        bifusion: BiFPAN (BiFusion, needs the backbone's P2 map) instead of plain PAN.
    """

    def __init__(
        self,
        backbone_channels: Sequence[int],
        channels: Sequence[int],
        repeats: Sequence[int],
        stage: StageFactory,
        bifusion: bool,
    ) -> None:
        super().__init__()
        levels = len(backbone_channels) - 2
        self.levels, self.bifusion = levels, bifusion
        modules: dict[str, nn.Module] = {}
        width = backbone_channels[-1]
        for i in range(levels - 1):
            same, lower = backbone_channels[-2 - i], backbone_channels[-3 - i]
            modules[f"reduce_layer{i}"] = ConvBNReLU(width, channels[i], 1, 1)
            if bifusion:
                modules[f"Bifusion{i}"] = BiFusion((same, lower), channels[i])
            else:
                modules[f"upsample{i}"] = Transpose(channels[i], channels[i])
            fused_width = channels[i] if bifusion else channels[i] + same
            modules[f"Rep_p{levels + 1 - i}"] = stage(fused_width, channels[i], repeats[i])
            width = channels[i]
        down_out, stage_out = _bottom_up_channels(channels, levels)
        for j in range(levels - 1):
            modules[f"downsample{2 - j}"] = ConvBNReLU(width, down_out[j], 3, 2)
            lateral = channels[levels - 2 - j]
            modules[f"Rep_n{levels + j}"] = stage(down_out[j] + lateral, stage_out[j], repeats[levels - 1 + j])
            width = stage_out[j]
        if levels == 3 and not bifusion:  # the official P5 PAN necks register their stage blocks first
            modules = dict(sorted(modules.items(), key=lambda item: not item[0].startswith("Rep_")))
        for name, module in modules.items():
            self.add_module(name, module)
        self.out_channels = (channels[levels - 2],) + stage_out

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        laterals, x = [], features[-1]
        for i in range(self.levels - 1):
            lateral = getattr(self, f"reduce_layer{i}")(x)
            laterals.append(lateral)
            if self.bifusion:
                fused = getattr(self, f"Bifusion{i}")((lateral, features[-2 - i], features[-3 - i]))
            else:
                fused = torch.cat((getattr(self, f"upsample{i}")(lateral), features[-2 - i]), 1)
            x = getattr(self, f"Rep_p{self.levels + 1 - i}")(fused)
        outputs = [x]
        for j in range(self.levels - 1):
            down = getattr(self, f"downsample{2 - j}")(x)
            x = getattr(self, f"Rep_n{self.levels + j}")(torch.cat((down, laterals[-1 - j]), 1))
            outputs.append(x)
        return outputs
