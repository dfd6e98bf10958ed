"""Model registry: variant entrypoints by name, and model classes by name (for checkpoint loading).

A variant entrypoint is a small function ``yolov6n(**kwargs) -> nn.Module`` decorated with
``@register_model``. Model classes that can be rebuilt from a checkpoint's JSON config are registered with
``@register_model_class``: loading a checkpoint looks the class up by name here (a whitelist), it never
imports or executes anything named by the file.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

from torch import nn

from ..errors import ConfigError, UnknownModelError

__all__ = [
    "canonical_name",
    "register_model",
    "register_model_class",
    "create_model",
    "list_models",
    "is_model",
    "get_model_class",
]

_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_MODEL_FAMILY: dict[str, str] = {}
_MODEL_CLASSES: dict[str, type[nn.Module]] = {}
_FAMILY_MODULES = ("yolov6", "yolov6_lite", "yolov7", "yolov9")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a variant entrypoint under its function name."""
    name = fn.__name__
    if name in _MODEL_ENTRYPOINTS:
        raise ValueError(f"model {name!r} registered twice")
    _MODEL_ENTRYPOINTS[name] = fn
    _MODEL_FAMILY[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def register_model_class(cls: type[nn.Module]) -> type[nn.Module]:
    """Register a model class that checkpoints may name (it must offer ``from_config(dict)``)."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def get_model_class(name: str) -> type[nn.Module]:
    _ensure_loaded()
    try:
        return _MODEL_CLASSES[name]
    except KeyError:
        raise UnknownModelError(f"unknown model class {name!r}; known: {', '.join(sorted(_MODEL_CLASSES))}") from None


def _ensure_loaded() -> None:
    """Import the family modules so their entrypoints register (kept lazy: importing torch models is slow)."""
    import importlib

    for family in _FAMILY_MODULES:
        importlib.import_module(f"{__package__}.{family}")


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (case-insensitive), sorted.

    Example:
        >>> list_models("yolov6n*")[:2]
        ['yolov6n', 'yolov6n6']
    """
    _ensure_loaded()
    pattern = pattern.lower()
    return sorted(
        name
        for name in _MODEL_ENTRYPOINTS
        if fnmatch.fnmatchcase(name.lower(), pattern) and (family is None or _MODEL_FAMILY[name] == family)
    )


def canonical_name(name: str) -> str:
    """Registry spelling of a model name: the official hyphenated names (``yolov7-tiny``) use underscores."""
    return name.strip().replace("-", "_")


def is_model(name: str) -> bool:
    _ensure_loaded()
    return canonical_name(name) in _MODEL_ENTRYPOINTS


def model_family(name: str) -> str:
    _ensure_loaded()
    return _MODEL_FAMILY[canonical_name(name)]


def create_model(name: str, num_classes: int = 80, **overrides) -> nn.Module:
    """Build a registered model in its training form (random init).

    Args:
        name: a name from ``list_models()``, e.g. ``"yolov6n"`` (hyphens work too: ``"yolov7-tiny"``).
        num_classes: number of object classes of the detection head.
        **overrides: config fields to replace, e.g. ``head="distill_ns"``.

    Raises:
        UnknownModelError: the name is not registered (the message suggests close names).

    Example:
        >>> model = create_model("yolov6n", num_classes=3)
    """
    _ensure_loaded()
    name = canonical_name(name)
    if name not in _MODEL_ENTRYPOINTS:
        close = difflib.get_close_matches(name, list(_MODEL_ENTRYPOINTS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `yolodeploy models` to list them"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    return _MODEL_ENTRYPOINTS[name](num_classes=num_classes, **overrides)
