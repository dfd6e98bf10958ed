"""YOLOv6 (v1-v3, incl. QARepVGG, RepOpt, MBLA and P6 variants), state_dict-compatible with the official code.

Papers: "YOLOv6: A Single-Stage Object Detection Framework for Industrial Applications" (arXiv:2209.02976),
"YOLOv6 v3.0: A Full-Scale Reloading" (arXiv:2301.05586). Reference: https://github.com/meituan/YOLOv6
(commit e86a483). Every model name is the stem of an official config file; weights of the official models
load with ``load_state_dict(strict=True)``, and :func:`yolodeploy.reparameterize_model` produces exactly the
official deploy layout (BN folded into every Conv-BN, RepVGG branches merged; QARepVGG keeps its post-BN).

Example:
    >>> from yolodeploy import reparameterize_model
    >>> from yolodeploy.models import create_model
    >>> model = create_model("yolov6n").eval()
    >>> deploy = reparameterize_model(model)
    >>> predictions = deploy(torch.rand(1, 3, 640, 640))  # (1, 8400, 84): xyxy pixels + 80 scores
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from torch import Tensor, nn

from ..core.heads import HEAD_VARIANTS, EffiDeHead
from ..core.layers import TRAINING_MODE_BLOCKS, get_block
from ..core.layers_csp import SPPF_LAYERS, BepC3, MBLABlock, RepBlock
from ._base import ConfigMixin, Detector
from ._registry import register_model, register_model_class
from .yolov6_parts import EfficientRep, RepPANNeck

__all__ = ["YOLOv6Config", "YOLOv6", "MODEL_CFGS"]

STAGE_BLOCKS = ("RepBlock", "BepC3", "MBLABlock")
NECKS = ("RepPAN", "RepBiFPAN")
_COCO_ANCHORS = ((10, 13, 19, 19, 33, 23), (30, 61, 59, 59, 59, 119), (116, 90, 185, 185, 373, 326))


@dataclass
class YOLOv6Config(ConfigMixin):
    """Architecture of one YOLOv6 variant: the data of an official config file.

    Attributes:
        depth_multiple: scales stage depths (``max(round(n * d), 1)`` for n > 1).
        width_multiple: scales channels (rounded up to a multiple of 8).
        training_mode: official basic-block choice, a key of ``TRAINING_MODE_BLOCKS``.
        stage_block: ``"RepBlock"`` (EfficientRep / RepPAN), ``"BepC3"`` (CSPBep / CSPRepPAN) or ``"MBLABlock"``.
        csp_e: hidden-channel ratio of BepC3 / MBLABlock stages.
        neck: ``"RepBiFPAN"`` (BiFusion; the backbone then also emits P2) or ``"RepPAN"``.
        sppf: the backbone's last layer: ``"SimSPPF"``, ``"SPPF"``, ``"SimCSPSPPF"`` or ``"CSPSPPF"``.
        backbone_repeats, backbone_channels: official backbone lists (5 entries, or 6 for P6 models).
        neck_repeats, neck_channels: official neck lists (4 / 6 repeats, 6 channels).
        use_dfl: decode boxes with DFL (needs ``reg_max`` 16).
        reg_max: the box branch emits ``4 * (reg_max + 1)`` channels.
        head: head variant, one of ``HEAD_VARIANTS`` (``"fuse_ab"``, ``"distill_ns"``: training heads).
        anchors_init: anchor sizes (pixels) per level, used only by the ``fuse_ab`` head.
        num_classes: number of classes.
        strides: stride of each output level.
        input_size: the (height, width) the official model is trained at.
    """

    depth_multiple: float = 0.33
    width_multiple: float = 0.25
    training_mode: str = "repvgg"
    stage_block: str = "RepBlock"
    csp_e: float = 0.5
    neck: str = "RepBiFPAN"
    sppf: str = "SimCSPSPPF"
    backbone_repeats: tuple[int, ...] = (1, 6, 12, 18, 6)
    backbone_channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    neck_repeats: tuple[int, ...] = (12, 12, 12, 12)
    neck_channels: tuple[int, ...] = (256, 128, 128, 256, 256, 512)
    use_dfl: bool = False
    reg_max: int = 0
    head: str = "default"
    anchors_init: tuple[tuple[int, ...], ...] = _COCO_ANCHORS
    num_classes: int = 80
    strides: tuple[int, ...] = (8, 16, 32)
    input_size: tuple[int, int] = (640, 640)

    def __post_init__(self) -> None:
        choices = {
            "training_mode": tuple(TRAINING_MODE_BLOCKS),
            "stage_block": STAGE_BLOCKS,
            "neck": NECKS,
            "sppf": tuple(SPPF_LAYERS),
            "head": HEAD_VARIANTS,
        }
        for field, valid in choices.items():
            if getattr(self, field) not in valid:
                raise ValueError(f"YOLOv6Config.{field}={getattr(self, field)!r}; expected one of {', '.join(valid)}")
        levels = len(self.backbone_channels) - 2
        if levels not in (3, 4) or len(self.strides) != levels or len(self.backbone_repeats) != levels + 2:
            raise ValueError("YOLOv6Config: 5 (P5) or 6 (P6) backbone entries with one stride per output level")
        if len(self.neck_repeats) != 2 * (levels - 1) or len(self.neck_channels) != 6:
            raise ValueError(f"YOLOv6Config: a {levels}-level neck needs {2 * (levels - 1)} repeats and 6 channels")
        if self.num_classes < 1:
            raise ValueError(f"YOLOv6Config.num_classes must be positive, got {self.num_classes}")


def _scale_repeats(repeats: tuple[int, ...], depth_multiple: float) -> tuple[int, ...]:
    return tuple(max(round(n * depth_multiple), 1) if n > 1 else n for n in repeats)


def _scale_channels(channels: tuple[int, ...], width_multiple: float) -> tuple[int, ...]:
    return tuple(math.ceil(c * width_multiple / 8) * 8 for c in channels)


def _stage_factory(config: YOLOv6Config, block: type[nn.Module]):
    """``stage(in_channels, out_channels, depth)`` for the configured stage block."""
    if config.stage_block == "RepBlock":
        return functools.partial(RepBlock, block=block)
    stage_class = BepC3 if config.stage_block == "BepC3" else MBLABlock
    return functools.partial(stage_class, e=config.csp_e, block=block)


@register_model_class
class YOLOv6(Detector):
    """YOLOv6 detector: ``backbone`` -> ``neck`` -> ``detect`` (the official attribute names).

    Forward, eval mode: (B, N, 4 + C), boxes xyxy in input pixels then sigmoid class scores; N anchor points
    ordered level, row, column. Forward, training mode: ``(head_outputs, features)`` like the official model:
    ``features`` the neck maps, ``head_outputs`` as documented in :meth:`EffiDeHead.forward_train`
    (``(stem_features, class_scores, box_distribution)`` for the default head). Raw per-level maps in eval
    mode: ``model.head.forward_raw(model.forward_features(x))``.

    Args:
        config: the architecture.
        arch: the registered variant name (for reporting and checkpoints).
    """

    config_class = YOLOv6Config

    def __init__(self, config: YOLOv6Config, arch: str | None = None) -> None:
        super().__init__(config, arch)
        block = get_block(config.training_mode)
        stage = _stage_factory(config, block)
        backbone_channels = _scale_channels(config.backbone_channels, config.width_multiple)
        neck_channels = _scale_channels(config.neck_channels, config.width_multiple)
        bifusion = config.neck == "RepBiFPAN"
        self.backbone = EfficientRep(
            3,
            backbone_channels,
            _scale_repeats(config.backbone_repeats, config.depth_multiple),
            block,
            stage,
            SPPF_LAYERS[config.sppf],
            emit_p2=bifusion,
        )
        neck_repeats = _scale_repeats(config.neck_repeats, config.depth_multiple)
        self.neck = RepPANNeck(backbone_channels, neck_channels, neck_repeats, stage, bifusion)
        self.detect = EffiDeHead(
            self.neck.out_channels,
            config.num_classes,
            config.strides,
            use_dfl=config.use_dfl,
            reg_max=config.reg_max,
            variant=config.head,
            anchors_init=config.anchors_init,
        )

    @property
    def head(self) -> EffiDeHead:
        """The detection head (stored as ``detect``, the official name)."""
        return self.detect

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The neck outputs (P3, P4, P5[, P6]) that the head consumes."""
        return self.neck(self.backbone(x))

    def forward(self, x: Tensor):
        features = self.forward_features(x)
        if self.training:
            return self.detect(features), features
        return self.detect(features)


