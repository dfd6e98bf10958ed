"""YOLOv6-Lite: official state_dict layout (train and deploy), re-parameterization equivalence, output contract."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_manifest, max_rel_error, randomize_bn_, reference_dir, reference_models, state_dict_manifest

from yolodeploy import reparameterize_model
from yolodeploy.core.lite import channel_shuffle
from yolodeploy.models import create_model, list_models
from yolodeploy.models.yolov6_lite import MODEL_CFGS, YOLOv6Lite, YOLOv6LiteConfig

LITE_MODELS = list_models(family="yolov6_lite")
BASE_MODELS = ["yolov6_lite_s", "yolov6_lite_m", "yolov6_lite_l"]  # the finetune variants share these architectures


def _randomized(name: str, seed: int = 0, **kwargs) -> YOLOv6Lite:
    """An eval-mode model whose BatchNorms and (zero-initialized) output convs all carry signal."""
    torch.manual_seed(seed)
    model = randomize_bn_(create_model(name, **kwargs), seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in [*model.head.cls_preds, *model.head.reg_preds]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
    return model.eval()


def test_all_variants_registered():
    expected = {f"yolov6_lite_{size}{tag}" for size in "sml" for tag in ("", "_finetune")}
    assert set(LITE_MODELS) == expected
    assert set(MODEL_CFGS) == expected
    fixtures = {name for name in reference_models("yolov6") if name.startswith("yolov6_lite")}
    assert not fixtures or fixtures == expected


@pytest.mark.parametrize("name", LITE_MODELS)
def test_state_dict_matches_official_manifests(name):
    folder = reference_dir("yolov6", name)
    model = create_model(name)
    assert state_dict_manifest(model) == load_manifest(folder / "manifest_train.json")
    deploy_manifest = load_manifest(folder / "manifest_deploy.json")
    assert state_dict_manifest(reparameterize_model(model)) == deploy_manifest
    assert state_dict_manifest(create_model(name, inference_mode=True)) == deploy_manifest


@pytest.mark.parametrize("name", BASE_MODELS)
def test_reparameterize_is_equivalent_and_idempotent(name):
    model = _randomized(name)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    deploy = reparameterize_model(model)
    assert deploy.config.inference_mode and not model.config.inference_mode
    with torch.no_grad():
        train_out, deploy_out = model(x), deploy(x)
        assert max_rel_error(deploy_out, train_out) <= 1e-4
        for a, b in zip(deploy.forward_features(x), model.forward_features(x)):
            assert max_rel_error(a, b) <= 1e-4

        state = {k: v.clone() for k, v in deploy.state_dict().items()}
        for module in deploy.modules():  # a second pass must change nothing
            if callable(getattr(module, "reparameterize", None)):
                module.reparameterize()
        assert state.keys() == deploy.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in deploy.state_dict().items())
        torch.testing.assert_close(deploy(x), deploy_out, rtol=0, atol=0)

        built_deploy = create_model(name, inference_mode=True).eval()
        built_deploy.load_state_dict(deploy.state_dict())
        torch.testing.assert_close(built_deploy(x), deploy_out, rtol=0, atol=0)


def test_output_contract():
    model = _randomized("yolov6_lite_s", num_classes=5)
    x = torch.rand(2, 3, 128, 192)
    sizes = [(128 // s, 192 // s) for s in (8, 16, 32, 64)]
    num_points = sum(h * w for h, w in sizes)
    with torch.no_grad():
        features = model.forward_features(x)
        assert [tuple(f.shape) for f in features] == [(2, 96, h, w) for h, w in sizes]
        out = model(x)
        assert out.shape == (2, num_points, 4 + 5)
        assert ((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all()

        class_logits, box_distances = model.head.forward_raw(features)
        assert [tuple(c.shape) for c in class_logits] == [(2, 5, h, w) for h, w in sizes]
        assert [tuple(b.shape) for b in box_distances] == [(2, 4, h, w) for h, w in sizes]
        # The last point is the bottom-right cell of the stride-64 level: box = (centre -/+ distances) * 64.
        left, top, right, bottom = box_distances[-1][:, :, -1, -1].unbind(1)
        centre_x, centre_y = sizes[-1][1] - 0.5, sizes[-1][0] - 0.5
        expected = torch.stack((centre_x - left, centre_y - top, centre_x + right, centre_y + bottom), 1) * 64
        torch.testing.assert_close(out[:, -1, :4], expected)
        torch.testing.assert_close(out[:, -1, 4:], class_logits[-1][:, :, -1, -1].sigmoid())

        model.train()
        stems, scores, distances = model(x)
        assert [tuple(s.shape) for s in stems] == [(2, 96, h, w) for h, w in sizes]
        assert scores.shape == (2, num_points, 5) and distances.shape == (2, num_points, 4)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_num_classes(num_classes):
    model = create_model("yolov6_lite_m", num_classes=num_classes)
    assert model.num_classes == num_classes
    assert all(conv.out_channels == num_classes for conv in model.head.cls_preds)
    assert model.strides == (8, 16, 32, 64) and model.input_size == (320, 320)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 64 + 16 + 4 + 1, 4 + num_classes)


@pytest.mark.parametrize("name", BASE_MODELS)
def test_config_round_trip(name):
    model = create_model(name, num_classes=7)
    data = json.loads(json.dumps(model.config.to_dict()))
    assert YOLOv6LiteConfig.from_dict(data) == model.config
    rebuilt = YOLOv6Lite.from_config(data, arch=model.arch)
    assert state_dict_manifest(rebuilt) == state_dict_manifest(model)
    deploy = reparameterize_model(model)
    rebuilt_deploy = YOLOv6Lite.from_config(json.loads(json.dumps(deploy.config.to_dict())))
    assert state_dict_manifest(rebuilt_deploy) == state_dict_manifest(deploy)


def test_finetune_variants_share_the_base_architecture():
    for size in "sml":
        base, finetune = MODEL_CFGS[f"yolov6_lite_{size}"], MODEL_CFGS[f"yolov6_lite_{size}_finetune"]
        assert finetune.name == f"yolov6_lite_{size}_finetune"
        assert {**base.to_dict(), "name": None} == {**finetune.to_dict(), "name": None}


def test_unknown_config_field_is_rejected():
    with pytest.raises(ValueError, match="unknown config fields"):
        create_model("yolov6_lite_s", widht_multiple=1.0)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
