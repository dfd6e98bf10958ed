"""utils.optional: the lazy import of an optional runtime and its one-line install hint."""

from __future__ import annotations

import sys
import types

import pytest

from yolodeploy.errors import BackendUnavailableError
from yolodeploy.utils.optional import import_optional, importable, version_of


def _importer():
    return import_optional("yolodeploy_absent_runtime", "Absent is not importable ({error}): pip install absent")


def test_missing_module_gives_the_hint_and_none():
    with pytest.raises(
        BackendUnavailableError, match=r"^Absent is not importable \(No module named .*pip install absent$"
    ):
        _importer()
    assert importable(_importer) is False
    assert version_of(_importer) is None


def test_present_module_and_custom_version_reader(monkeypatch):
    fake = types.SimpleNamespace(__version__="1.2.3", get_version=lambda: "2026.4")
    monkeypatch.setitem(sys.modules, "yolodeploy_absent_runtime", fake)
    assert _importer() is fake and importable(_importer)
    assert version_of(_importer) == "1.2.3"
    assert version_of(_importer, lambda module: module.get_version()) == "2026.4"


def test_catch_widens_what_counts_as_missing(monkeypatch):
    def broken():
        raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr("importlib.import_module", lambda name: broken())
    with pytest.raises(BackendUnavailableError, match="^TensorRT missing$"):
        import_optional("tensorrt", "TensorRT missing", catch=(ImportError, OSError))
    with pytest.raises(OSError):
        import_optional("tensorrt", "TensorRT missing")