def _p6(**kwargs) -> dict:
    """Fields shared by the official P6 configs."""
    return {
        "backbone_repeats": (1, 6, 12, 18, 6, 6),
        "backbone_channels": (64, 128, 256, 512, 768, 1024),
        "neck_repeats": (12,) * 6,
        "neck_channels": (512, 256, 128, 256, 512, 1024),
        "strides": (8, 16, 32, 64),
        "input_size": (1280, 1280),
        **kwargs,
    }


_DFL = {"use_dfl": True, "reg_max": 16}
_CSP_M = {"stage_block": "BepC3", "csp_e": 2 / 3, "sppf": "SimSPPF", **_DFL}
_CSP_L = {"training_mode": "conv_silu", "stage_block": "BepC3", "sppf": "SPPF", **_DFL}
_BASE = {"training_mode": "conv_relu", "stage_block": "BepC3", "sppf": "SimSPPF", **_DFL}
_MBLA = {
    "training_mode": "conv_silu",
    "stage_block": "MBLABlock",
    "sppf": "SPPF",
    "backbone_repeats": (1, 4, 8, 8, 4),
    "neck_repeats": (8, 8, 8, 8),
    **_DFL,
}
_PAN = {"neck": "RepPAN", "sppf": "SimSPPF"}


def _cfg(depth: float, width: float, **kwargs) -> YOLOv6Config:
    return YOLOv6Config(depth_multiple=depth, width_multiple=width, **kwargs)


