"""YOLOv9 zoo: official state_dict layouts (training, GELAN, fused), the structural PGI -> GELAN conversion, the
numerical oracles, official checkpoints, exact re-parameterization and the output contract."""

from __future__ import annotations

import dataclasses
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
from torch import nn

import yolodeploy.models.yolov9  # noqa: F401  (registers the family until the registry lists it)
from yolodeploy import reparameterize_model
from yolodeploy.core.boxes import cxcywh_to_xyxy, make_anchor_points
from yolodeploy.core.layers_v9 import DDetect, DualDDetect
from yolodeploy.models import create_model, list_models, load_checkpoint, save_checkpoint
from yolodeploy.models._registry import get_model_class
from yolodeploy.models.official import read_official_checkpoint
from yolodeploy.models.yolov9 import (
    MODEL_CFGS,
    YOLOv9,
    YOLOv9Config,
    config_from_official_yaml,
    gelan_config,
    model_from_official_yaml,
    registered_name,
    to_gelan,
)

REFERENCE_MODELS = reference_models("yolov9")
PGI_MODELS = [name for name in REFERENCE_MODELS if name.startswith("yolov9") and name != "yolov9-cf"]
GELAN_OF = {name: name.replace("yolov9", "gelan") for name in PGI_MODELS}  # yolov9-t -> gelan-t, yolov9 -> gelan
ORACLES = {"yolov9-t": "main", "gelan-t": None}  # the output group of the oracle that our eval output is


def _expected(folder, manifest: str) -> list:
    return [(key, list(shape), dtype) for key, shape, dtype in load_manifest(REFERENCE / "yolov9" / folder / manifest)]


def _randomized(name: str, seed: int = 0, **kwargs) -> YOLOv9:
    torch.manual_seed(seed)
    return randomize_constants_(randomize_bn_(create_model(name, **kwargs), seed), seed).eval()


def _official_to_ours(pred: torch.Tensor) -> torch.Tensor:
    """Official (B, 4 + C, N) = cx, cy, w, h, scores (channel-first) -> ours (B, N, 4 + C) = x1, y1, x2, y2, scores."""
    pred = pred.transpose(1, 2)
    return torch.cat((cxcywh_to_xyxy(pred[..., :4]), pred[..., 4:]), -1)


def test_every_reference_model_is_registered():
    registered = set(list_models(family="yolov9"))
    assert {name.replace("-", "_") for name in REFERENCE_MODELS} <= registered
    assert registered == set(MODEL_CFGS)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_state_dict_layouts_match_official(name):
    """Keys, shapes, dtypes and order equal the official ones in every form. Built on the meta device."""
    folder = reference_dir("yolov9", name)
    with torch.device("meta"):
        model = create_model(name).eval()
        assert state_dict_manifest(model) == _expected(name, "manifest_train.json")
        if name in PGI_MODELS:  # the unfused GELAN form, as the official notebook's converted checkpoints
            gelan = state_dict_manifest(to_gelan(model))
            assert gelan == _expected(GELAN_OF[name], "manifest_train.json")
            if (folder / "manifest_deploy.json").is_file():
                assert gelan == _expected(name, "manifest_deploy.json")
        if (folder / "manifest_train_fused.json").is_file():  # fused in place, auxiliary branch kept
            fused = reparameterize_model(create_model(name, keep_auxiliary=True).eval())
            assert state_dict_manifest(fused) == _expected(name, "manifest_train_fused.json")
            sequence = reparameterize_model(model.model)  # the bare layer sequence: blocks fused, nothing dropped
            assert [(f"model.{k}", *rest) for k, *rest in state_dict_manifest(sequence)] == _expected(
                name, "manifest_train_fused.json"
            )
        deploy = reparameterize_model(model)
    fused_name = GELAN_OF.get(name, name)
    assert state_dict_manifest(deploy) == _expected(fused_name, "manifest_deploy.json")
    if (folder / "manifest_fused.json").is_file():
        assert state_dict_manifest(deploy) == _expected(name, "manifest_fused.json")
    assert deploy.form == "deploy" and model.form == "train"


