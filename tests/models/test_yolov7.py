"""YOLOv7 zoo: official state_dict layouts, the numerical oracle, the official checkpoint, exact deploy conversion."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    load_manifest,
    max_rel_error,
    randomize_bn_,
    randomize_constants_,
    randomize_implicit_,
    reference_dir,
    reference_models,
    state_dict_manifest,
)

import yolodeploy.models.yolov7  # noqa: F401  (registers the family until the registry lists it)
from yolodeploy import reparameterize_model
from yolodeploy.core.boxes import cxcywh_to_xyxy, make_anchor_points
from yolodeploy.errors import ArchitectureMismatchError
from yolodeploy.models import create_model, list_models, load_checkpoint, save_checkpoint
from yolodeploy.models._registry import get_model_class
from yolodeploy.models.summary import summarize_model
from yolodeploy.models.yolov7 import (
    MODEL_CFGS,
    YOLOv7,
    YOLOv7Config,
    deploy_layer_table,
    model_from_official_yaml,
    to_deploy_architecture,
)

REFERENCE_MODELS = reference_models("yolov7")
FAMILY = list_models(family="yolov7")
# the largest models are checked at 64 px (the smallest input a P6 model takes) to keep the suite fast
INPUT_SIZE = {"yolov7_d6": 64, "yolov7_e6e": 64}


def _registry_name(folder: str) -> str:
    return folder.replace("-", "_")


def _randomized(name: str, seed: int = 0, **kwargs) -> YOLOv7:
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    return randomize_implicit_(randomize_constants_(randomize_bn_(model, seed), seed), seed + 1000).eval()


def _official_to_ours(pred: torch.Tensor) -> torch.Tensor:
    """Official (B, N, 85) = cx, cy, w, h, objectness, 80 class probabilities -> ours (B, N, 84) = x1, y1, x2,
    y2, objectness x class probability."""
    return torch.cat((cxcywh_to_xyxy(pred[..., :4]), pred[..., 5:] * pred[..., 4:5]), -1)


def _expected(path) -> list:
    return [(key, list(shape), dtype) for key, shape, dtype in load_manifest(path)]


def test_every_reference_model_is_registered():
    expected = {_registry_name(name) for name in REFERENCE_MODELS}
    assert expected <= set(FAMILY), sorted(expected - set(FAMILY))
    assert set(FAMILY) == set(MODEL_CFGS)


@pytest.mark.parametrize("folder", REFERENCE_MODELS)
def test_state_dict_layout_matches_official(folder):
    """Keys, shapes, dtypes and order equal the official training model, the notebook's deploy model (implicit
    knowledge folded, auxiliary head dropped) and the fused ``Model.fuse()`` model. Built on the meta device."""
    path = reference_dir("yolov7", folder)
    with torch.device("meta"):
        model = create_model(_registry_name(folder))
        if (path / "manifest_train.json").is_file():
            assert state_dict_manifest(model) == _expected(path / "manifest_train.json")
        assert state_dict_manifest(to_deploy_architecture(model)) == _expected(path / "manifest_deploy.json")
        fused = reparameterize_model(model.eval())
        assert state_dict_manifest(fused) == _expected(path / "manifest_fused.json")
        assert fused.form == "deploy" and model.form == "train"  # the input is left as it was
        assert state_dict_manifest(reparameterize_model(fused)) == state_dict_manifest(fused)  # idempotent


def test_deploy_table_drops_only_the_auxiliary_branch():
    """W6: the four auxiliary 3x3 convs (118-121) go, the head moves from 122 to 118 over the lead inputs."""
    rows, mapping = deploy_layer_table(MODEL_CFGS["yolov7_w6"].layers)
    assert len(rows) == 119 and rows[-1] == ((114, 115, 116, 117), 1, "Detect", ())
    assert mapping[122] == 118 and all(mapping[i] == i for i in range(118)) and 118 not in mapping
    tiny = MODEL_CFGS["yolov7_tiny"].layers
    assert deploy_layer_table(tiny)[0] == (*tiny[:-1], (*tiny[-1][:2], "Detect", ()))


def _oracle_model(form: str) -> YOLOv7:
    folder = reference_dir("yolov7", "yolov7-tiny")
    model = create_model("yolov7-tiny")
    model.load_state_dict(torch.load(folder / "state_dict.pt", weights_only=True), strict=True)
    model.eval()
    if form == "deploy":
        return reparameterize_model(model)
    return to_deploy_architecture(model) if form == "deploy_unfused" else model


@pytest.mark.parametrize("form", ["train", "deploy_unfused", "deploy"])
def test_yolov7_tiny_matches_official_outputs(form):
    folder = reference_dir("yolov7", "yolov7-tiny")
    model = _oracle_model(form)
    image = torch.load(folder / "input.pt", weights_only=True)["input"]
    # the official deploy outputs come from its fully converted model; its stage 1 alone gives the same numbers
    reference = torch.load(folder / f"outputs_{form.split('_')[0]}.pt", weights_only=True)
    with torch.no_grad():
        pred, raw = model(image), model.forward_raw(image)
    # Boxes reach ~440 px, where one float32 ulp is 3e-5: the training form is bit-identical (observed 0.0);
    # our fused weights differ from the official ones by float rounding (different summation order), observed
    # 7.6e-5 on the boxes, i.e. 2.5 ulps; the official conversion itself moves them by 1.5e-4 (fixture README).
    torch.testing.assert_close(pred, _official_to_ours(reference["pred"]), atol=1e-4, rtol=0)
    assert len(raw) == 3
    for index, level in enumerate(raw):
        torch.testing.assert_close(level, reference[f"raw.{index}"], atol=1e-5, rtol=0)


def test_official_checkpoint_matches_oracle():
    """The fp16 official checkpoint imports through the safe importer and the recorded yaml (our hook)."""
    folder = reference_dir("yolov7", "yolov7-tiny")
    model = load_checkpoint(folder / "official_checkpoint.pt")
    assert isinstance(model, YOLOv7) and model.arch == "yolov7_tiny" and model.form == "train"
    assert model.num_classes == 80 and model.class_names[0] == "person" and not model.training
    assert model.config == MODEL_CFGS["yolov7_tiny"]
    image = torch.load(folder / "input.pt", weights_only=True)["input"]
    expected = _official_to_ours(torch.load(folder / "outputs_train.pt", weights_only=True)["pred"])
    with torch.no_grad():
        out = model(image)
    # the fixture weights are fp16-exact, so fp16 storage loses nothing (observed difference: 0.0)
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=1e-3)


def _as_official_yaml(config: YOLOv7Config, leaky: bool = False) -> dict:
    """A config written back as the yaml dict an official checkpoint records (strings as the yaml has them)."""
    rows = []
    for source, repeats, module, args in config.layers:
        args = ["None" if arg is None else arg for arg in args]
        if module in ("Conv", "RepConv") and leaky:
            args = [*args, "None", 1, "nn.LeakyReLU(0.1)"]
        if module in ("Detect", "IDetect", "IAuxDetect"):
            args = ["nc", "anchors"]
        rows.append([list(source) if isinstance(source, tuple) else source, repeats, module, args])
    anchors = [list(level) for level in config.anchors]
    return {"nc": 80, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": anchors, "backbone": rows[:10],
            "head": rows[10:], "ch": 3}  # fmt: skip


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("deploy", [False, True], ids=["train", "deploy"])
def test_official_yaml_builds_the_registered_model(name, deploy):
    config = MODEL_CFGS[name]
    if deploy:
        config = YOLOv7Config.from_dict({**config.to_dict(), "layers": deploy_layer_table(config.layers)[0]})
    with torch.device("meta"):
        model = model_from_official_yaml(_as_official_yaml(config, leaky=name == "yolov7_tiny"), num_classes=7)
    assert model.arch == name
    assert model.config.layers == config.layers and model.config.strides == config.strides
    assert model.config.activation == config.activation and model.config.input_size == config.input_size
    assert model.num_classes == 7


def test_official_yaml_of_other_architectures():
    with torch.device("meta"):
        custom = model_from_official_yaml({**_as_official_yaml(MODEL_CFGS["yolov7"]), "width_multiple": 0.5}, 80)
    assert custom.arch == "yolov7-custom" and custom.model[0].conv.out_channels == 16
    yolov9 = {"anchors": 3, "backbone": [[-1, 1, "RepNCSPELAN4", [256, 128, 64, 1]]], "head": []}
    assert model_from_official_yaml(yolov9, 80) is None
    anchor_free = _as_official_yaml(MODEL_CFGS["yolov7"])  # YOLOv9's yolov7-af: plain modules, "Detect" [nc]
    anchor_free.update(anchors=3, head=[*anchor_free["head"][:-1], [[102, 103, 104], 1, "Detect", ["nc"]]])
    assert model_from_official_yaml(anchor_free, 80) is None
    mixed = _as_official_yaml(MODEL_CFGS["yolov7_tiny"], leaky=True)
    mixed["backbone"][0][3] = [32, 3, 2]  # SiLU in one layer, LeakyReLU elsewhere
    with pytest.raises(ArchitectureMismatchError, match="mix activations"):
        model_from_official_yaml(mixed, 80)


def _predictions_and_raw(model: YOLOv7, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``model(image)`` and ``model.forward_raw(image)`` from one pass through the network."""
    features = model.forward_features(image)
    return model.head(features), model.head.forward_raw(features)


