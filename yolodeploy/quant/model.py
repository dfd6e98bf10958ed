"""The quantized detector: every conv of the deploy form wrapped in a ``QuantConv2d`` (issue 6 item 1).

YOLOv6 paper §2.5 / §3.5: post-training quantization of the re-parameterized (deploy) network, int8 symmetric
per-channel weights (axis 0) and int8 per-tensor activations at every conv input. What stays float by default:

* the DFL projection (YOLOv6 ``detect.proj_conv``, YOLOv9/GELAN ``DFL.conv``): a fixed 0..16 expectation over a
  softmax, tiny, and quantizing its probabilities costs box accuracy for no speed;
* the score sigmoid, box decoding and NMS (they are not convs, so nothing wraps them).

**Where a quantized tensor flows through Concat / MaxPool / Upsample (Resize) / Add**, no quantizer is placed on
the op itself: each consumer conv quantizes its own input, so the exported graph has a Q/DQ pair at every conv
input and the ops in between run on the float (dequantized-equivalent) values. That is enough for correctness
(ONNX Runtime and the fake-quant model compute the same thing). For speed TensorRT wants those neighbourhoods to
share one scale, and :func:`yolodeploy.deploy.qdq_passes.tie_scales` makes them consistent on the exported graph
(rule-based: Concat inputs/output share one scale, MaxPool/Resize pass their input's scale through, residual
Add inputs agree); :mod:`yolodeploy.quant.export` runs it.

**Conv outputs (ONNX Runtime).** ORT runs a conv in int8 only as DQ -> Conv -> [Relu] -> Q. A conv followed
by a ReLU gets that Q from its consumers' input quantizers (unsigned after the ReLU, see
:mod:`yolodeploy.quant.quantizer`); every other conv (before a SiLU, the prediction convs) also quantizes its
output where another activation module reads it (a SiLU; ``quantize_outputs=True``, found by tracing one
forward pass), and that SiLU becomes a ``QuantSiLU`` whose sigmoid gate is uint8 (fixed scale 1/255), so ORT
runs the whole activation in int8 (QLinearSigmoid + QLinearMul). Prediction convs (read by functional
sigmoid / DFL ops) keep float outputs.
:func:`for_flavour` gives the TensorRT form (signed everywhere, no output quantizers: TensorRT fuses the
activation itself and places its own output quantization).

Layer names are module names of the ``QuantConv2d`` modules (= the names of the convs they replaced), e.g.
``backbone.stem.rbr_reparam`` (YOLOv6) or ``model.0.conv`` (YOLOv9). Wherever a name is accepted, the name of
the conv's parent (``backbone.stem``) also selects the convs directly inside it.

Example:
    >>> qmodel = quantize_model(create_model("yolov6n"), exclude=["detect.cls_preds.0"])
    >>> calibrate(qmodel, calibration_batches(calibration_images("data/"), 640))
    >>> save_quantized(qmodel, "yolov6n_int8.safetensors", calibration={"method": "entropy"})
"""

from __future__ import annotations

import copy
import difflib
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.reparam import reparameterize_model
from ..errors import CheckpointError, ConfigError
from .quantizer import QuantConv2d, QuantSiLU

__all__ = [
    "QUANTIZED_FORM",
    "quantize_model",
    "quant_layers",
    "float_layers",
    "dfl_convs",
    "resolve_layer_names",
    "set_layer_enabled",
    "enable_all",
    "disable_all",
    "save_quantized",
    "load_quantized",
    "quantized_model_from_metadata",
    "relu_fed_convs",
    "for_flavour",
]

QUANTIZED_FORM = "quantized"


def dfl_convs(model: nn.Module) -> list[str]:
    """Names of the DFL projection convs (YOLOv6 heads' ``proj_conv``, the ``conv`` of every ``DFL`` module)."""
    names = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(getattr(module, "proj_conv", None), (nn.Conv2d, QuantConv2d)):
            names.append(prefix + "proj_conv")
        elif type(module).__name__ == "DFL" and isinstance(getattr(module, "conv", None), (nn.Conv2d, QuantConv2d)):
            names.append(prefix + "conv")
    return names


