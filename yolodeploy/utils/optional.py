"""Lazy imports of the optional runtimes (onnxruntime, openvino, tensorrt) with one-line install hints.

``import yolodeploy`` must work without them, so each backend imports its library only when asked, through
:func:`import_optional`, and answers ``is_available`` / ``get_version`` with :func:`importable` /
:func:`version_of` on that importer.

Example:
    >>> def import_openvino():
    ...     return import_optional("openvino", "OpenVINO is not importable ({error}): pip install openvino")
    >>> importable(import_openvino), version_of(import_openvino, lambda ov: ov.get_version())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..errors import BackendUnavailableError

__all__ = ["import_optional", "importable", "version_of"]


def import_optional(module: str, message: str, catch: tuple[type[BaseException], ...] = (ImportError,)) -> ModuleType:
    """``import module``, or ``BackendUnavailableError(message)``; ``{error}`` in ``message`` is the import error.

    ``catch`` widens what counts as "not there" (TensorRT's wheel raises ``OSError`` without its shared libraries).
    """
    try:
        return importlib.import_module(module)
    except catch as exc:
        raise BackendUnavailableError(message.format(error=exc)) from None


def importable(importer: Callable[[], Any]) -> bool:
    """Whether ``importer()`` succeeds (it raises ``BackendUnavailableError`` when the library is missing)."""
    try:
        importer()
    except BackendUnavailableError:
        return False
    return True


def _dunder_version(module: Any) -> str:
    return module.__version__


def version_of(importer: Callable[[], Any], read: Callable[[Any], str] = _dunder_version) -> str | None:
    """``read(importer())`` (default: the module's ``__version__``), or None when the library is missing."""
    try:
        return read(importer())
    except BackendUnavailableError:
        return None