@pytest.mark.parametrize("name", FAMILY)
def test_reparameterized_model_is_equivalent(name):
    """Real configs, random weights with randomized BN and implicit knowledge: deploy form == training form."""
    model = _randomized(name)
    size = INPUT_SIZE.get(name, 128)
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():
        expected, raw_expected = _predictions_and_raw(model, image)
        deploy = reparameterize_model(model)
        actual, raw_actual = _predictions_and_raw(deploy, image)
    assert max_rel_error(actual, expected) <= 1e-4
    for level_actual, level_expected in zip(raw_actual, raw_expected, strict=True):
        assert max_rel_error(level_actual, level_expected) <= 1e-4
    assert deploy.config.is_deploy_architecture
    assert not any(".ia." in key or ".im." in key or ".m2." in key for key in deploy.state_dict())


@pytest.mark.parametrize("name", ["yolov7", "yolov7_w6"])
def test_deploy_architecture_is_equivalent_before_fusion(name):
    model = _randomized(name, num_classes=3)
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(to_deploy_architecture(model)(image), model(image), atol=1e-4, rtol=1e-5)


def test_output_contract_and_decoding():
    """Eval output: per anchor, centre (2 sigmoid - 0.5 + cell) * stride, size (2 sigmoid)^2 * anchor, as
    xyxy; score = sigmoid(objectness) * sigmoid(class). Ordered level, anchor, row, column."""
    model = _randomized("yolov7_tiny", num_classes=5)
    image = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        pred, raw = model(image), model.forward_raw(image)
        features = model.forward_features(image)
    assert [tuple(level.shape) for level in raw] == [(2, 3, 12, 16, 10), (2, 3, 6, 8, 10), (2, 3, 3, 4, 10)]
    assert [f.shape[1] for f in features] == [128, 256, 512]
    assert pred.shape == (2, 3 * (12 * 16 + 6 * 8 + 3 * 4), 4 + 5)
    assert ((pred[..., 4:] >= 0) & (pred[..., 4:] <= 1)).all()
    decoded = []
    for level, stride, anchors in zip(raw, (8, 16, 32), MODEL_CFGS["yolov7_tiny"].anchors):
        points, _ = make_anchor_points([tuple(level.shape[2:4])], [stride], offset=0.0)
        y = level.sigmoid()
        centre = (y[..., :2] * 2 - 0.5 + points.view(1, 1, *level.shape[2:4], 2)) * stride
        size = (y[..., 2:4] * 2) ** 2 * torch.tensor(anchors, dtype=torch.float32).view(1, 3, 1, 1, 2)
        boxes = torch.cat((centre - size / 2, centre + size / 2, y[..., 5:] * y[..., 4:5]), -1)
        decoded.append(boxes.reshape(2, -1, 9))
    torch.testing.assert_close(pred, torch.cat(decoded, 1))
    assert model.strides == (8, 16, 32) and model.input_size == (640, 640) and model.num_classes == 5


