"""YOLOv6-Lite: the mobile YOLOv6 detectors (S, M, L), 4 detection levels (strides 8-64), 320x320 input.

Family paper: "YOLOv6 v3.0: A Full-Scale Reloading", Li et al., 2023 (https://arxiv.org/abs/2301.05586); the lite
models are documented in the reference implementation, https://github.com/meituan/YOLOv6 (``configs/yolov6_lite``,
``yolov6/models/yolo_lite.py``). Module and parameter names follow that implementation, so its state_dicts
(train form and, after :func:`~yolodeploy.reparameterize_model`, deploy form) load unchanged.

Example:
    >>> import torch
    >>> from yolodeploy import reparameterize_model
    >>> from yolodeploy.models import create_model
    >>> model = create_model("yolov6_lite_s").eval()
    >>> deploy = reparameterize_model(model)
    >>> predictions = deploy(torch.rand(1, 3, 320, 320))  # (1, 2125, 84): xyxy pixels, 80 class scores
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.layers import ConvBNHS
from ..core.lite import CSPBlock, DPBlock, LiteEffiBlockS1, LiteEffiBlockS2, LiteEffiDeHead
from ._base import ConfigMixin, Detector
from ._registry import register_model, register_model_class

__all__ = ["YOLOv6LiteConfig", "LiteEffiBackbone", "LiteEffiNeck", "YOLOv6Lite", "MODEL_CFGS", "make_divisible"]


@dataclass
class YOLOv6LiteConfig(ConfigMixin):
    """Architecture of one YOLOv6-Lite variant, in the terms of the official config files.

    Attributes:
        name: variant name.
        num_classes: number of object classes.
        width_multiple: channel multiplier applied to ``backbone_channels`` (rounded to multiples of 16).
        backbone_channels: base output channels of the stem and the four backbone stages; the stem always
            gets ``stem_channels`` (the official backbone overrides its first entry).
        backbone_repeats: blocks per backbone stage (the first of each stage downsamples).
        mid_ratio: channels of a stage's depthwise stage relative to its output (``scale_size``).
        stem_channels: output channels of the stem conv.
        neck_channels: channels of every neck and head level (``unified_channels``).
        kernel_size: depthwise kernel size of the neck's and head's DPBlocks.
        strides: stride of each detection level.
        input_size: (height, width) the released weights were trained and evaluated at.
        inference_mode: build the deploy form (BatchNorms of the Conv-BN units folded) directly.
    """

    name: str = "yolov6_lite_s"
    num_classes: int = 80
    width_multiple: float = 0.7
    backbone_channels: tuple[int, ...] = (24, 32, 64, 128, 256)
    backbone_repeats: tuple[int, ...] = (1, 3, 7, 3)
    mid_ratio: float = 0.5
    stem_channels: int = 24
    neck_channels: int = 96
    kernel_size: int = 5
    strides: tuple[int, ...] = (8, 16, 32, 64)
    input_size: tuple[int, int] = (320, 320)
    inference_mode: bool = False


def make_divisible(value: float, divisor: int = 16) -> int:
    """Round ``value`` to a multiple of ``divisor`` (at least ``divisor``), never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _cat(*tensors: Tensor) -> Tensor:
    return torch.cat(tensors, 1)


