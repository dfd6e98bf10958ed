"""Training objectives per model family: a head's training outputs -> :class:`~.loss.DensePredictions` -> loss.

``build_objective(model)`` picks the objective from the model: the YOLOv6 efficient decoupled head (default
variant; the ``fuse_ab`` and ``distill_ns`` variants register their own), the YOLOv9 heads (every branch with
:meth:`LossSpec.yolov9`; PGI's auxiliary branch weighted 0.25 as in the reference ``loss_tal_dual.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from .loss import DenseDetectionLoss, DensePredictions, LossOutput, LossSpec

__all__ = ["Objective", "build_objective", "register_objective", "yolov6_predictions", "yolov9_predictions"]

AUXILIARY_WEIGHT = 0.25

_BUILDERS: dict[str, Callable[..., Objective]] = {}


class Objective(nn.Module):
    """``objective(model_output, targets, epoch) -> LossOutput`` for one model."""

    def forward(self, output, targets: Tensor, epoch: int = 0) -> LossOutput:  # pragma: no cover - interface
        raise NotImplementedError


def register_objective(key: str) -> Callable:
    """Register a builder ``(model, **options) -> Objective`` under a head key (see :func:`objective_key`)."""

    def decorator(builder: Callable[..., Objective]) -> Callable[..., Objective]:
        _BUILDERS[key] = builder
        return builder

    return decorator


def objective_key(model: nn.Module) -> str:
    """``"yolov6:<head variant>"`` or ``"yolov9"``; other models have no training objective yet."""
    head = getattr(model, "head", None)
    family = type(model).__name__.lower()
    if family == "yolov6":
        return f"yolov6:{head.variant}"
    if family == "yolov9":
        return "yolov9"
    raise ValueError(f"no training objective for {type(model).__name__}; trainable families: YOLOv6, YOLOv9")


def build_objective(model: nn.Module, **options) -> Objective:
    """The objective for ``model`` (options: ``iou_kind``, ``warmup_epochs``, ... fields of :class:`LossSpec`)."""
    key = objective_key(model)
    if key not in _BUILDERS:
        raise ValueError(f"no training objective registered for {key}; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[key](model, **options)


def yolov6_predictions(head_outputs: Sequence, model: nn.Module) -> DensePredictions:
    """DensePredictions of the default YOLOv6 head's ``(stems, class_scores, box_distribution)``."""
    stems, scores, box = head_outputs[0], head_outputs[1], head_outputs[2]
    sizes = [tuple(stem.shape[-2:]) for stem in stems]
    return DensePredictions(scores, box, sizes, list(model.strides[: len(sizes)]))


def yolov9_predictions(levels: Sequence[Tensor], head: nn.Module) -> DensePredictions:
    """DensePredictions of one YOLOv9 head branch: per-level (B, 4 * 16 + C, H, W) pre-activation maps."""
    box_channels = 4 * head.reg_max
    flat = [level.flatten(2) for level in levels]
    import torch

    merged = torch.cat(flat, 2).transpose(1, 2)  # (B, A, 64 + C)
    box, scores = merged.split((box_channels, merged.shape[-1] - box_channels), -1)
    sizes = [tuple(level.shape[-2:]) for level in levels]
    return DensePredictions(scores, box, sizes, list(head.strides[: len(sizes)]), scores_are_logits=True)


def _spec(base: LossSpec, options: dict) -> LossSpec:
    for name, value in options.items():
        if not hasattr(base, name):
            raise ValueError(f"unknown loss option {name!r}")
        setattr(base, name, value)
    return base


class YOLOv6Objective(Objective):
    """The default (anchor-free) YOLOv6 head: VFL + GIoU (or SIoU) + DFL when the head uses DFL."""

    def __init__(self, model: nn.Module, **options) -> None:
        super().__init__()
        head = model.head
        spec = _spec(LossSpec(dfl_bins=head.reg_max + 1 if head.use_dfl else 0), options)
        self.strides = list(model.strides)
        self.loss = DenseDetectionLoss(model.num_classes, spec)

    def predictions(self, output) -> DensePredictions:
        head_outputs = output[0] if isinstance(output, tuple) and len(output) == 2 else output
        stems, scores, box = head_outputs[0], head_outputs[1], head_outputs[2]
        sizes = [tuple(stem.shape[-2:]) for stem in stems]
        return DensePredictions(scores, box, sizes, self.strides[: len(sizes)])

    def forward(self, output, targets: Tensor, epoch: int = 0) -> LossOutput:
        return self.loss(self.predictions(output), targets, epoch)


class YOLOv9Objective(Objective):
    """Every head branch with YOLOv9's loss; the auxiliary branches (all but the last) weighted 0.25."""

    def __init__(self, model: nn.Module, auxiliary_weight: float = AUXILIARY_WEIGHT, **options) -> None:
        super().__init__()
        self.head = model.head
        self.auxiliary_weight = auxiliary_weight
        self.loss = DenseDetectionLoss(model.num_classes, _spec(LossSpec.yolov9(), options))

    def forward(self, output, targets: Tensor, epoch: int = 0) -> LossOutput:
        branches = output if self.head.num_branches > 1 else [output]
        results = [self.loss(yolov9_predictions(levels, self.head), targets, epoch) for levels in branches]
        weights = [self.auxiliary_weight] * (len(results) - 1) + [1.0]
        total = sum(w * r.total for w, r in zip(weights, results))
        parts = {name: sum(w * r.parts[name] for w, r in zip(weights, results)) for name in results[-1].parts}
        main = results[-1]
        return LossOutput(total, parts, main.fg_mask, main.target_scores_sum)


register_objective("yolov6:default")(YOLOv6Objective)
register_objective("yolov9")(YOLOv9Objective)
from . import objective_heads  # noqa: E402,F401  (registers yolov6:fuse_ab and yolov6:distill_ns)