@pytest.mark.parametrize("name", PGI_MODELS)
def test_gelan_architecture_is_derived_from_the_graph(name):
    """The GELAN table found from the PGI table's own structure IS the official gelan config (no index offsets)."""
    config, kept = gelan_config(MODEL_CFGS[name.replace("-", "_")])
    gelan = GELAN_OF[name].replace("-", "_")
    assert registered_name(config) == gelan
    assert config.layers == MODEL_CFGS[gelan].layers  # even the spelling of each source
    assert len(kept) == len(config.layers) and kept == tuple(sorted(kept))


def test_auxiliary_branch_and_silence_are_found_structurally():
    _, kept_m = gelan_config(MODEL_CFGS["yolov9_m"])  # Silence only fed the auxiliary branch: dropped
    assert kept_m == (*range(1, 23), 38)
    _, kept_e = gelan_config(MODEL_CFGS["yolov9_e"])  # Silence feeds both GELAN-E backbones: kept
    assert kept_e == (*range(0, 29), *range(36, 50))
    _, kept_t = gelan_config(MODEL_CFGS["yolov9_t"])
    assert kept_t == (*range(0, 22), 29)
    assert gelan_config(MODEL_CFGS["gelan_c"]) == (MODEL_CFGS["gelan_c"], tuple(range(23)))