def _close_matches(name: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f"did you mean {', '.join(matches)}?" if matches else f"e.g. {', '.join(candidates[:3])}"


def resolve_layer_names(names: Iterable[str], candidates: Iterable[str]) -> list[str]:
    """Map layer names (a conv's name, or its parent's: then every candidate directly inside it) to candidates.

    Raises:
        ConfigError: a name that matches nothing (the message lists close matches).
    """
    candidates = list(candidates)
    known, resolved = set(candidates), []
    for name in [names] if isinstance(names, str) else names:
        hits = [name] if name in known else [c for c in candidates if c.rpartition(".")[0] == name]
        if not hits:
            raise ConfigError(f"unknown layer {name!r}: {_close_matches(name, candidates)} (see quant_layers(model))")
        resolved += [hit for hit in hits if hit not in resolved]
    return resolved


def _conv_names(model: nn.Module) -> list[str]:
    """Names of the plain convs and ``QuantConv2d`` modules (not the float conv each of those wraps)."""
    wrapped = {id(m.conv) for m in model.modules() if isinstance(m, QuantConv2d)}
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, QuantConv2d) or (isinstance(module, nn.Conv2d) and id(module) not in wrapped)
    ]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


RELU_MODULES = {nn.ReLU, nn.ReLU6}


def relu_fed_convs(model: nn.Module, img_size: int = 64) -> set[str]:
    """Names of the convs (plain or ``QuantConv2d``) whose output a ReLU module reads, from one traced forward."""
    return {name for name, readers in conv_readers(model, img_size).items() if RELU_MODULES & readers}


def conv_readers(model: nn.Module, img_size: int = 64) -> dict[str, set[type]]:
    """For every conv (plain or ``QuantConv2d``), the module types that read its output, from one traced forward."""
    return {
        conv: {type(model.get_submodule(name)) for name in names}
        for conv, names in _trace_readers(model, img_size)[0].items()
    }


