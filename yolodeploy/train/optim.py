"""SGD with grouped weight decay, the warm-up + cosine schedule, and gradient accumulation arithmetic.

Follows the YOLOv6 recipe (``yolov6/solver/build.py`` and ``yolov6/core/engine.py`` of github.com/meituan/YOLOv6):
three parameter groups (BN weights without decay, other weights with decay, biases without decay), weight decay
scaled by ``batch * accumulate / nominal_batch``, a linear warm-up of at least ``min_warmup_steps`` steps (biases from
``warmup_bias_lr`` down, the rest from 0 up; momentum from ``warmup_momentum`` up) and a per-epoch cosine decay to
``lr0 * lrf``. The learning rate is a pure function of (step, epoch), so a resumed run follows the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "OptimConfig",
    "param_groups",
    "build_sgd",
    "scaled_weight_decay",
    "cosine_factor",
    "apply_schedule",
    "accumulation_steps",
]

_BIAS_GROUP = 2


@dataclass
class OptimConfig:
    """Optimizer and schedule hyper-parameters (YOLOv6 defaults)."""

    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    min_warmup_steps: int = 1000
    nominal_batch: int = 64


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``[BN weights (no decay), other weights (decay), biases (no decay)]``; frozen parameters are left out."""
    bn_weights, weights, biases = [], [], []
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter) and bias.requires_grad:
            biases.append(bias)
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.requires_grad:
            (bn_weights if isinstance(module, nn.modules.batchnorm._NormBase) else weights).append(weight)
    seen = {id(p) for p in bn_weights + weights + biases}
    weights += [p for p in model.parameters() if p.requires_grad and id(p) not in seen]  # e.g. implicit layers
    return [
        {"params": bn_weights, "weight_decay": 0.0},
        {"params": weights, "weight_decay": weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]


def accumulation_steps(batch_size: int, world_size: int, nominal_batch: int) -> int:
    """Micro-batches per optimizer step so that one step sees about ``nominal_batch`` images."""
    return max(round(nominal_batch / (batch_size * world_size)), 1)


def scaled_weight_decay(config: OptimConfig, batch_size: int, accumulate: int) -> float:
    """Weight decay scaled to the images one optimizer step sees, relative to the nominal batch."""
    return config.weight_decay * batch_size * accumulate / config.nominal_batch


def build_sgd(model: nn.Module, config: OptimConfig, batch_size: int, accumulate: int) -> torch.optim.SGD:
    """Nesterov SGD over :func:`param_groups`, weight decay scaled to the effective batch."""
    groups = param_groups(model, scaled_weight_decay(config, batch_size, accumulate))
    optimizer = torch.optim.SGD(groups, lr=config.lr0, momentum=config.momentum, nesterov=True)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr0
    return optimizer


def cosine_factor(epoch: float, epochs: int, lrf: float) -> float:
    """The one-cycle cosine multiplier: 1 at epoch 0, ``lrf`` at ``epochs``."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


def warmup_steps(config: OptimConfig, steps_per_epoch: int) -> int:
    return max(round(config.warmup_epochs * steps_per_epoch), config.min_warmup_steps) if config.warmup_epochs else 0


def apply_schedule(
    optimizer: torch.optim.Optimizer, config: OptimConfig, step: int, epoch: int, epochs: int, steps_per_epoch: int
) -> float:
    """Set every group's lr (and momentum during warm-up) for iteration ``step``; return the main group's lr."""
    target = cosine_factor(epoch, epochs, config.lrf)
    warmup = warmup_steps(config, steps_per_epoch)
    for index, group in enumerate(optimizer.param_groups):
        lr = group["initial_lr"] * target
        if step < warmup:
            start = config.warmup_bias_lr if index == _BIAS_GROUP else 0.0
            lr = float(np.interp(step, [0, warmup], [start, lr]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(step, [0, warmup], [config.warmup_momentum, config.momentum]))
        elif "momentum" in group:
            group["momentum"] = config.momentum
        group["lr"] = lr
    return optimizer.param_groups[min(1, len(optimizer.param_groups) - 1)]["lr"]
