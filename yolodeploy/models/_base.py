"""What every detector in the zoo shares: config round-trip and the output contract.

Output contract (DESIGN.md): in eval mode ``forward(x)`` takes (B, 3, H, W) RGB in [0, 1] and returns
(B, N, 4 + C): boxes as xyxy in input pixels, then per-class scores in [0, 1] (sigmoid applied, no
objectness). ``forward_features(x)`` returns the neck feature maps fed to the head; in training mode
``forward`` returns the raw head outputs the losses need (documented per family).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = ["Detector", "ConfigMixin"]


class ConfigMixin:
    """``to_dict``/``from_dict`` for (nested) config dataclasses; tuples survive the JSON round trip."""

    version: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        data = dict(data)
        data.pop("version", None)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config fields {sorted(unknown)}")
        return cls(**{name: _restore(fields[name].type, value) for name, value in data.items()})


def _restore(annotation: Any, value: Any) -> Any:
    """JSON turns tuples into lists; config fields are declared as tuples, so turn them back (recursively)."""
    if isinstance(value, list):
        return tuple(_restore(None, v) for v in value)
    if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, ConfigMixin):
        return annotation.from_dict(value)
    return value


class Detector(nn.Module):
    """Base class of the zoo's detectors.

    Subclasses set ``config_class`` and build themselves from one config dataclass instance, so that a
    checkpoint's JSON config alone rebuilds the architecture (``from_config``).
    """

    config_class: ClassVar[type] = None  # type: ignore[assignment]

    def __init__(self, config: Any, arch: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.arch = arch or getattr(config, "name", type(self).__name__)
        self.form = "train"  # set to "deploy" by reparameterize_model
        self.class_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.config.strides)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config.input_size)

    @classmethod
    def from_config(cls, config: dict[str, Any] | Any, arch: str | None = None) -> Detector:
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        return cls(config, arch=arch)

    def forward_features(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