# One entry per official config file; a *_finetune config is architecturally identical to its base config
# except where noted (the n/s base finetune configs switch DFL off).
MODEL_CFGS: dict[str, YOLOv6Config] = {
    "yolov6n": _cfg(0.33, 0.25),
    "yolov6s": _cfg(0.33, 0.50),
    "yolov6m": _cfg(0.60, 0.75, **_CSP_M),
    "yolov6l": _cfg(1.0, 1.0, **_CSP_L),
    "yolov6n6": _cfg(0.33, 0.25, **_p6()),
    "yolov6s6": _cfg(0.33, 0.50, **_p6()),
    "yolov6m6": _cfg(0.60, 0.75, **_p6(**_CSP_M)),
    "yolov6l6": _cfg(1.0, 1.0, **_p6(**_CSP_L)),
    "yolov6n_base": _cfg(0.33, 0.25, training_mode="conv_relu", **_DFL),
    "yolov6n_base_finetune": _cfg(0.33, 0.25, training_mode="conv_relu"),
    "yolov6s_base": _cfg(0.70, 0.50, **{**_BASE, "sppf": "SimCSPSPPF"}),
    "yolov6s_base_finetune": _cfg(0.70, 0.50, **{**_BASE, "sppf": "SimCSPSPPF", "use_dfl": False, "reg_max": 0}),
    "yolov6m_base": _cfg(0.80, 0.75, **_BASE),
    "yolov6l_base": _cfg(1.0, 1.0, **_BASE),
    "yolov6n_qa": _cfg(0.33, 0.25, training_mode="qarepvggv2"),
    "yolov6s_qa": _cfg(0.33, 0.50, training_mode="qarepvggv2"),
    "yolov6m_qa": _cfg(0.60, 0.75, training_mode="qarepvggv2", **_CSP_M),
    "yolov6s_mbla": _cfg(0.5, 0.50, **_MBLA),
    "yolov6m_mbla": _cfg(0.5, 0.75, **_MBLA),
    "yolov6l_mbla": _cfg(0.5, 1.0, **_MBLA),
    "yolov6x_mbla": _cfg(1.0, 1.0, **_MBLA),
    "yolov6n_hs": _cfg(0.33, 0.25, training_mode="hyper_search", **_PAN),
    "yolov6n_opt": _cfg(0.33, 0.25, training_mode="repopt", **_PAN),
    "yolov6s_hs": _cfg(0.33, 0.50, training_mode="hyper_search", **_PAN),
    "yolov6s_opt": _cfg(0.33, 0.50, training_mode="repopt", **_PAN),
    "yolov6_tiny_hs": _cfg(0.33, 0.375, training_mode="hyper_search", **_PAN),
    "yolov6_tiny_opt": _cfg(0.33, 0.375, training_mode="repopt", **_PAN),
    "yolov6t": _cfg(0.33, 0.375, **_PAN),
    "yolov6n_with_eval_params": _cfg(0.33, 0.25, **_PAN),
    "yolov6s_csp_scaled": _cfg(0.70, 0.50, stage_block="BepC3", **_PAN),
    "yolov6t_csp_scaled": _cfg(0.60, 0.50, stage_block="BepC3", **_PAN),
}
_SAME_AS = {  # configs that only change training hyper-parameters (or QAT settings) of another one
    **{f"{name}_finetune": name for name in ("yolov6n", "yolov6s", "yolov6m", "yolov6l", "yolov6t")},
    **{f"{name}_finetune": name for name in ("yolov6n6", "yolov6s6", "yolov6m6", "yolov6l6")},
    **{f"{name}_finetune": name for name in ("yolov6m_base", "yolov6l_base")},
    **{f"yolov6{size}_mbla_finetune": f"yolov6{size}_mbla" for size in "smlx"},
    **{f"{name}_opt_qat": f"{name}_opt" for name in ("yolov6n", "yolov6s", "yolov6_tiny")},
}
MODEL_CFGS.update({name: MODEL_CFGS[base] for name, base in _SAME_AS.items()})


