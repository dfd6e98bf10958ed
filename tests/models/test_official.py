"""Safe import of official checkpoints: fidelity against the oracle, and refusal of crafted pickles."""

from __future__ import annotations

import contextlib
import os
import sys
import types

import pytest
import torch
from conftest import reference_dir

from yolodeploy.core.boxes import cxcywh_to_xyxy
from yolodeploy.errors import ArchitectureMismatchError, CheckpointError, UnsafeCheckpointError
from yolodeploy.models import load_checkpoint
from yolodeploy.models.official import read_official_checkpoint


def _official_pred_to_ours(pred: torch.Tensor) -> torch.Tensor:
    """Official YOLOv6 eval output (cx, cy, w, h, 1, scores...) -> ours (x1, y1, x2, y2, scores...)."""
    return torch.cat((cxcywh_to_xyxy(pred[..., :4]), pred[..., 5:]), -1)


def test_yolov6n_official_checkpoint_matches_oracle():
    ref = reference_dir("yolov6", "yolov6n")
    model = load_checkpoint(ref / "official_checkpoint.pt")
    assert model.arch == "yolov6n" and model.num_classes == 80 and model.form == "train"
    assert model.class_names[0] == "person"
    x = torch.load(ref / "input.pt", weights_only=True)["input"]
    expected = _official_pred_to_ours(torch.load(ref / "outputs_train.pt", weights_only=True)["pred"])
    with torch.no_grad():
        out = model(x)
    # The fixture weights are fp16-exact, so the fp16 checkpoint reproduces the fp32 oracle closely.
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=1e-3)


def test_official_checkpoint_weights_equal_reference_state_dict():
    ref = reference_dir("yolov6", "yolov6n")
    model = load_checkpoint(ref / "official_checkpoint.pt")
    expected = torch.load(ref / "state_dict.pt", weights_only=True)
    got = model.state_dict()
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        torch.testing.assert_close(got[key], tensor, atol=0, rtol=0, check_dtype=False)


@contextlib.contextmanager
def _official_module(cls: type, module_name: str = "yolov6.models.yolo"):
    """Make ``cls`` picklable as if it were the official ``module_name.<cls name>`` (then forget it)."""
    parts = module_name.split(".")
    added = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    cls.__module__, cls.__qualname__ = module_name, cls.__name__
    setattr(sys.modules[module_name], cls.__name__, cls)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_payload_nested_inside_a_model_record_is_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            self.payload = _Payload(marker)

    with _official_module(Model):
        torch.save({"model": Model()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        read_official_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_plain_pickle_is_refused(tmp_path):
    import pickle

    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"model": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="plain pickle"):
        load_checkpoint(path)


def test_unknown_official_architecture(tmp_path):

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            self.nc = 4

    with _official_module(Model):
        torch.save({"model": Model().half(), "ema": None}, tmp_path / "odd.pt")
    with pytest.raises(ArchitectureMismatchError, match="match no registered model"):
        load_checkpoint(tmp_path / "odd.pt")


def test_bare_state_dict_is_explained(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(tmp_path / "sd.pt")


@pytest.mark.parametrize(
    ("name", "overrides", "deploy"),
    [("yolov6n", {"head": "distill_ns"}, False), ("yolov6s", {}, True), ("yolov6_lite_s", {}, False)],
)
def test_architecture_recovery_from_keys_and_shapes(name, overrides, deploy):
    from yolodeploy import reparameterize_model
    from yolodeploy.models import create_model
    from yolodeploy.models.official import OfficialRecord, _record_class, match_architecture

    with torch.device("meta"):
        model = create_model(name, num_classes=7, **overrides)
        if deploy:
            model = reparameterize_model(model, inplace=True)
    module = "yolov6.models.yolo_lite" if "lite" in name else "yolov6.models.yolo"
    root: OfficialRecord = _record_class(f"{module}.Model")()
    assert match_architecture(root, model.state_dict(), 7, source="test") == (name, overrides, deploy)


def test_saved_forms_cover_weights_fused_in_place_with_auxiliary_branch():
    """An official yolov9-X saved after Model.fuse() keeps its auxiliary branch: the importer must find that form."""
    from yolodeploy import reparameterize_model
    from yolodeploy.models import create_model
    from yolodeploy.models.official import _fits, _saved_forms

    with torch.device("meta"):
        model = create_model("yolov9-t").eval()
        fused_in_place = reparameterize_model(model.model)  # blocks fused, auxiliary branch kept
        forms = list(_saved_forms(model))
    state_dict = {f"model.{k}": v for k, v in fused_in_place.state_dict().items()}
    assert [_fits(form, state_dict) for form in forms] == [False, True, False]