def test_training_mode_outputs():
    """Training mode returns the raw per-level maps like the official head; the P6 aux head adds its own."""
    model = create_model("yolov7_tiny", num_classes=3).train()
    outputs = model(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 8, 8, 8), (2, 3, 4, 4, 8), (2, 3, 2, 2, 8)]
    with torch.device("meta"):
        p6 = create_model("yolov7_w6", num_classes=3).train()
        outputs = p6(torch.zeros(1, 3, 128, 128))
    assert [tuple(o.shape[2:4]) for o in outputs] == [(16, 16), (8, 8), (4, 4), (2, 2)] * 2


@pytest.mark.parametrize("num_classes", [1, 3])
def test_num_classes(num_classes):
    model = _randomized("yolov7", num_classes=num_classes)
    assert model.num_classes == num_classes
    assert {conv.out_channels for conv in model.head.m} == {3 * (5 + num_classes)}
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3 * 84, 4 + num_classes)
        assert reparameterize_model(model)(torch.rand(1, 3, 64, 64)).shape == (1, 3 * 84, 4 + num_classes)


@pytest.mark.parametrize("name", ["yolov7_tiny", "yolov7", "yolov7_e6e"])
def test_config_round_trip(name):
    """Train, deploy-architecture and fused forms all rebuild from their JSON config (the checkpoint path)."""
    with torch.device("meta"):
        train = create_model(name, num_classes=7)
        for model in (train, to_deploy_architecture(train), reparameterize_model(train.eval())):
            data = json.loads(json.dumps(model.config.to_dict()))
            rebuilt = get_model_class(type(model).__name__).from_config(data, arch=name)
            if model.form == "deploy":
                rebuilt = reparameterize_model(rebuilt.eval())
            assert rebuilt.config == model.config and isinstance(rebuilt.config, YOLOv7Config)
            assert state_dict_manifest(rebuilt) == state_dict_manifest(model)


