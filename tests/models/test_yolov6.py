"""YOLOv6 zoo: official state_dict layouts, the numerical oracle, exact re-parameterization, output contract."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    REFERENCE,
    load_manifest,
    max_rel_error,
    randomize_bn_,
    randomize_constants_,
    reference_dir,
    reference_models,
    state_dict_manifest,
)

from yolodeploy import reparameterize_model
from yolodeploy.core.boxes import cxcywh_to_xyxy, make_anchor_points
from yolodeploy.models import create_model, list_models
from yolodeploy.models._registry import get_model_class
from yolodeploy.models.yolov6 import MODEL_CFGS, YOLOv6, YOLOv6Config

REFERENCE_MODELS = [name for name in reference_models("yolov6") if not name.startswith("yolov6_lite")]
# the official training-head variants have their own manifests next to the plain ones
HEAD_VARIANTS = {"": {}, "_fuse_ab": {"head": "fuse_ab"}, "_distill_ns": {"head": "distill_ns"}}
LAYOUT_CASES = [
    pytest.param(name, suffix, id=f"{name}{suffix}")
    for name in REFERENCE_MODELS
    for suffix in HEAD_VARIANTS
    if (REFERENCE / "yolov6" / name / f"manifest_train{suffix}.json").is_file()
]


def _randomized(name: str, seed: int = 0, **kwargs) -> YOLOv6:
    torch.manual_seed(seed)
    return randomize_constants_(randomize_bn_(create_model(name, **kwargs), seed), seed).eval()


def _official_to_ours(pred: torch.Tensor) -> torch.Tensor:
    """Official (B, N, 85) = cx, cy, w, h, constant 1, 80 scores -> ours (B, N, 84) = x1, y1, x2, y2, scores."""
    return torch.cat((cxcywh_to_xyxy(pred[..., :4]), pred[..., 5:]), -1)


def test_every_reference_model_is_registered():
    registered = set(list_models(family="yolov6"))
    assert set(REFERENCE_MODELS) <= registered, sorted(set(REFERENCE_MODELS) - registered)
    assert registered == set(MODEL_CFGS)


@pytest.mark.parametrize(("name", "suffix"), LAYOUT_CASES)
def test_state_dict_layout_matches_official(name, suffix):
    """Keys, shapes, dtypes and order equal the official model's, before and after re-parameterization.

    Built on the meta device: no memory and no init cost, so even the biggest configs are checked as they are.
    """
    folder = reference_dir("yolov6", name)
    with torch.device("meta"):
        model = create_model(name, **HEAD_VARIANTS[suffix])
        assert state_dict_manifest(model) == _expected(folder / f"manifest_train{suffix}.json")
        deploy = reparameterize_model(model.eval(), inplace=True)
    assert state_dict_manifest(deploy) == _expected(folder / f"manifest_deploy{suffix}.json")


def _expected(path) -> list:
    return [(key, list(shape), dtype) for key, shape, dtype in load_manifest(path)]


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_yolov6n_matches_official_outputs(form):
    folder = reference_dir("yolov6", "yolov6n")
    model = create_model("yolov6n")
    model.load_state_dict(torch.load(folder / "state_dict.pt", weights_only=True), strict=True)
    model.eval()
    if form == "deploy":
        model = reparameterize_model(model)
    image = torch.load(folder / "input.pt", weights_only=True)["input"]
    reference = torch.load(folder / f"outputs_{form}.pt", weights_only=True)
    with torch.no_grad():
        pred, features = model(image), model.forward_features(image)
    # boxes are up to ~250 px: 1e-4 absolute is ~4 float32 ulps there (observed: 1.5e-5 train, 3.1e-5 deploy,
    # the latter being the official deploy model's own float noise, which we reproduce rather than remove)
    torch.testing.assert_close(pred, _official_to_ours(reference["pred"]), atol=1e-4, rtol=0)
    assert len(features) == 3
    for index, feature in enumerate(features):
        torch.testing.assert_close(feature, reference[f"featmap.{index}"], atol=1e-5, rtol=0)


DEPLOY_CASES = [pytest.param(name, {}, id=name) for name in list_models(family="yolov6")] + [
    pytest.param(name, {"head": head}, id=f"{name}-{head}")
    for name, head in (("yolov6n", "fuse_ab"), ("yolov6n", "distill_ns"), ("yolov6m", "fuse_ab"))
]


@pytest.mark.parametrize(("name", "overrides"), DEPLOY_CASES)
def test_reparameterized_model_is_equivalent(name, overrides):
    """Real configs, random weights with randomized BN and head: the deploy form equals the training form.

    128 px is a multiple of 64, as P6 models need; every model, the largest included, takes seconds on CPU.
    """
    model = _randomized(name, **overrides)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected, raw_expected = model(image), model.head.forward_raw(model.forward_features(image))
        deploy = reparameterize_model(model)
        actual, raw_actual = deploy(image), deploy.head.forward_raw(deploy.forward_features(image))
        assert max_rel_error(actual, expected) <= 1e-4
        # the raw maps too: QARepVGG configs reach huge activations, where saturated scores hide little
        for (cls_a, box_a), (cls_e, box_e) in zip(raw_actual, raw_expected):
            assert max_rel_error(cls_a, cls_e) <= 1e-4 and max_rel_error(box_a, box_e) <= 1e-4
        layout = state_dict_manifest(deploy)
        reparameterize_model(deploy, inplace=True)
        assert state_dict_manifest(deploy) == layout


@pytest.mark.parametrize(("name", "size", "levels"), [("yolov6n", 128, 3), ("yolov6n6", 256, 4)])
def test_output_contract(name, size, levels):
    model = _randomized(name, num_classes=5)
    with torch.no_grad():
        pred = model(torch.rand(2, 3, size, size))
    strides = (8, 16, 32, 64)[:levels]
    assert pred.shape == (2, sum((size // s) ** 2 for s in strides), 4 + 5)
    assert model.strides == strides and model.num_classes == 5
    assert ((pred[..., 4:] >= 0) & (pred[..., 4:] <= 1)).all()


def test_raw_outputs_decode_to_predictions():
    """Eval output = sigmoid(class logits) and the l, t, r, b distances around cell centres, times the stride."""
    model = _randomized("yolov6n", num_classes=3)
    image = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        pred = model(image)
        raw = model.head.forward_raw(model.forward_features(image))
    assert [tuple(cls.shape) for cls, _ in raw] == [(1, 3, 12, 16), (1, 3, 6, 8), (1, 3, 3, 4)]
    assert [box.shape[1] for _, box in raw] == [4, 4, 4]
    distances = torch.cat([box.flatten(2) for _, box in raw], -1).transpose(1, 2)
    _check_decoded(pred, raw, distances)


def test_dfl_decoding():
    """With DFL, each side's distance is the expectation of a softmax over bins 0..16."""
    model = _randomized("yolov6m", num_classes=2)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pred = model(image)
        raw = model.head.forward_raw(model.forward_features(image))
    assert [box.shape[1] for _, box in raw] == [68, 68, 68]
    logits = torch.cat([box.flatten(2) for _, box in raw], -1)  # (1, 4 * 17, N), side-major
    bins = logits.view(1, 4, 17, -1).softmax(2)
    distances = (bins * torch.arange(17.0).view(1, 1, 17, 1)).sum(2).transpose(1, 2)
    _check_decoded(pred, raw, distances)


