"""The training run's configuration: one JSON-able dataclass, stored in every state file for ``--resume``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .optim import OptimConfig

__all__ = ["TrainConfig"]


@dataclass(kw_only=True)
class TrainConfig:
    """What to train, on what, and how (defaults: the YOLOv6 recipe).

    ``data`` is a COCO-format dataset root (``images/<split>`` + ``annotations/instances_<split>.json``); training
    reads ``train_split`` and evaluates ``val_split`` after every ``eval_interval`` epochs (skipped when absent).
    ``head`` selects a YOLOv6 training head variant (``fuse_ab``, ``distill_ns``; default: the model's own).
    ``augment`` holds :class:`~yolodeploy.core.data.augment.AugmentConfig` fields (missing ones take defaults);
    mosaic is switched off for the last ``close_mosaic`` epochs. ``stop_after`` ends this invocation after that
    many epochs with a resumable state (training in chunks; ``--resume`` continues).
    """

    model: str
    data: str
    head: str | None = None
    epochs: int = 100
    img_size: int = 640
    batch_size: int = 16
    device: str = "cpu"
    workers: int = 2
    output: str = "runs/train"
    seed: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: dict[str, Any] = field(default_factory=dict)
    close_mosaic: int = 15
    border: int = 0
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    amp: bool = True
    eval_interval: int = 1
    eval_batch: int = 16
    train_split: str = "train"
    val_split: str = "val"
    loss: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    teacher: str | None = None
    distill: dict[str, Any] = field(default_factory=dict)
    repopt_scales: str | None = None
    stop_after: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.img_size > 0 and self.img_size % 32 == 0, f"--img must be a multiple of 32, got {self.img_size}"),
            (self.batch_size >= 1, f"--batch must be >= 1, got {self.batch_size}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (self.close_mosaic >= 0, f"--close-mosaic must be >= 0, got {self.close_mosaic}"),
            (self.eval_interval >= 1, f"eval_interval must be >= 1, got {self.eval_interval}"),
            (self.stop_after is None or self.stop_after >= 1, f"--stop-after must be >= 1, got {self.stop_after}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training config fields {sorted(unknown)}")
        return cls(**data)