@pytest.mark.parametrize("form", ["train", "deploy"])
@pytest.mark.parametrize("name", list(ORACLES))
def test_matches_official_outputs(name, form):
    folder = reference_dir("yolov9", name)
    model = create_model(name)
    model.load_state_dict(torch.load(folder / "state_dict.pt", weights_only=True), strict=True)
    model.eval()
    if form == "deploy":
        model = reparameterize_model(model)
    image = torch.load(folder / "input.pt", weights_only=True)["input"]
    reference = torch.load(folder / f"outputs_{form}.pt", weights_only=True)
    group = ORACLES[name] if form == "train" else None
    prefix = f".{group}" if group else ""
    with torch.no_grad():
        pred, raw = model(image), model.forward_raw(image)
    # boxes up to ~500 px: 1e-4 is a few float32 ulps (observed 1.5e-5 train, 6.1e-5 deploy = the official noise)
    torch.testing.assert_close(pred, _official_to_ours(reference[f"pred{prefix}"]), atol=1e-4, rtol=0)
    groups = ["aux", "main"] if group else [None]
    assert len(raw) == len(groups)
    for branch, maps in zip(groups, raw):
        for level, actual in enumerate(maps):
            key = f"raw.{branch}.{level}" if branch else f"raw.{level}"
            torch.testing.assert_close(actual, reference[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(ORACLES))
def test_official_checkpoint_reproduces_the_oracle(name):
    folder = reference_dir("yolov9", name)
    model = load_checkpoint(folder / "official_checkpoint.pt")
    assert isinstance(model, YOLOv9) and model.arch == name.replace("-", "_") and model.form == "train"
    assert model.num_classes == 80 and model.class_names[0] == "person"
    expected = torch.load(folder / "state_dict.pt", weights_only=True)
    assert list(model.state_dict()) == list(expected)
    image = torch.load(folder / "input.pt", weights_only=True)["input"]
    reference = torch.load(folder / "outputs_train.pt", weights_only=True)
    key = "pred.main" if ORACLES[name] else "pred"
    with torch.no_grad():
        torch.testing.assert_close(model(image), _official_to_ours(reference[key]), atol=1e-3, rtol=1e-3)


def _size(name: str) -> int:
    return 64 if name in ("yolov9_e", "gelan_e") else 128


@pytest.mark.parametrize("name", list_models(family="yolov9"))
def test_reparameterized_model_is_equivalent(name):
    """Random weights, randomized BN and head biases: the deploy form computes the training form's main output."""
    model = _randomized(name)
    image = torch.rand(1, 3, _size(name), _size(name))
    with torch.no_grad():
        expected, raw_expected = model(image), model.forward_raw(image)[-1]
        deploy = reparameterize_model(model)
        actual, raw_actual = deploy(image), deploy.forward_raw(image)[-1]
    assert max_rel_error(actual, expected) <= 1e-4
    for level_actual, level_expected in zip(raw_actual, raw_expected):
        assert max_rel_error(level_actual, level_expected) <= 1e-4
    layout = state_dict_manifest(deploy)
    assert state_dict_manifest(reparameterize_model(deploy, inplace=True)) == layout  # idempotent


@pytest.mark.parametrize("name", ["yolov9_t", "yolov9_c"])
def test_gelan_conversion_is_exact_and_auxiliary_fusion_keeps_both_branches(name):
    model = _randomized(name)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected, raw_expected = model(image), model.forward_raw(image)
        gelan = to_gelan(model)
        torch.testing.assert_close(gelan(image), expected, atol=0, rtol=0)  # the very same main-branch layers
        keeping = YOLOv9(dataclasses.replace(model.config, keep_auxiliary=True), arch=name)
        keeping.load_state_dict(model.state_dict())
        fused = reparameterize_model(keeping.eval())
        raw_fused = fused.forward_raw(image)
    assert isinstance(gelan.head, DDetect) and not isinstance(gelan.head, DualDDetect) and gelan.form == "train"
    assert isinstance(model.head, DualDDetect) and isinstance(fused.head, DualDDetect)  # the input is untouched
    assert reparameterize_model(model.model).state_dict().keys() == fused.model.state_dict().keys()
    assert len(raw_fused) == 2
    for maps_fused, maps_expected in zip(raw_fused, raw_expected):
        for level_fused, level_expected in zip(maps_fused, maps_expected):
            assert max_rel_error(level_fused, level_expected) <= 1e-4


@pytest.mark.parametrize(("name", "branches"), [("gelan_t", 1), ("yolov9_t", 2), ("yolov9_cf", 3)])
def test_output_contract(name, branches):
    model = _randomized(name, num_classes=5)
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        pred, features, raw = model(image), model.forward_features(image), model.forward_raw(image)
    points = 8 * 12 + 4 * 6 + 2 * 3
    assert pred.shape == (2, points, 4 + 5) and model.strides == (8, 16, 32) and model.num_classes == 5
    assert ((pred[..., 4:] >= 0) & (pred[..., 4:] <= 1)).all()
    assert [tuple(f.shape[-2:]) for f in features] == [(8, 12), (4, 6), (2, 3)]
    assert len(raw) == branches and all(len(maps) == 3 for maps in raw)
    assert {m.shape[1] for maps in raw for m in maps} == {4 * 16 + 5}
    _check_decoded(pred, raw[-1])


def _check_decoded(pred, raw) -> None:
    """Eval output = DFL expectation of l, t, r, b around cell centres, times the stride; sigmoid scores."""
    logits = torch.cat([level.flatten(2) for level in raw], -1)
    bins = logits[:, :64].reshape(logits.shape[0], 4, 16, -1).softmax(2)
    distances = (bins * torch.arange(16.0).view(1, 1, 16, 1)).sum(2).transpose(1, 2)
    points, strides = make_anchor_points([tuple(level.shape[-2:]) for level in raw], [8, 16, 32])
    boxes = torch.cat((points - distances[..., :2], points + distances[..., 2:]), -1) * strides
    torch.testing.assert_close(pred[..., :4], boxes, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(pred[..., 4:], logits[:, 64:].transpose(1, 2).sigmoid())


@pytest.mark.parametrize(("name", "branches"), [("gelan_t", 1), ("yolov9_t", 2)])
def test_training_mode_returns_the_official_raw_outputs(name, branches):
    model = create_model(name, num_classes=3).train()
    outputs = model(torch.rand(2, 3, 64, 64))
    groups = outputs if branches > 1 else [outputs]
    assert len(groups) == branches
    for maps in groups:
        assert [tuple(m.shape) for m in maps] == [(2, 67, 8, 8), (2, 67, 4, 4), (2, 67, 2, 2)]


@pytest.mark.parametrize("num_classes", [1, 3])
def test_num_classes(num_classes):
    model = create_model("yolov9-t", num_classes=num_classes).eval()
    assert model.num_classes == num_classes
    assert {seq[-1].out_channels for name in ("cv3", "cv5") for seq in getattr(model.head, name)} == {num_classes}
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 84, 4 + num_classes)
        assert reparameterize_model(model)(torch.rand(1, 3, 64, 64)).shape == (1, 84, 4 + num_classes)


@pytest.mark.parametrize("name", ["yolov9_t", "gelan", "yolov9_e", "yolov7_af", "yolov9_cf"])
def test_config_round_trip(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=7)
        for candidate in (model, reparameterize_model(model.eval())):
            data = json.loads(json.dumps(candidate.config.to_dict()))
            rebuilt = get_model_class(type(candidate).__name__).from_config(data, arch=candidate.arch)
            assert rebuilt.config == candidate.config and isinstance(rebuilt.config, YOLOv9Config)
            if candidate.form == "deploy":
                rebuilt = reparameterize_model(rebuilt.eval())
            assert state_dict_manifest(rebuilt) == state_dict_manifest(candidate)


@pytest.mark.parametrize("keep_auxiliary", [False, True])
def test_deploy_checkpoint_round_trip(tmp_path, keep_auxiliary):
    model = _randomized("yolov9_t", num_classes=4, keep_auxiliary=keep_auxiliary)
    deploy = reparameterize_model(model)
    assert deploy.arch == ("yolov9_t" if keep_auxiliary else "gelan_t")
    loaded = load_checkpoint(save_checkpoint(deploy, tmp_path / "deploy.safetensors"))
    image = torch.rand(1, 3, 64, 64)
    assert loaded.form == "deploy" and state_dict_manifest(loaded) == state_dict_manifest(deploy)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), deploy(image), atol=0, rtol=0)