def _create_yolov6(variant: str, **kwargs) -> YOLOv6:
    """Build ``variant`` with config overrides; the training heads switch DFL on (reg_max 16) like the official
    recipes do, unless ``use_dfl``/``reg_max`` are given explicitly."""
    if kwargs.get("head", "default") != "default":
        kwargs = {**_DFL, **kwargs}
    return YOLOv6(dataclasses.replace(MODEL_CFGS[variant], **kwargs), arch=variant)


@register_model
def yolov6n(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n", **kwargs)


@register_model
def yolov6n_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_finetune", **kwargs)


@register_model
def yolov6s(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s", **kwargs)


@register_model
def yolov6s_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_finetune", **kwargs)


@register_model
def yolov6m(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m", **kwargs)


@register_model
def yolov6m_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m_finetune", **kwargs)


@register_model
def yolov6l(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l", **kwargs)


@register_model
def yolov6l_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l_finetune", **kwargs)


@register_model
def yolov6n6(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n6", **kwargs)


@register_model
def yolov6n6_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n6_finetune", **kwargs)


@register_model
def yolov6s6(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s6", **kwargs)


@register_model
def yolov6s6_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s6_finetune", **kwargs)


@register_model
def yolov6m6(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m6", **kwargs)


@register_model
def yolov6m6_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m6_finetune", **kwargs)


@register_model
def yolov6l6(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l6", **kwargs)


@register_model
def yolov6l6_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l6_finetune", **kwargs)


@register_model
def yolov6n_base(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_base", **kwargs)


@register_model
def yolov6n_base_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_base_finetune", **kwargs)


@register_model
def yolov6s_base(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_base", **kwargs)


@register_model
def yolov6s_base_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_base_finetune", **kwargs)


@register_model
def yolov6m_base(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m_base", **kwargs)


@register_model
def yolov6m_base_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m_base_finetune", **kwargs)


@register_model
def yolov6l_base(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l_base", **kwargs)


@register_model
def yolov6l_base_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l_base_finetune", **kwargs)


@register_model
def yolov6n_qa(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_qa", **kwargs)


@register_model
def yolov6s_qa(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_qa", **kwargs)


@register_model
def yolov6m_qa(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m_qa", **kwargs)


@register_model
def yolov6s_mbla(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_mbla", **kwargs)


@register_model
def yolov6s_mbla_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_mbla_finetune", **kwargs)


@register_model
def yolov6m_mbla(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m_mbla", **kwargs)


@register_model
def yolov6m_mbla_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6m_mbla_finetune", **kwargs)


@register_model
def yolov6l_mbla(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l_mbla", **kwargs)


@register_model
def yolov6l_mbla_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6l_mbla_finetune", **kwargs)


@register_model
def yolov6x_mbla(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6x_mbla", **kwargs)


@register_model
def yolov6x_mbla_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6x_mbla_finetune", **kwargs)


@register_model
def yolov6n_hs(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_hs", **kwargs)


@register_model
def yolov6n_opt(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_opt", **kwargs)


@register_model
def yolov6n_opt_qat(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_opt_qat", **kwargs)


@register_model
def yolov6s_hs(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_hs", **kwargs)


@register_model
def yolov6s_opt(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_opt", **kwargs)


@register_model
def yolov6s_opt_qat(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_opt_qat", **kwargs)


@register_model
def yolov6_tiny_hs(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6_tiny_hs", **kwargs)


@register_model
def yolov6_tiny_opt(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6_tiny_opt", **kwargs)


@register_model
def yolov6_tiny_opt_qat(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6_tiny_opt_qat", **kwargs)


@register_model
def yolov6t(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6t", **kwargs)


@register_model
def yolov6t_finetune(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6t_finetune", **kwargs)


@register_model
def yolov6n_with_eval_params(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6n_with_eval_params", **kwargs)


@register_model
def yolov6s_csp_scaled(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6s_csp_scaled", **kwargs)


@register_model
def yolov6t_csp_scaled(**kwargs) -> YOLOv6:
    return _create_yolov6("yolov6t_csp_scaled", **kwargs)
