"""quantize_model, layer selection and the quantized checkpoint (issue 6 item 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.core.reparam import reparameterize_model
from yolodeploy.errors import CheckpointError, ConfigError
from yolodeploy.models import create_model, save_checkpoint
from yolodeploy.models.checkpoint import read_metadata
from yolodeploy.quant import QuantConv2d
from yolodeploy.quant.calibrate import calibrate
from yolodeploy.quant.model import (
    dfl_convs,
    disable_all,
    enable_all,
    float_layers,
    for_flavour,
    keep_float,
    load_quantized,
    quant_layers,
    quantize_model,
    relu_fed_convs,
    save_quantized,
    set_layer_enabled,
)
from yolodeploy.quant.quantizer import QuantSiLU

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_for_verification_(create_model(name, num_classes=2), 0).eval()


@pytest.fixture(scope="module")
def yolov6n() -> nn.Module:
    return _model("yolov6n")


@pytest.fixture(scope="module")
def sample() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["yolov6n", "yolov9_t", "gelan_t"])
def test_every_conv_but_the_dfl_projection_is_quantized(name, sample):
    model = _model(name)
    qmodel = quantize_model(model)
    assert qmodel.form == "quantized" and model.form != "quantized"  # a copy by default
    assert float_layers(qmodel) == dfl_convs(qmodel) and len(dfl_convs(qmodel)) == 1
    convs = [m for m in qmodel.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(quant_layers(qmodel)) + 1  # the wrapped convs + the DFL projection
    assert all(isinstance(qmodel.get_submodule(n), QuantConv2d) for n in quant_layers(qmodel))
    with torch.no_grad():  # every quantizer disabled: exactly the deploy model
        assert torch.equal(qmodel(sample), reparameterize_model(model)(sample))


def test_excluded_layers_stay_float(yolov6n):
    conv_name = next(iter(quant_layers(quantize_model(yolov6n))))  # backbone.stem.rbr_reparam
    parent = "neck.Rep_p4.block.0"  # a parent's name selects the conv inside it
    qmodel = quantize_model(yolov6n, exclude=[conv_name, parent])
    floats = float_layers(qmodel)
    assert conv_name in floats and f"{parent}.rbr_reparam" in floats and "detect.proj_conv" in floats
    assert qmodel.quant_excluded == [conv_name, f"{parent}.rbr_reparam"]
    assert conv_name not in quant_layers(qmodel)


def test_dfl_projection_can_be_quantized(yolov6n):
    qmodel = quantize_model(yolov6n, quantize_dfl=True)
    assert float_layers(qmodel) == [] and "detect.proj_conv" in quant_layers(qmodel)


def test_unknown_layer_names_close_matches(yolov6n):
    with pytest.raises(ConfigError, match=r"did you mean .*backbone\.stem"):
        quantize_model(yolov6n, exclude=["backbone.stm"])
    qmodel = quantize_model(yolov6n)
    with pytest.raises(ConfigError, match="unknown layer 'detect.cls_pred.0'"):
        set_layer_enabled(qmodel, "detect.cls_pred.0", True)
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_model(qmodel)


def test_enable_disable_layers(yolov6n, sample):
    qmodel = quantize_model(yolov6n)
    with pytest.raises(ConfigError, match="uncalibrated"):
        set_layer_enabled(qmodel, "detect.cls_preds.0", True)
    calibrate(qmodel, [sample], method="max")
    disable_all(qmodel)
    set_layer_enabled(qmodel, ["detect.cls_preds.0", "detect.reg_preds"], True)  # a name and a parent name
    enabled = [n for n, m in quant_layers(qmodel).items() if m.input_quantizer.state.value == "enabled"]
    assert enabled == ["detect.cls_preds.0", "detect.reg_preds.0", "detect.reg_preds.1", "detect.reg_preds.2"]
    enable_all(qmodel)
    assert all(m.weight_quantizer.state.value == "enabled" for m in quant_layers(qmodel).values())
    keep_float(qmodel, ["detect.reg_preds"])  # from any state: all enabled but these
    disabled = [n for n, m in quant_layers(qmodel).items() if m.input_quantizer.state.value == "disabled"]
    assert disabled == ["detect.reg_preds.0", "detect.reg_preds.1", "detect.reg_preds.2"]


def test_save_load_quantized_round_trip(yolov6n, sample, tmp_path):
    qmodel = quantize_model(yolov6n, exclude=["backbone.stem"])
    calibrate(qmodel, [sample], method="percentile", percentile=99.9)
    set_layer_enabled(qmodel, "detect.cls_preds.1", False)
    path = save_quantized(qmodel, tmp_path / "q.safetensors", calibration={"method": "percentile"})
    loaded = load_quantized(path)
    assert loaded.form == "quantized" and list(quant_layers(loaded)) == list(quant_layers(qmodel))
    assert _signature(loaded) == _signature(qmodel) and any(unsigned for unsigned, _ in _signature(qmodel).values())
    assert any(output for _, output in _signature(qmodel).values())
    assert float_layers(loaded) == float_layers(qmodel)
    with torch.no_grad():
        assert torch.equal(loaded(sample), qmodel(sample))
    meta = read_metadata(path)
    assert meta["form"] == "quantized" and meta["user"]["calibration"] == {"method": "percentile"}
    assert meta["user"]["quantization"]["excluded_layers"] == ["backbone.stem.rbr_reparam"]
    assert meta["user"]["quantization"]["disabled_layers"] == [n for n in quant_layers(qmodel) if "cls_preds.1" in n]


def test_load_quantized_refuses_float_checkpoints_and_save_needs_calibration(yolov6n, tmp_path):
    path = save_checkpoint(yolov6n, tmp_path / "f.safetensors")
    with pytest.raises(CheckpointError, match="not a quantized checkpoint"):
        load_quantized(path)
    with pytest.raises(ConfigError, match="not calibrated"):
        save_quantized(quantize_model(yolov6n), tmp_path / "q.safetensors")


def _signature(qmodel: nn.Module) -> dict[str, tuple[bool, bool]]:
    """Per layer: (input quantizer unsigned, output quantizer used and enabled)."""
    return {
        name: (
            layer.input_quantizer.is_unsigned,
            layer.quantize_output and layer.output_quantizer.state.value == "enabled",
        )
        for name, layer in quant_layers(qmodel).items()
    }


class _Tiny(nn.Module):
    """conv -> ReLU, conv -> SiLU, conv -> Identity -> ReLU, conv -> output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.relu_a = nn.Conv2d(3, 4, 1), nn.ReLU()
        self.b, self.silu = nn.Conv2d(4, 4, 1), nn.SiLU()
        self.c, self.same, self.relu_c = nn.Conv2d(4, 4, 1), nn.Identity(), nn.ReLU(inplace=True)
        self.d = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.silu(self.b(self.relu_a(self.a(x))))
        return self.d(self.relu_c(self.same(self.c(x))))


