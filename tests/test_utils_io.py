from __future__ import annotations

import pytest

from yolodeploy.utils.io import atomic_path, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        target = tmp_path / "model.onnx"
        atomic_write_text(target, "x")
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o644