class LiteEffiBackbone(nn.Module):
    """Conv-BN-HS stem (stride 2) and four stages of efficient blocks; returns the stride 8, 16, 32 maps.

    Args:
        in_channels: image channels.
        mid_channels: depthwise-stage channels of stages 1-4.
        out_channels: output channels of the stem and stages 1-4.
        num_repeats: blocks per stage.
        inference_mode: build the deploy form directly.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: tuple[int, ...],
        out_channels: tuple[int, ...],
        num_repeats: tuple[int, ...],
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        if len(out_channels) != 5 or len(mid_channels) != 4 or len(num_repeats) != 4:
            raise ValueError("LiteEffiBackbone takes 5 out_channels (stem + 4 stages), 4 mid_channels, 4 repeats")
        self.conv_0 = ConvBNHS(in_channels, out_channels[0], 3, 2, padding=1, inference_mode=inference_mode)
        for stage in range(4):
            blocks = nn.Sequential()
            for index in range(num_repeats[stage]):
                block_type, stride = (LiteEffiBlockS2, 2) if index == 0 else (LiteEffiBlockS1, 1)
                block_in = out_channels[stage] if index == 0 else out_channels[stage + 1]
                blocks.add_module(
                    str(index),
                    block_type(block_in, mid_channels[stage], out_channels[stage + 1], stride, inference_mode),
                )
            self.add_module(f"lite_effiblock_{stage + 1}", blocks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p3 = self.lite_effiblock_2(self.lite_effiblock_1(self.conv_0(x)))
        p4 = self.lite_effiblock_3(p3)
        p5 = self.lite_effiblock_4(p4)
        return p3, p4, p5


class LiteEffiNeck(nn.Module):
    """PAN neck with CSP blocks plus an extra stride-64 level; returns [P3, P4, P5, P6], all ``channels`` wide.

    Args:
        in_channels: channels of the backbone's (P5, P4, P3) maps.
        channels: channels of every output level.
        kernel_size: depthwise kernel size of the CSP and downsampling blocks.
        inference_mode: build the deploy form directly.
    """

    def __init__(
        self, in_channels: tuple[int, int, int], channels: int, kernel_size: int = 5, inference_mode: bool = False
    ) -> None:
        super().__init__()
        deploy = {"inference_mode": inference_mode}
        self.reduce_layer0 = ConvBNHS(in_channels[0], channels, 1, padding=0, **deploy)
        self.reduce_layer1 = ConvBNHS(in_channels[1], channels, 1, padding=0, **deploy)
        self.reduce_layer2 = ConvBNHS(in_channels[2], channels, 1, padding=0, **deploy)
        self.upsample0 = nn.Upsample(scale_factor=2, mode="nearest")
        self.upsample1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.Csp_p4 = CSPBlock(2 * channels, channels, kernel_size, **deploy)
        self.Csp_p3 = CSPBlock(2 * channels, channels, kernel_size, **deploy)
        self.Csp_n3 = CSPBlock(2 * channels, channels, kernel_size, **deploy)
        self.Csp_n4 = CSPBlock(2 * channels, channels, kernel_size, **deploy)
        self.downsample2 = DPBlock(channels, channels, kernel_size, 2)
        self.downsample1 = DPBlock(channels, channels, kernel_size, 2)
        self.p6_conv_1 = DPBlock(channels, channels, kernel_size, 2)
        self.p6_conv_2 = DPBlock(channels, channels, kernel_size, 2)

    def forward(self, features: tuple[Tensor, Tensor, Tensor]) -> list[Tensor]:
        p3, p4, p5 = features
        top = self.reduce_layer0(p5)
        p4 = self.reduce_layer1(p4)
        p3 = self.reduce_layer2(p3)
        up_p4 = self.Csp_p4(_cat(self.upsample0(top), p4))
        out_p3 = self.Csp_p3(_cat(self.upsample1(up_p4), p3))
        out_p4 = self.Csp_n3(_cat(self.downsample2(out_p3), up_p4))
        out_p5 = self.Csp_n4(_cat(self.downsample1(out_p4), top))
        out_p6 = self.p6_conv_1(top) + self.p6_conv_2(out_p5)
        return [out_p3, out_p4, out_p5, out_p6]


@register_model_class
class YOLOv6Lite(Detector):
    """YOLOv6-Lite detector: :class:`LiteEffiBackbone` -> :class:`LiteEffiNeck` -> 4-level lite decoupled head.

    Submodules ``backbone``, ``neck`` and ``detect`` (also reachable as ``head``) carry the official names.

    Outputs:
        * eval ``model(x)``, x (B, 3, H, W) in [0, 1] with H, W multiples of 32: (B, N, 4 + C), xyxy boxes in
          input pixels, then sigmoid class scores; N = sum of ceil(H/s) * ceil(W/s) over the strides
          (8, 16, 32, 64), ordered level, row, column. (The official eval output is the same in centre-size
          form, with a constant 1 column in place of objectness.)
        * training ``model(x)``: the official head's training output ``(stem_features, class_scores,
          box_distances)``: per-level stem outputs (list), sigmoid scores (B, N, C) and raw (left, top, right,
          bottom) distances in grid units (B, N, 4). (The official model also returns the neck maps alongside;
          here they come from :meth:`forward_features`.)
        * raw per-level maps in any mode: ``model.head.forward_raw(model.forward_features(x))`` gives class
          logits (B, C, H/s, W/s) and box distances (B, 4, H/s, W/s).

    Args:
        config: the architecture.
        arch: registered name this instance was built as (default: ``config.name``).
    """

    config_class = YOLOv6LiteConfig

    def __init__(self, config: YOLOv6LiteConfig, arch: str | None = None) -> None:
        super().__init__(config, arch)
        if len(config.strides) != 4:
            raise ValueError(f"YOLOv6-Lite has 4 detection levels; got strides {config.strides}")
        out_channels = [make_divisible(c * config.width_multiple) for c in config.backbone_channels]
        mid_channels = tuple(make_divisible(int(c * config.mid_ratio), 8) for c in out_channels[1:])
        out_channels[0] = config.stem_channels
        deploy = {"inference_mode": config.inference_mode}
        self.backbone = LiteEffiBackbone(3, mid_channels, tuple(out_channels), config.backbone_repeats, **deploy)
        neck_in_channels = (out_channels[4], out_channels[3], out_channels[2])
        self.neck = LiteEffiNeck(neck_in_channels, config.neck_channels, config.kernel_size, **deploy)
        self.detect = LiteEffiDeHead(
            config.num_classes, (config.neck_channels,) * 4, tuple(config.strides), config.kernel_size
        )

    @property
    def head(self) -> LiteEffiDeHead:
        return self.detect

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The neck's [P3, P4, P5, P6] maps (strides 8-64) as fed to the head."""
        return self.neck(self.backbone(x))

    def forward(self, x: Tensor) -> Tensor | tuple[list[Tensor], Tensor, Tensor]:
        return self.detect(self.forward_features(x))

    def reparameterize(self) -> None:
        """Record the deploy form in the config (the blocks fold their own BatchNorms); idempotent."""
        if not self.config.inference_mode:
            self.config = dataclasses.replace(self.config, inference_mode=True)