def test_relu_fed_convs_hand_built():
    model = _Tiny().train()
    assert relu_fed_convs(model) == {"a", "c"}
    assert model.training  # the mode is restored
    model.a = QuantConv2d.from_conv(model.a)  # a wrapped conv is found by its wrapper's name
    assert relu_fed_convs(model) == {"a", "c"}


def test_output_quantizers_are_the_head_convs_before_silu(yolov6n):
    qmodel = quantize_model(yolov6n)
    with_output = {name for name, layer in quant_layers(qmodel).items() if layer.quantize_output}
    head = {f"detect.{part}.{i}.block.conv" for part in ("stems", "cls_convs", "reg_convs") for i in range(3)}
    assert with_output == head  # no backbone / neck conv (all before a ReLU), no prediction conv (functional ops)
    assert not any(
        layer.quantize_output for layer in quant_layers(quantize_model(yolov6n, quantize_outputs=False)).values()
    )
    # each of those convs is read by its block's SiLU, now a QuantSiLU bound to the conv's output quantizer
    silus = {name: m for name, m in qmodel.named_modules() if isinstance(m, QuantSiLU)}
    assert set(silus) == {name.replace(".conv", ".act") for name in head}
    assert all(silus[n.replace(".conv", ".act")]._source[0] is quant_layers(qmodel)[n].output_quantizer for n in head)
    assert not any(isinstance(m, QuantSiLU) for m in quantize_model(yolov6n, quantize_outputs=False).modules())
    assert not any(isinstance(m, QuantSiLU) for m in yolov6n.modules())  # the float model is untouched


def test_for_flavour(yolov6n, sample):
    qmodel = quantize_model(yolov6n)
    calibrate(qmodel, [sample], method="max")
    before = _signature(qmodel)
    assert any(unsigned for unsigned, _ in before.values()) and any(output for _, output in before.values())
    trt = for_flavour(qmodel, "trt")
    layers = quant_layers(trt)
    assert not any(q.is_unsigned for layer in layers.values() for q in layer.quantizers().values())
    assert all(layer.output_quantizer.state.value != "enabled" for layer in layers.values())
    assert all(layer.input_quantizer.state.value == "enabled" for layer in layers.values())
    assert _signature(qmodel) == before  # the original is untouched
    ort = for_flavour(qmodel, "ort")
    assert ort is not qmodel and _signature(ort) == before
    with torch.no_grad():
        assert torch.equal(ort(sample), qmodel(sample)) and not torch.equal(trt(sample), qmodel(sample))
    silus = [m for m in trt.modules() if isinstance(m, QuantSiLU)]  # TensorRT fuses the SiLU itself: float gates
    assert (
        silus and not any(m.active for m in silus) and all(m.active for m in ort.modules() if isinstance(m, QuantSiLU))
    )
    own = {id(layer.output_quantizer) for layer in quant_layers(trt).values()}
    assert all(id(m._source[0]) in own for m in silus)  # deepcopy keeps each bound to its own copy's quantizer
    with pytest.raises(ConfigError, match="'ort' or 'trt'"):
        for_flavour(qmodel, "bogus")