def _check_decoded(pred, raw, distances) -> None:
    sizes = [tuple(cls.shape[-2:]) for cls, _ in raw]
    points, strides = make_anchor_points(sizes, [8, 16, 32])
    boxes = torch.cat((points - distances[..., :2], points + distances[..., 2:]), -1) * strides
    scores = torch.cat([cls.flatten(2) for cls, _ in raw], -1).transpose(1, 2).sigmoid()
    torch.testing.assert_close(pred[..., :4], boxes, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(pred[..., 4:], scores)


@pytest.mark.parametrize(
    ("head", "num_outputs", "box_channels"), [("default", 3, 4), ("fuse_ab", 5, 68), ("distill_ns", 4, 68)]
)
def test_training_mode_outputs(head, num_outputs, box_channels):
    """Training mode returns (head outputs, neck features) like the official model."""
    model = create_model("yolov6n", num_classes=3, head=head).train()
    head_outputs, features = model(torch.rand(2, 3, 64, 64))
    points = 8 * 8 + 4 * 4 + 2 * 2
    assert len(head_outputs) == num_outputs and len(features) == 3
    stems, scores, boxes = head_outputs[0], head_outputs[-2], head_outputs[-1]
    assert [f.shape[1] for f in stems] == [f.shape[1] for f in features]
    if head == "distill_ns":  # (stems, scores, DFL distribution, l-t-r-b distances)
        scores, boxes = head_outputs[1], head_outputs[2]
        assert head_outputs[3].shape == (2, points, 4)
    if head == "fuse_ab":  # (stems, anchor-based scores, anchor-based boxes, scores, distribution)
        assert head_outputs[1].shape == (2, 3 * points, 3) and head_outputs[2].shape == (2, 3 * points, 4)
    assert scores.shape == (2, points, 3) and ((scores >= 0) & (scores <= 1)).all()
    assert boxes.shape == (2, points, box_channels)


def test_head_variants_switch_dfl_on_unless_told_otherwise():
    assert create_model("yolov6n", head="distill_ns").config.reg_max == 16
    plain = create_model("yolov6n", head="fuse_ab", use_dfl=False, reg_max=0)
    assert plain.head.reg_preds[0].out_channels == 4
    with pytest.raises(ValueError, match="fuse_ab"):
        create_model("yolov6n6", head="fuse_ab")
    with pytest.raises(ValueError, match="head"):
        create_model("yolov6n", head="anchor_based")
    with pytest.raises(ValueError, match="reg_max"):
        create_model("yolov6n", use_dfl=True)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_num_classes(num_classes):
    model = create_model("yolov6s", num_classes=num_classes, head="fuse_ab").eval()
    assert model.num_classes == num_classes
    assert {conv.out_channels for conv in model.head.cls_preds} == {num_classes}
    assert {conv.out_channels for conv in model.head.cls_preds_ab} == {3 * num_classes}
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 84, 4 + num_classes)


@pytest.mark.parametrize("name", ["yolov6n", "yolov6m_qa", "yolov6l6", "yolov6s_mbla", "yolov6n_hs"])
def test_config_round_trip(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=7, head="default")
        data = json.loads(json.dumps(model.config.to_dict()))
        rebuilt = get_model_class(type(model).__name__).from_config(data, arch=name)
    assert rebuilt.config == model.config and isinstance(rebuilt.config, YOLOv6Config)
    assert state_dict_manifest(rebuilt) == state_dict_manifest(model)


def test_finetune_configs_share_their_base_architecture():
    assert MODEL_CFGS["yolov6s_finetune"] is MODEL_CFGS["yolov6s"]
    assert MODEL_CFGS["yolov6n_opt_qat"] is MODEL_CFGS["yolov6n_opt"]
    assert MODEL_CFGS["yolov6n_base_finetune"].use_dfl is False  # unlike yolov6n_base
    assert create_model("yolov6s_finetune").arch == "yolov6s_finetune"


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="training_mode"):
        YOLOv6Config(training_mode="repvggv3")
    with pytest.raises(ValueError, match="stride"):
        YOLOv6Config(strides=(8, 16))
    with pytest.raises(TypeError):
        create_model("yolov6n", not_a_field=1)
