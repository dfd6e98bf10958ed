"""Knowledge distillation: YOLOv6 self-distillation and feature distillation (for QAT).

* Self-distillation (YOLOv6 v3.0, arXiv:2301.05586 §2.4.2; YOLOv6 v1 §3.5): the student's class scores and DFL
  box distributions follow a pre-trained teacher through temperature-softened KL divergences whose weight decays
  with a cosine schedule. Rules from github.com/meituan/YOLOv6 (commit e86a483),
  ``yolov6/models/losses/loss_distill.py`` / ``loss_distill_ns.py`` and ``yolov6/core/engine.py``.
* Channel-wise distillation (Shu et al., ICCV 2021), used by YOLOv6's QAT recipe, and a plain MSE feature loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.heads import DFL_BINS

__all__ = [
    "SelfDistillationLoss",
    "channel_wise_distillation",
    "distillation_weight",
    "mse_feature_distillation",
    "teacher_forward",
    "FINAL_DISTILLATION_WEIGHT",
]

FINAL_DISTILLATION_WEIGHT = 0.01  # the official cosine schedule ends at 0.01, not 0


def teacher_forward(teacher: nn.Module, images: Tensor):
    """The teacher's training-form outputs ``(head_outputs, features)`` without changing the teacher.

    The model runs in train mode (so the head emits scores and distributions rather than decoded boxes) with every
    BatchNorm in eval mode (running statistics used, never updated), under ``torch.no_grad``; the modules' mode
    flags are restored afterwards. (The official engine instead sets ``track_running_stats=False`` on the
    teacher's BatchNorms, which normalizes with batch statistics; running statistics are the teacher as trained.)

    Args:
        teacher: a model whose train-mode forward returns the training outputs.
        images: the student's input batch.

    Returns:
        The teacher's train-mode output.

    Example:
        >>> teacher_output = teacher_forward(teacher, images)
        >>> loss, parts = SelfDistillationLoss(num_classes=80)(model(images), teacher_output, epoch, epochs)
    """
    modes = {module: module.training for module in teacher.modules()}
    try:
        teacher.train()
        for module in teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        with torch.no_grad():
            return teacher(images)
    finally:
        for module, training in modes.items():
            module.training = training


def distillation_weight(epoch: float, epochs: int, final: float = FINAL_DISTILLATION_WEIGHT) -> float:
    """The official cosine decay of the distillation terms: 1 at epoch 0 down to ``final`` (0.01) at ``epochs``.

    ``1 + (final - 1) * (1 - cos(pi * epoch / epochs)) / 2``, as ``distill_weightdecay`` in the official losses.

    Example:
        >>> [round(distillation_weight(epoch, 100), 6) for epoch in (0, 50, 100)]
        [1.0, 0.505, 0.01]
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    progress = (1.0 - math.cos(math.pi * epoch / epochs)) / 2.0
    return 1.0 + (final - 1.0) * progress


def _scores_and_distribution(output, role: str) -> tuple[Tensor, Tensor]:
    """(class_scores, box_distribution) of a YOLOv6 train-mode output, for any of the three head variants."""
    head_outputs = output[0] if isinstance(output, tuple) and len(output) == 2 else output
    if not isinstance(head_outputs, (tuple, list)) or len(head_outputs) not in (3, 4, 5):
        raise ValueError(f"{role} output is not a YOLOv6 train-mode output ((head_outputs, features))")
    if len(head_outputs) == 5:  # fuse_ab: (stems, cls_ab, box_ab, cls, box_distribution)
        return head_outputs[3], head_outputs[4]
    return head_outputs[1], head_outputs[2]  # default / distill_ns: (stems, cls, box_distribution, ...)


def _kl_rows(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the row-wise softmax at ``temperature``, per row."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(-1)


class SelfDistillationLoss(nn.Module):
    """YOLOv6 self-distillation: KL on class scores and on DFL box distributions, weighted by the decayed alpha.

    Terms, as the official code computes them (``T`` the temperature):

    * class: the (sigmoid) class scores of each anchor are softened by ``softmax(p / T)`` over the classes;
      ``T**2 * sum KL(teacher || student)`` over every anchor and image (summed, not averaged, as the official).
    * box: each side's 17 bin logits by ``softmax(z / T)``; ``T**2 * mean KL`` over the sides of the
      foreground anchors (``fg_mask``, from the ground-truth assignment; every anchor if ``None``; zero if empty).
    * ``total = alpha * (cls_loss_weight * class_weight * class + dfl_loss_weight * dfl_weight * box)`` with
      ``alpha = distillation_weight(epoch, epochs)``: the official adds the terms to the ground-truth class and
      DFL losses before their weights (1.0, 0.5), so those weights apply to the distillation terms too.
    * optional ``feature_weight`` (official 10 with ``--distill_feat``): CWD between the neck features.

    Args:
        num_classes: number of classes.
        temperature: softening temperature (official default 20).
        class_weight: ``distill_weight['class']`` (official configs: 1.0 for N/S, 0.8 for M, 2.0 for L).
        dfl_weight: ``distill_weight['dfl']`` (official 1.0).
        reg_max: the distribution has ``4 * (reg_max + 1)`` channels (official 16).
        cls_loss_weight: the ground-truth class loss weight (1.0).
        dfl_loss_weight: the ground-truth DFL loss weight (0.5).
        feature_weight: weight of the channel-wise feature distillation (0 = off).

    ``forward(student_output, teacher_output, epoch, epochs, fg_mask=None)`` takes both models' train-mode outputs
    and returns ``(total, parts)``; ``parts`` holds the detached ``distill_cls``, ``distill_dfl``,
    ``distill_feature`` terms (before alpha) and ``alpha``.

    Raises:
        ValueError: (in forward) if the teacher's or student's outputs do not match in shape or have no DFL.

    Example:
        >>> distill = SelfDistillationLoss(num_classes=80)
        >>> result = objective(model(images), targets, epoch)
        >>> kd, parts = distill(student_output, teacher_forward(teacher, images), epoch, epochs, result.fg_mask)
        >>> (result.total + kd).backward()
    """

    def __init__(
        self,
        num_classes: int,
        *,
        temperature: float = 20.0,
        class_weight: float = 1.0,
        dfl_weight: float = 1.0,
        reg_max: int = DFL_BINS - 1,
        cls_loss_weight: float = 1.0,
        dfl_loss_weight: float = 0.5,
        feature_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.num_classes, self.temperature, self.bins = num_classes, float(temperature), reg_max + 1
        self.class_weight, self.dfl_weight, self.feature_weight = class_weight, dfl_weight, feature_weight
        self.cls_loss_weight, self.dfl_loss_weight = cls_loss_weight, dfl_loss_weight

    def forward(
        self, student_output, teacher_output, epoch: float, epochs: int, fg_mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        scores, distribution = _scores_and_distribution(student_output, "student")
        teacher_scores, teacher_distribution = _scores_and_distribution(teacher_output, "teacher")
        self._check(scores, distribution, teacher_scores, teacher_distribution)
        temperature = self.temperature
        class_term = _kl_rows(scores, teacher_scores.detach(), temperature).sum() * temperature**2
        box_term = self._box_term(distribution, teacher_distribution.detach(), fg_mask)
        feature_term = class_term.new_zeros(())
        if self.feature_weight:
            feature_term = channel_wise_distillation(student_output[1], teacher_output[1])
        alpha = distillation_weight(epoch, epochs)
        total = alpha * (
            self.cls_loss_weight * self.class_weight * class_term
            + self.dfl_loss_weight * self.dfl_weight * box_term
            + self.feature_weight * feature_term
        )
        parts = {
            "distill_cls": class_term.detach(),
            "distill_dfl": box_term.detach(),
            "distill_feature": feature_term.detach(),
            "alpha": torch.tensor(alpha),
        }
        return total, parts

    def _box_term(self, distribution: Tensor, teacher_distribution: Tensor, fg_mask: Tensor | None) -> Tensor:
        if fg_mask is not None:
            fg_mask = fg_mask.bool()
            if not fg_mask.any():
                return distribution.sum() * 0.0
            distribution, teacher_distribution = distribution[fg_mask], teacher_distribution[fg_mask]
        rows = _kl_rows(
            distribution.reshape(-1, self.bins), teacher_distribution.reshape(-1, self.bins), self.temperature
        )
        return rows.mean() * self.temperature**2

    def _check(self, scores: Tensor, distribution: Tensor, teacher_scores: Tensor, teacher_distribution: Tensor):
        if scores.shape[-1] != self.num_classes:
            raise ValueError(f"student has {scores.shape[-1]} classes, the loss was built for {self.num_classes}")
        if scores.shape != teacher_scores.shape:
            raise ValueError(
                f"student class scores {tuple(scores.shape)} and teacher's {tuple(teacher_scores.shape)} differ: "
                "teacher and student need the same classes, input size and strides"
            )
        for role, box in (("student", distribution), ("teacher", teacher_distribution)):
            if box.shape[-1] != 4 * self.bins:
                raise ValueError(
                    f"{role} box output has {box.shape[-1]} channels, expected {4 * self.bins} "
                    f"(DFL with reg_max {self.bins - 1}); build the model with use_dfl=True, reg_max=16"
                )
        if distribution.shape != teacher_distribution.shape:
            raise ValueError(
                f"box distributions differ: {tuple(distribution.shape)} vs {tuple(teacher_distribution.shape)}"
            )


def _check_feature_pairs(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> None:
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"need matching non-empty feature lists, got {len(student_feats)} and {len(teacher_feats)}")
    for level, (student, teacher) in enumerate(zip(student_feats, teacher_feats)):
        if student.shape != teacher.shape:
            raise ValueError(
                f"level {level}: student map {tuple(student.shape)} and teacher map {tuple(teacher.shape)} differ "
                "(add a 1x1 adapter conv when the widths differ)"
            )


def channel_wise_distillation(
    student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], tau: float = 1.0
) -> Tensor:
    """Channel-wise distillation (CWD, Shu et al. ICCV 2021), as ``distill_loss_cw`` of the official losses.

    Each channel's map is turned into a spatial distribution ``softmax(x / tau)`` over its H*W positions;
    the loss is ``tau**2 * KL(teacher || student)`` averaged over channels and images, summed over levels. The
    teacher maps are detached.

    Args:
        student_feats: per-level (N, C, H, W) student maps.
        teacher_feats: teacher maps of the same shapes.
        tau: the temperature.

    Returns:
        The scalar loss.

    Raises:
        ValueError: if the lists' lengths or the maps' shapes differ.

    Example:
        >>> channel_wise_distillation([torch.zeros(1, 1, 2, 1)], [torch.tensor([[[[0.0], [math.log(3)]]]])])
        tensor(0.1308)
    """
    _check_feature_pairs(student_feats, teacher_feats)
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for student, teacher in zip(student_feats, teacher_feats):
        batch, channels = student.shape[:2]
        rows = _kl_rows(student.reshape(batch, channels, -1), teacher.detach().reshape(batch, channels, -1), tau)
        total = total + rows.sum() * tau**2 / (batch * channels)
    return total


def mse_feature_distillation(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
    """Label-free feature distillation: mean squared error of each level's maps, summed over levels.

    Raises:
        ValueError: if the lists' lengths or the maps' shapes differ.

    Example:
        >>> mse_feature_distillation([torch.zeros(1, 1, 2, 2)], [torch.ones(1, 1, 2, 2)])
        tensor(1.)
    """
    _check_feature_pairs(student_feats, teacher_feats)
    return sum(F.mse_loss(s.float(), t.detach().float()) for s, t in zip(student_feats, teacher_feats))