def _trace_readers(model: nn.Module, img_size: int = 64) -> tuple[dict[str, list[str]], Counter]:
    """``(readers, calls)``: per conv the names of the modules that read its output; per module name its calls.

    Module-level data flow from forward hooks on a zero image: a conv's output tensor is the very object a
    reading module receives (``nn.Identity`` in between passes the same object on). Functional ops (``torch.cat``,
    ``sigmoid``, reshapes) are not modules and are not seen. Outputs are kept alive during the trace so no
    ``id`` is reused.
    """
    names = {id(module): name for name, module in model.named_modules()}
    convs = {id(model.get_submodule(n)): n for n in _conv_names(model)}
    produced, keep, calls = {}, [], Counter()
    readers: dict[str, list[str]] = {n: [] for n in convs.values()}

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        keep.append(output)
        calls[names[id(module)]] += 1
        if args and id(args[0]) in produced and not isinstance(module, nn.Identity):
            reader = readers[produced[id(args[0])]]
            if names[id(module)] not in reader:
                reader.append(names[id(module)])
        if id(module) in convs:
            produced[id(output)] = convs[id(module)]

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, img_size, img_size, device=_device(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return readers, calls


def _output_quantized_convs(model: nn.Module) -> dict[str, str | None]:
    """Convs whose output an activation module other than ReLU reads (e.g. SiLU): they get output quantizers.

    A conv read by a ReLU gets its Q from its consumers (after the ReLU); a conv whose output only flows into
    functional ops (the prediction convs before sigmoid / DFL softmax) stays float-output: quantizing logits
    costs accuracy, and those 1x1 convs are too small for int8 to matter.

    Returns:
        ``{conv name: name of the nn.SiLU to replace by a QuantSiLU, or None}``: the SiLU is named when it is the
        conv's only reader and runs once per forward (a shared activation module is left alone).
    """
    readers, calls = _trace_readers(model)
    found: dict[str, str | None] = {}
    for conv, names in readers.items():
        types = {type(model.get_submodule(name)) for name in names}
        if not names or types & RELU_MODULES:
            continue
        only = names[0] if len(names) == 1 else None
        silu = only if only and type(model.get_submodule(only)) is nn.SiLU and calls[only] == 1 else None
        found[conv] = silu
    return found


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def quantize_model(
    model: nn.Module,
    *,
    exclude: Iterable[str] = (),
    quantize_dfl: bool = False,
    quantize_outputs: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """The deploy form of ``model`` with every ``nn.Conv2d`` replaced by a ``QuantConv2d``.

    Weight amax is set (per-channel max); input quantizers are uncalibrated and every quantizer is disabled, so
    the result computes exactly what the deploy model does until :func:`yolodeploy.quant.calibrate.calibrate`
    (or loaded amax + :func:`enable_all`) turns quantization on.

    Args:
        model: a zoo detector in train or deploy form (re-parameterized here unless ``model.form == "deploy"``).
        exclude: layers to keep float (conv names or their parents' names, see :func:`quant_layers`).
        quantize_dfl: also quantize the DFL projection conv (float by default).
        quantize_outputs: give every quantized conv whose output an activation other than ReLU reads (a SiLU)
            an output quantizer, and replace that SiLU by a ``QuantSiLU`` (uint8 sigmoid gate), for ONNX
            Runtime's int8 kernels (:func:`for_flavour` drops both for TensorRT).
        inplace: modify ``model`` instead of a copy.

    Returns:
        The quantized model, in eval mode, with ``form == "quantized"`` and the excluded names in
        ``quant_excluded``.

    Raises:
        ConfigError: the model is already quantized, or ``exclude`` names an unknown layer.

    Example:
        >>> qmodel = quantize_model(create_model("yolov6n"), exclude=["backbone.stem"])
    """
    if getattr(model, "form", None) == QUANTIZED_FORM or quant_layers(model):
        raise ConfigError("the model is already quantized; pass its float (train or deploy) form")
    if not inplace:
        model = copy.deepcopy(model)
    if getattr(model, "form", None) != "deploy":
        model = reparameterize_model(model.eval(), inplace=True)
    convs = _conv_names(model)
    excluded = resolve_layer_names(exclude, convs)
    keep_float = set(excluded) | (set() if quantize_dfl else set(dfl_convs(model)))
    output_quantized = _output_quantized_convs(model) if quantize_outputs else {}
    for name in convs:
        if name not in keep_float:
            layer = QuantConv2d.from_conv(model.get_submodule(name))
            layer.quantize_output = name in output_quantized
            _set_submodule(model, name, layer)
            if output_quantized.get(name):
                _set_submodule(model, output_quantized[name], QuantSiLU(layer.output_quantizer))
    model.form = QUANTIZED_FORM
    model.quant_excluded = excluded
    model.quantize_dfl = quantize_dfl
    return model.eval()


def for_flavour(qmodel: nn.Module, flavour: str) -> nn.Module:
    """A copy of ``qmodel`` in the form a Q/DQ export flavour needs (see ``quant.export.QdqFlavour``).

    ``"ort"``: as calibrated (unsigned activations after ReLUs, output quantizers). ``"trt"``: every activation
    quantizer signed (same amax, scale ``amax / 127``) and no output quantizer, TensorRT's symmetric int8.

    Raises:
        ConfigError: an unknown flavour.
    """
    if flavour not in ("ort", "trt"):
        raise ConfigError(f"unknown Q/DQ flavour {flavour!r}: use 'ort' or 'trt'")
    model = copy.deepcopy(qmodel)
    if flavour == "trt":
        for layer in quant_layers(model).values():
            layer.input_quantizer.set_unsigned_(False)
            layer.output_quantizer.disable()
    return model


def quant_layers(model: nn.Module) -> dict[str, QuantConv2d]:
    """The ``QuantConv2d`` modules of ``model`` by module name, in module order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, QuantConv2d)}


def float_layers(model: nn.Module) -> list[str]:
    """Names of the plain ``nn.Conv2d`` modules left float (excluded layers and the DFL projection)."""
    return [name for name in _conv_names(model) if not isinstance(model.get_submodule(name), QuantConv2d)]


def set_layer_enabled(model: nn.Module, name: str | Iterable[str], enabled: bool) -> None:
    """Enable (fake-quantize) or disable (run float) the quantizers of one layer, or several.

    Raises:
        ConfigError: an unknown layer name (close matches named), or enabling an uncalibrated layer.
    """
    layers = quant_layers(model)
    for layer in resolve_layer_names(name, layers):
        layers[layer].enable() if enabled else layers[layer].disable()


def enable_all(model: nn.Module) -> None:
    """Enable every quantized layer (each must be calibrated)."""
    for layer in quant_layers(model).values():
        layer.enable()


def keep_float(model: nn.Module, names: Iterable[str]) -> None:
    """Enable every quantized layer except ``names``, which run float (a partially quantized model)."""
    enable_all(model)
    set_layer_enabled(model, list(names), False)


def disable_all(model: nn.Module) -> None:
    """Disable every quantized layer: the model then equals its float deploy form exactly."""
    for layer in quant_layers(model).values():
        layer.disable()


# -- checkpoint ------------------------------------------------------------------------------------------------


def save_quantized(model: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write a calibrated quantized model as a portable checkpoint (``form="quantized"``).

    The safetensors hold the float weights and every quantizer's ``amax`` buffer; the metadata (under ``user``)
    lists the quantized layers, the disabled ones, the excluded (float) layers and whatever ``**meta`` adds,
    e.g. ``calibration={"method": "entropy", "percentile": 99.99}``.

    Raises:
        ConfigError: the model is not quantized or has an uncalibrated layer.

    Example:
        >>> save_quantized(qmodel, "yolov6n_int8.safetensors", calibration={"method": "entropy"})
    """
    from ..models.checkpoint import save_checkpoint

    layers = quant_layers(model)
    if not layers:
        raise ConfigError("save_quantized needs a model from quantize_model (it has no quantized layer)")
    uncalibrated = [n for n, m in layers.items() if not m.input_quantizer.is_calibrated]
    if uncalibrated:
        raise ConfigError(f"{len(uncalibrated)} layers are not calibrated (e.g. {uncalibrated[0]}); calibrate first")
    disabled = [n for n, m in layers.items() if m.input_quantizer.state.value != "enabled"]
    quant_meta = {
        "quant_layers": list(layers),
        "disabled_layers": disabled,
        "excluded_layers": list(getattr(model, "quant_excluded", [])),
        "quantize_dfl": bool(getattr(model, "quantize_dfl", False)),
    }
    return save_checkpoint(model, path, form=QUANTIZED_FORM, quantization=quant_meta, **meta)


def quantized_model_from_metadata(meta: dict[str, Any]) -> nn.Module:
    """The (uncalibrated) quantized architecture a ``form="quantized"`` checkpoint's metadata describes."""
    from ..models.checkpoint import model_from_metadata

    quant_meta = (meta.get("user") or {}).get("quantization")
    if meta.get("form") != QUANTIZED_FORM or not isinstance(quant_meta, dict):
        raise CheckpointError(f"not a quantized checkpoint (form {meta.get('form')!r}); use load_checkpoint")
    deploy = model_from_metadata({**meta, "form": "deploy"})
    model = quantize_model(
        deploy, exclude=quant_meta.get("excluded_layers", []), quantize_dfl=quant_meta.get("quantize_dfl", False)
    )
    if list(quant_layers(model)) != list(quant_meta.get("quant_layers", [])):
        raise CheckpointError("the checkpoint's quantized layers do not match its architecture")
    return model


def load_quantized(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint written by :func:`save_quantized`: quantizers calibrated and enabled as saved.

    Raises:
        CheckpointError: not a quantized checkpoint, or weights that do not fit it.

    Example:
        >>> qmodel = load_quantized("yolov6n_int8.safetensors")
    """
    from ..models.checkpoint import _read_tensors, load_state_dict_checked, read_metadata

    meta = read_metadata(path)
    model = quantized_model_from_metadata(meta)
    state_dict = _read_tensors(Path(path), map_location)
    for name, layer in quant_layers(model).items():  # size the empty amax buffers to the stored ones
        for role, quantizer in (("input", layer.input_quantizer), ("output", layer.output_quantizer)):
            stored = state_dict.get(f"{name}.{role}_quantizer.amax")
            if stored is not None:
                quantizer.amax = torch.empty(stored.shape)
        layer.quantize_output = layer.output_quantizer.is_calibrated
    load_state_dict_checked(model, state_dict, source=str(path))
    disabled = set(meta["user"]["quantization"].get("disabled_layers", []))
    for name, layer in quant_layers(model).items():
        layer.disable() if name in disabled else layer.enable()
    return model.eval()