_BASE = YOLOv6LiteConfig()

MODEL_CFGS: dict[str, YOLOv6LiteConfig] = {
    "yolov6_lite_s": dataclasses.replace(_BASE, name="yolov6_lite_s", width_multiple=0.7),
    "yolov6_lite_m": dataclasses.replace(_BASE, name="yolov6_lite_m", width_multiple=1.1),
    "yolov6_lite_l": dataclasses.replace(_BASE, name="yolov6_lite_l", width_multiple=1.5),
}
# The official *_finetune configs differ from their base configs only in training hyper-parameters.
MODEL_CFGS.update(
    {f"{name}_finetune": dataclasses.replace(cfg, name=f"{name}_finetune") for name, cfg in list(MODEL_CFGS.items())}
)


def _create_yolov6_lite(variant: str, **kwargs) -> YOLOv6Lite:
    """Build ``variant`` from ``MODEL_CFGS``; ``kwargs`` replace config fields (e.g. ``num_classes``)."""
    config = MODEL_CFGS[variant]
    valid = {field.name for field in dataclasses.fields(config)}
    unknown = set(kwargs) - valid
    if unknown:
        raise ValueError(f"{variant}: unknown config fields {sorted(unknown)}; valid fields: {sorted(valid)}")
    return YOLOv6Lite(dataclasses.replace(config, **kwargs), arch=variant)


@register_model
def yolov6_lite_s(**kwargs) -> YOLOv6Lite:
    """YOLOv6Lite-S (0.55 M parameters, 320x320)."""
    return _create_yolov6_lite("yolov6_lite_s", **kwargs)


@register_model
def yolov6_lite_m(**kwargs) -> YOLOv6Lite:
    """YOLOv6Lite-M (0.79 M parameters, 320x320)."""
    return _create_yolov6_lite("yolov6_lite_m", **kwargs)


@register_model
def yolov6_lite_l(**kwargs) -> YOLOv6Lite:
    """YOLOv6Lite-L (1.09 M parameters, 320x320)."""
    return _create_yolov6_lite("yolov6_lite_l", **kwargs)


@register_model
def yolov6_lite_s_finetune(**kwargs) -> YOLOv6Lite:
    """YOLOv6Lite-S as built by the official fine-tuning config (same architecture)."""
    return _create_yolov6_lite("yolov6_lite_s_finetune", **kwargs)


@register_model
def yolov6_lite_m_finetune(**kwargs) -> YOLOv6Lite:
    """YOLOv6Lite-M as built by the official fine-tuning config (same architecture)."""
    return _create_yolov6_lite("yolov6_lite_m_finetune", **kwargs)


@register_model
def yolov6_lite_l_finetune(**kwargs) -> YOLOv6Lite:
    """YOLOv6Lite-L as built by the official fine-tuning config (same architecture)."""
    return _create_yolov6_lite("yolov6_lite_l_finetune", **kwargs)
