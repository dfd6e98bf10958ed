"""String enums for options with a fixed set of values: ``parse`` turns a bad value into a one-line ConfigError."""

from __future__ import annotations

import re
from enum import Enum

from ..errors import ConfigError

__all__ = ["Choice"]


class Choice(str, Enum):
    """A ``str`` Enum whose ``parse`` accepts a member or its value (case-insensitive).

    Messages name the option after the class (``QdqFlavour`` -> "qdq flavour") unless ``label`` is overridden;
    ``extra_choices`` lists other spellings the caller handles itself (e.g. "all"), for the message only.

    Example:
        >>> class QdqFlavour(Choice):
        ...     TRT = "trt"
        >>> QdqFlavour.parse("TRT")
        <QdqFlavour.TRT: 'trt'>
    """

    @classmethod
    def extra_choices(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def label(cls) -> str:
        return re.sub(r"(?<!^)(?=[A-Z][a-z])", " ", cls.__name__).lower()

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            valid = ", ".join([m.value for m in cls] + list(cls.extra_choices()))
            raise ConfigError(f"unknown {cls.label()} {value!r}; choose one of: {valid}") from None
