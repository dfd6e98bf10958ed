"""Portable checkpoint format: round trip, fp16, atomic writes, and clear errors on bad input."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from yolodeploy import reparameterize_model
from yolodeploy.errors import ArchitectureMismatchError, CheckpointError, UnknownModelError
from yolodeploy.models import create_model, load_checkpoint, save_checkpoint
from yolodeploy.models.checkpoint import read_metadata

IMG = 128


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("yolov6n", num_classes=3).eval()


def _outputs(model, seed=0):
    x = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_round_trip_train_form_is_exact(small_model, tmp_path):
    path = save_checkpoint(small_model, tmp_path / "m.safetensors", class_names=["a", "b", "c"], note="hi")
    loaded = load_checkpoint(path)
    assert type(loaded) is type(small_model) and loaded.arch == "yolov6n" and loaded.num_classes == 3
    assert loaded.class_names == ["a", "b", "c"] and loaded.form == "train"
    torch.testing.assert_close(_outputs(loaded), _outputs(small_model), atol=0, rtol=0)
    meta = read_metadata(path)
    assert meta["user"] == {"note": "hi"} and meta["form"] == "train" and meta["num_classes"] == 3


def test_round_trip_deploy_form(small_model, tmp_path):
    deploy = reparameterize_model(small_model)
    path = save_checkpoint(deploy, tmp_path / "d.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.form == "deploy"
    assert list(loaded.state_dict()) == list(deploy.state_dict())
    torch.testing.assert_close(_outputs(loaded), _outputs(deploy), atol=0, rtol=0)


def test_half_storage_halves_size_and_loads_as_float(small_model, tmp_path):
    full = save_checkpoint(small_model, tmp_path / "f.safetensors")
    half = save_checkpoint(small_model, tmp_path / "h.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert all(t.dtype != torch.float16 for t in loaded.state_dict().values())
    torch.testing.assert_close(_outputs(loaded), _outputs(small_model), atol=5e-2, rtol=5e-2)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(create_model("yolov6n", num_classes=1), tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file(small_model, tmp_path):
    path = save_checkpoint(small_model, tmp_path / "t.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "tiny").write_bytes(data[:4])
    with pytest.raises(CheckpointError, match="truncated|empty"):
        load_checkpoint(tmp_path / "tiny")


@pytest.mark.parametrize("content", [b"hello world, not weights", b"\x89PNG\r\n\x1a\n" + b"\0" * 64])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "junk.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(path)


def test_safetensors_without_our_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without yolodeploy metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")


def _rewrite_metadata(path, out, edit):
    """Copy a checkpoint with its JSON metadata edited (same tensors)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["yolodeploy"])
    edit(meta)
    header["__metadata__"]["yolodeploy"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return out


def test_unknown_architecture_class(small_model, tmp_path):
    path = save_checkpoint(small_model, tmp_path / "m.safetensors")
    bad = _rewrite_metadata(path, tmp_path / "bad.safetensors", lambda m: m.update(model_class="YOLOv99"))
    with pytest.raises(UnknownModelError, match="unknown model class 'YOLOv99'"):
        load_checkpoint(bad)


def test_wrong_num_classes_in_metadata(small_model, tmp_path):
    path = save_checkpoint(small_model, tmp_path / "m.safetensors")
    bad = _rewrite_metadata(path, tmp_path / "bad.safetensors", lambda m: m["config"].update(num_classes=80))
    with pytest.raises(ArchitectureMismatchError, match="wrong shape"):
        load_checkpoint(bad)


def test_create_model_errors():
    with pytest.raises(UnknownModelError, match="did you mean"):
        create_model("yolov6nn")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("yolov6n", num_classes=0)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (struct.pack("<Q", 0x80) + b'{"a"', "safetensors"),  # a header length whose first byte looks like pickle
        (struct.pack("<Q", 0x5280) + b'{"a"', "safetensors"),
        (b"PK\x03\x04" + b"\0" * 8, "pickle"),
    ],
)
def test_format_sniffing(tmp_path, head, kind):
    from yolodeploy.models.checkpoint import sniff_format

    path = tmp_path / "f"
    path.write_bytes(head)
    assert sniff_format(path) == kind