def test_checkpoint_round_trip_of_the_deploy_form(tmp_path):
    deploy = reparameterize_model(_randomized("yolov7_tiny", num_classes=2))
    path = save_checkpoint(deploy, tmp_path / "tiny.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.form == "deploy" and loaded.arch == "yolov7_tiny"
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), deploy(image), atol=0, rtol=0)


def test_summary_on_meta_matches_official_parameter_counts():
    """``yolodeploy models`` numbers: parameters of the training and fused forms as the fixture index records."""
    summary = summarize_model("yolov7_tiny")
    assert (summary.train_params, summary.deploy_params) == (6_228_762, 6_219_709)
    assert summary.family == "yolov7" and 10 < summary.gflops < 20


def test_invalid_config_is_rejected():
    layers = MODEL_CFGS["yolov7_tiny"].layers
    with pytest.raises(ValueError, match="head"):
        YOLOv7Config(layers=layers[:-1], anchors=MODEL_CFGS["yolov7_tiny"].anchors)
    with pytest.raises(ValueError, match="activation"):
        YOLOv7Config(layers=layers, anchors=MODEL_CFGS["yolov7_tiny"].anchors, activation="gelu")
    with pytest.raises(ValueError, match="stride"):
        YOLOv7Config(layers=layers, anchors=MODEL_CFGS["yolov7_tiny"].anchors, strides=(8, 16))
    with pytest.raises(TypeError):
        create_model("yolov7", not_a_field=1)