def test_activation_is_per_model_not_global():
    """The official parse_model sets a class-global activation for gelan/yolov9 (ReLU) that leaks into later
    models; here every model builds with its own."""
    relu = create_model("gelan")
    silu = create_model("gelan-t")
    assert isinstance(relu.model[0].act, nn.ReLU) and isinstance(relu.head.cv2[0][0].act, nn.ReLU)
    assert isinstance(relu.model[2].cv2[0].m[0].cv1.act, nn.ReLU)  # RepConvN inside RepNCSPELAN4
    assert isinstance(silu.model[0].act, nn.SiLU) and isinstance(silu.model[4].cv2[0].m[0].cv1.act, nn.SiLU)
    assert isinstance(silu.head.cv2[0][0].act, nn.SiLU)


def test_official_yaml_hook():
    folder = reference_dir("yolov9", "yolov9-t")
    recorded = read_official_checkpoint(folder / "official_checkpoint.pt")["model"].__dict__["yaml"]
    with torch.device("meta"):
        model = model_from_official_yaml(recorded, num_classes=80)
        assert model.arch == "yolov9_t" and model.config == MODEL_CFGS["yolov9_t"]
        assert state_dict_manifest(model) == _expected("yolov9-t", "manifest_train.json")
        narrow = {**recorded, "width_multiple": 0.5, "activation": "nn.ReLU()"}
        custom = model_from_official_yaml(narrow, num_classes=3)
    assert custom.arch == "yolov9-custom" and custom.config.activation == "relu" and custom.num_classes == 3
    assert custom.strides == (8, 16, 32)  # measured by a (meta) forward pass, as the official builder does
    assert config_from_official_yaml({**recorded, "activation": "nn.GELU()"}, 80) is None
    yolov7_style = {**recorded, "anchors": [[10, 13, 16, 30, 33, 23]] * 3}
    assert config_from_official_yaml(yolov7_style, 80) is None
    idetect = {**recorded, "head": [*recorded["head"][:-1], [[15, 18, 21], 1, "IDetect", ["nc", "anchors"]]]}
    assert config_from_official_yaml(idetect, 80) is None


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="unknown modules"):
        YOLOv9Config(layers=((-1, 1, "RepConv", (16, 3, 1)), ((0,), 1, "DDetect", ("nc",))))
    with pytest.raises(ValueError, match="detection head"):
        YOLOv9Config(layers=((-1, 1, "Conv", (16, 3, 1)),))
    with pytest.raises(ValueError, match="activation"):
        YOLOv9Config(layers=MODEL_CFGS["gelan_t"].layers, activation="gelu")
    with pytest.raises(TypeError):
        create_model("yolov9-t", not_a_field=1)
