"""YOLOv9 and GELAN (plus yolov7-af and yolov9-cf of the same repository), state_dict-compatible with the official code.

Paper: "YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information" (arXiv:2402.13616).
Reference: https://github.com/WongKinYiu/yolov9 (commit 5b1ea9a). Every model is the layer table of one official
``models/detect/*.yaml`` (:mod:`.yolov9_tables`), built by the shared layer-table builder (:mod:`._graph`), so
official weights load with ``load_state_dict(strict=True)``.

Deploy form. A YOLOv9-X model is trained with PGI: an auxiliary reversible branch (CBLinear/CBFuse, Silence)
and an auxiliary head feed the first half of a ``DualDDetect``. At inference only the main branch counts, so
:func:`yolodeploy.reparameterize_model` first converts the model to its GELAN form (:func:`to_gelan`: the
auxiliary layers are found from the graph itself and dropped, the main head becomes a ``DDetect``), then fuses
every RepConvN and Conv-BN, giving exactly the official ``gelan-X`` fused layout. Other options:

* ``to_gelan(model)``: the GELAN model, unfused (the layout of the official notebook's converted checkpoints);
* ``create_model("yolov9-t", keep_auxiliary=True)``: re-parameterization fuses the blocks in place and keeps
  the auxiliary branch (official ``Model.fuse()`` on the training model); ``reparameterize_model(model.model)``
  does the same to the bare layer sequence.

Example:
    >>> from yolodeploy import reparameterize_model
    >>> from yolodeploy.models import create_model
    >>> model = create_model("yolov9-t").eval()
    >>> deploy = reparameterize_model(model)  # fused gelan-t
    >>> predictions = deploy(torch.rand(1, 3, 640, 640))  # (1, 8400, 84): xyxy pixels + 80 scores
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.layers import make_activation
from ..core.layers_v9 import (
    ELAN1,
    MP,
    SP,
    SPPCSPC,
    SPPELAN,
    AConv,
    ADown,
    CBFuse,
    CBLinear,
    Concat,
    Conv,
    DDetect,
    Detect,
    DualDDetect,
    RepNCSPELAN4,
    Silence,
    TripleDDetect,
)
from ._base import ConfigMixin, Detector
from ._graph import BuildContext, Kind, LayerSpec, ModuleSpec, build_layers, run_layers, saved_indices
from ._registry import register_model, register_model_class
from .yolov9_tables import TABLES

__all__ = [
    "YOLOv9Config",
    "YOLOv9",
    "MODULES",
    "MODEL_CFGS",
    "gelan_config",
    "to_gelan",
    "model_from_official_yaml",
    "config_from_official_yaml",
    "registered_name",
]

# The module names a YOLOv9 layer table may use (official spelling) and how each maps channels.
MODULES: dict[str, ModuleSpec] = {
    "Conv": ModuleSpec(Conv, Kind.CONV, takes_activation=True),
    "AConv": ModuleSpec(AConv, Kind.CONV, takes_activation=True),
    "ADown": ModuleSpec(ADown, Kind.CONV, takes_activation=True),
    "ELAN1": ModuleSpec(ELAN1, Kind.CONV, takes_activation=True),
    "RepNCSPELAN4": ModuleSpec(RepNCSPELAN4, Kind.CONV, takes_activation=True),
    "SPPELAN": ModuleSpec(SPPELAN, Kind.CONV, takes_activation=True),
    "SPPCSPC": ModuleSpec(SPPCSPC, Kind.CONV_REPEAT, takes_activation=True),
    "Concat": ModuleSpec(Concat, Kind.CONCAT),
    "nn.Upsample": ModuleSpec(nn.Upsample, Kind.SAME),
    "MP": ModuleSpec(MP, Kind.SAME),
    "SP": ModuleSpec(SP, Kind.SAME),
    "Silence": ModuleSpec(Silence, Kind.SAME),
    "CBLinear": ModuleSpec(CBLinear, Kind.LINEAR_SPLIT),
    "CBFuse": ModuleSpec(CBFuse, Kind.FUSE),
    "Detect": ModuleSpec(Detect, Kind.DETECT, takes_activation=True),
    "DDetect": ModuleSpec(DDetect, Kind.DETECT, takes_activation=True),
    "DualDDetect": ModuleSpec(DualDDetect, Kind.DETECT, takes_activation=True),
    "TripleDDetect": ModuleSpec(TripleDDetect, Kind.DETECT, takes_activation=True),
}
NUM_CLASSES_ARG = "nc"  # placeholder in layer-table args for the number of classes
_IMAGE = -1  # absolute "source" of the first layer: the input image
_OFFICIAL_ACTIVATIONS = {"SiLU()": "silu", "ReLU()": "relu", "LeakyReLU(0.1)": "leaky_relu", "Hardswish()": "hardswish"}


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass
class YOLOv9Config(ConfigMixin):
    """Architecture of one YOLOv9-family model: the data of an official yaml.

    Attributes:
        layers: the layer table, rows ``(from, repeats, module, args)`` (see :mod:`.yolov9_tables`); module
            names are keys of :data:`MODULES`, ``"nc"`` in args is replaced by ``num_classes``.
        depth_multiple: scales repeats (``max(round(n * d), 1)`` for n > 1).
        width_multiple: scales each layer's output channels (rounded up to a multiple of 8).
        activation: activation of every Conv / RepConvN (the yaml's ``activation``; SiLU by default).
        num_classes: number of classes.
        strides: stride of each detection level.
        input_size: the (height, width) the official model is trained at.
        keep_auxiliary: re-parameterization fuses a PGI model in place, keeping its auxiliary branch, instead of
            converting it to GELAN.
    """

    layers: tuple[tuple[Any, ...], ...]
    depth_multiple: float = 1.0
    width_multiple: float = 1.0
    activation: str = "silu"
    num_classes: int = 80
    strides: tuple[int, ...] = (8, 16, 32)
    input_size: tuple[int, int] = (640, 640)
    keep_auxiliary: bool = False

    def __post_init__(self) -> None:
        self.layers = _as_tuples(self.layers)
        self.strides, self.input_size = tuple(self.strides), tuple(self.input_size)
        if not self.layers:
            raise ValueError("YOLOv9Config.layers is empty")
        unknown = sorted({row[2] for row in self.layers} - set(MODULES))
        if unknown:
            raise ValueError(f"YOLOv9Config.layers uses unknown modules {unknown}; known: {', '.join(MODULES)}")
        if MODULES[self.layers[-1][2]].kind is not Kind.DETECT:
            raise ValueError(f"the last layer must be a detection head, got {self.layers[-1][2]!r}")
        make_activation(self.activation)  # raises ValueError naming the valid ones
        if self.num_classes < 1:
            raise ValueError(f"YOLOv9Config.num_classes must be positive, got {self.num_classes}")


def _build_context(config: YOLOv9Config) -> BuildContext:
    return BuildContext(
        MODULES,
        config.depth_multiple,
        config.width_multiple,
        config.activation,
        num_outputs=3 * (config.num_classes + 5),  # the official parse_model's "no" (anchors: 3): never scaled
        extra_detect_args={"strides": config.strides},
    )


def _layer_specs(config: YOLOv9Config) -> list[LayerSpec]:
    def arg(value: Any) -> Any:
        return config.num_classes if value == NUM_CLASSES_ARG else value

    return [LayerSpec.of((source, n, module, [arg(a) for a in args])) for source, n, module, args in config.layers]


@register_model_class
class YOLOv9(Detector):
    """A YOLOv9-family detector: the layer sequence ``model`` (keys ``model.{i}.*``, as the official).

    Forward, eval mode: (B, N, 4 + C), boxes xyxy in input pixels then sigmoid class scores, N anchor points
    ordered level, row, column; for a PGI model (DualDDetect) the main branch's prediction (what its GELAN
    form returns), for yolov9-cf (TripleDDetect) the third branch's. Forward, training mode: the official raw
    head outputs (per-level maps; a list of them per branch for multi-branch heads). In any mode,
    :meth:`forward_raw` gives every branch's pre-activation (B, 4 * 16 + C, H, W) maps and
    :meth:`forward_features` the maps the inference branch reads.

    Args:
        config: the architecture.
        arch: the registered variant name (for reporting and checkpoints).
    """

    config_class = YOLOv9Config

    def __init__(self, config: YOLOv9Config, arch: str | None = None) -> None:
        super().__init__(config, arch)
        layers, _ = build_layers(_layer_specs(config), _build_context(config))
        self._set_layers(layers)

    def _set_layers(self, layers: list[nn.Module]) -> None:
        self.model = nn.Sequential(*layers)
        self.save = saved_indices(layers)

    @property
    def head(self) -> Detect:
        """The detection head (the last layer)."""
        return self.model[-1]

    def _head_inputs(self, x: Tensor) -> list[Tensor]:
        """Run every layer but the head; return the head's inputs."""
        x, outputs = run_layers(self.model[:-1], x, self.save)
        sources = self.head.f if isinstance(self.head.f, tuple) else (self.head.f,)
        return [x if j == -1 else outputs[j] for j in sources]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The feature maps (P3, P4, P5) the inference branch of the head reads."""
        return self.head.branch_inputs(self._head_inputs(x), -1)

    def forward_raw(self, x: Tensor) -> list[list[Tensor]]:
        """Per head branch (official order: auxiliary first, inference branch last), per level, the
        pre-activation (B, 4 * 16 + C, H, W) maps: 16 DFL bin logits per side (l, t, r, b), then class logits."""
        return self.head.forward_raw(self._head_inputs(x))

    def forward(self, x: Tensor) -> Tensor | list:
        return self.head(self._head_inputs(x))

    def reparameterize(self) -> None:
        """Structural deploy step, run by ``reparameterize_model`` before the block fusion: a PGI model
        (DualDDetect head) becomes its GELAN form in place, unless ``config.keep_auxiliary``. Idempotent."""
        if isinstance(self.head, DualDDetect) and not self.config.keep_auxiliary:
            _convert_to_gelan_(self)


# --- training form -> GELAN -------------------------------------------------------------------------------------


def _absolute_sources(rows: list[LayerSpec]) -> list[tuple[int, ...]]:
    """Each row's inputs as absolute layer indices (``_IMAGE`` for the first layer's -1)."""
    out = []
    for index, row in enumerate(rows):
        sources = row.source if isinstance(row.source, tuple) else (row.source,)
        out.append(tuple(_IMAGE if index == 0 and s == -1 else (s if s >= 0 else index + s) for s in sources))
    return out


def _ancestors(start: tuple[int, ...], sources: list[tuple[int, ...]]) -> set[int]:
    seen: set[int] = set()
    stack = [s for s in start if s != _IMAGE]
    while stack:
        index = stack.pop()
        if index not in seen:
            seen.add(index)
            stack.extend(s for s in sources[index] if s != _IMAGE)
    return seen


def _droppable_silences(rows: list[LayerSpec], sources: list[tuple[int, ...]], kept: set[int]) -> dict[int, int]:
    """Kept Silence layers that can go, mapped to the layer (or image) they pass through.

    A Silence is an identity; a later layer can read its input instead, except that only the first layer of a
    table can read the image: a Silence passing the image on to any other kept layer has to stay (GELAN-E).
    """
    dropped: dict[int, int] = {}
    for index in sorted(kept):
        if rows[index].module != "Silence":
            continue
        origin = sources[index][0]
        origin = dropped.get(origin, origin)
        readers = {j for j in kept if index in sources[j]}
        first_left = min(kept - set(dropped) - {index})
        if origin != _IMAGE or readers <= {first_left}:
            dropped[index] = origin
    return dropped


def _single_branch_head(module: str) -> str:
    """The single-branch head module matching a multi-branch one (DualDDetect -> DDetect)."""
    head = MODULES[module].factory
    for name, spec in MODULES.items():
        factory = spec.factory
        if (
            spec.kind is Kind.DETECT
            and factory.num_branches == 1
            and factory.grouped_box_convs == head.grouped_box_convs
        ):
            return name
    raise ValueError(f"no single-branch counterpart of {module}")


def gelan_config(config: YOLOv9Config) -> tuple[YOLOv9Config, tuple[int, ...]]:
    """The GELAN architecture inside a multi-branch (PGI) config, derived from the layer graph alone.

    The head's inference branch (its last group of inputs) is what a deployed model computes: the kept layers are
    exactly those it depends on (Silence layers that only pass the image along are dropped too), in their
    original order; the auxiliary branch and auxiliary head, needed only by the other input groups, are dropped.
    Sources are renumbered (relative ones stay relative) and the head becomes its single-branch counterpart.

    Returns:
        ``(gelan_config, kept)``: ``kept[j]`` is the index in ``config.layers`` of GELAN layer ``j``.
        A single-branch config comes back unchanged.

    Example:
        >>> gelan, kept = gelan_config(MODEL_CFGS["yolov9_m"])  # == MODEL_CFGS["gelan_m"]'s table; kept[0] == 1
    """
    rows = [LayerSpec.of(row) for row in config.layers]
    head_index = len(rows) - 1
    branches = MODULES[rows[-1].module].factory.num_branches
    if branches == 1:
        return config, tuple(range(len(rows)))
    sources = _absolute_sources(rows)
    main = sources[head_index][-(len(sources[head_index]) // branches) :]
    kept = _ancestors(main, sources)
    dropped = _droppable_silences(rows, sources, kept)
    order = sorted(kept - set(dropped)) + [head_index]
    new_index = {old: new for new, old in enumerate(order)}

    def renumber(new: int, original: int, target: int) -> int:
        target = dropped.get(target, target)
        if target == _IMAGE:
            if new != 0:
                raise ValueError(f"layer {new} of the GELAN form would read the image")
            return -1
        return new_index[target] - new if original < 0 else new_index[target]

    table = []
    for new, old in enumerate(order):
        row, old_sources = rows[old], sources[old]
        originals = row.source if isinstance(row.source, tuple) else (row.source,)
        if old == head_index:
            originals, old_sources = originals[-len(main) :], main
        renumbered = tuple(renumber(new, o, t) for o, t in zip(originals, old_sources))
        source = renumbered if isinstance(row.source, tuple) else renumbered[0]
        module = _single_branch_head(row.module) if old == head_index else row.module
        table.append((source, row.repeats, module, row.args))
    return dataclasses.replace(config, layers=tuple(table)), tuple(order)


def _layout(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def _convert_to_gelan_(model: YOLOv9) -> None:
    """Turn ``model`` into its GELAN form in place: the kept layers move onto the GELAN layer table, each checked
    to have exactly the state_dict layout (names, shapes) of the GELAN layer it becomes."""
    config, kept = gelan_config(model.config)
    with torch.device("meta"):
        skeleton = YOLOv9(config)  # the target layer table: a layout to match, no weights
    layers = []
    for new, old in enumerate(kept):
        target, source = skeleton.model[new], model.model[old]
        expected = _layout(target)
        if new == len(kept) - 1:
            # the head: the inference branch's modules take the single-branch names (cv4 -> cv2, dfl2 -> dfl, ...)
            names = zip(target.branch_names(0), source.branch_names(source.inference_branch))
            for target_name, source_name in names:
                setattr(target, target_name, getattr(source, source_name))
            source = target.train(source.training)
        if _layout(source) != expected:
            raise RuntimeError(f"layer {old} does not fit GELAN layer {new} ({type(target).__name__})")
        source.i, source.f = target.i, target.f
        layers.append(source)
    model._set_layers(layers)
    model.config = config
    model.arch = registered_name(config) or f"{model.arch}-gelan"


def to_gelan(model: YOLOv9) -> YOLOv9:
    """The GELAN (deploy architecture) form of a PGI training model, unfused; the input is left untouched.

    For yolov9-X its state_dict is that of the official gelan-X after ``tools/reparameterization.ipynb``; its
    eval output equals the training model's main-branch output. A single-branch model comes back as a copy.

    Example:
        >>> gelan = to_gelan(create_model("yolov9-c"))  # gelan.arch == "gelan_c"
    """
    if not isinstance(model, YOLOv9):
        raise TypeError(f"to_gelan expects a YOLOv9 model, got {type(model).__name__}")
    model = copy.deepcopy(model)
    if model.head.num_branches > 1:
        _convert_to_gelan_(model)
    return model


# --- configs ------------------------------------------------------------------------------------------------------


def _cfg(table: str, **kwargs) -> YOLOv9Config:
    return YOLOv9Config(layers=TABLES[table], **kwargs)


MODEL_CFGS: dict[str, YOLOv9Config] = {
    **{name: _cfg(name) for name in TABLES if name not in ("yolov9", "gelan")},
    "yolov9": _cfg("yolov9", activation="relu"),
    "gelan": _cfg("gelan", activation="relu"),
}


def _normalized(config: YOLOv9Config) -> tuple:
    rows = [LayerSpec.of(row) for row in config.layers]
    layers = tuple((sources, row.repeats, row.module, row.args) for row, sources in zip(rows, _absolute_sources(rows)))
    return layers, config.depth_multiple, config.width_multiple, config.activation, config.strides


def registered_name(config: YOLOv9Config) -> str | None:
    """The registered model whose architecture ``config`` describes (any number of classes), or None."""
    target = _normalized(config)
    return next((name for name, known in MODEL_CFGS.items() if _normalized(known) == target), None)


def _parse_activation(text: Any) -> str | None:
    """An official ``activation`` entry (``"nn.ReLU()"``) as our activation name, without evaluating it."""
    if text is None:
        return "silu"
    match = re.fullmatch(r"(?:torch\.)?nn\.(.+)", str(text).replace(" ", ""))
    return _OFFICIAL_ACTIVATIONS.get(match.group(1)) if match else None


def _parse_arg(value: Any) -> Any:
    """A yaml arg as the official ``eval`` would read it, for the few names layer tables use."""
    return {"None": None, "True": True, "False": False}.get(value, value) if isinstance(value, str) else value


def config_from_official_yaml(yaml: dict, num_classes: int) -> YOLOv9Config | None:
    """Our config for an official YOLOv9-repository model yaml (as recorded on pickled models), or None when
    it uses modules this family does not have (e.g. YOLOv7's IDetect/RepConv) or anchor boxes."""
    rows = list(yaml.get("backbone") or []) + list(yaml.get("head") or [])
    if not rows or isinstance(yaml.get("anchors"), (list, tuple)) or yaml.get("ch", 3) != 3:
        return None
    activation = _parse_activation(yaml.get("activation"))
    if activation is None:
        return None
    table = []
    for row in rows:
        if not isinstance(row, (list, tuple)) or len(row) != 4 or row[2] not in MODULES:
            return None
        source, repeats, module, args = row
        table.append((source, repeats, module, tuple(_parse_arg(a) for a in args)))
    if MODULES[table[-1][2]].kind is not Kind.DETECT or len(table[-1][3]) != 1:
        return None
    config = YOLOv9Config(
        layers=tuple(table),
        depth_multiple=float(yaml.get("depth_multiple", 1.0)),
        width_multiple=float(yaml.get("width_multiple", 1.0)),
        activation=activation,
        num_classes=num_classes,
    )
    return dataclasses.replace(config, strides=_measure_strides(config))


def _measure_strides(config: YOLOv9Config, size: int = 256) -> tuple[int, ...]:
    """Stride of each head level, measured as the official builder does: one forward pass (here on meta)."""
    head = LayerSpec.of(config.layers[-1])
    sources = head.source if isinstance(head.source, tuple) else (head.source,)
    levels = len(sources) // MODULES[head.module].factory.num_branches
    probe = dataclasses.replace(config, strides=tuple(2 ** (3 + level) for level in range(levels)))
    with torch.device("meta"):
        features = YOLOv9(probe).forward_features(torch.zeros(1, 3, size, size))
    return tuple(size // feature.shape[-1] for feature in features)


def model_from_official_yaml(yaml: dict, num_classes: int) -> YOLOv9 | None:
    """Hook of the official-checkpoint importer: the model an official yaml describes, or None if not YOLOv9's.

    ``arch`` is the registered name with the same architecture, else ``"yolov9-custom"``.

    Example:
        >>> model = model_from_official_yaml(record.yaml, num_classes=80)
    """
    config = config_from_official_yaml(yaml, num_classes)
    if config is None:
        return None
    return YOLOv9(config, arch=registered_name(config) or "yolov9-custom")


def _create_yolov9(variant: str, **kwargs) -> YOLOv9:
    return YOLOv9(dataclasses.replace(MODEL_CFGS[variant], **kwargs), arch=variant)


@register_model
def yolov9_t(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9_t", **kwargs)


@register_model
def yolov9_s(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9_s", **kwargs)


@register_model
def yolov9_m(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9_m", **kwargs)


@register_model
def yolov9_c(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9_c", **kwargs)


@register_model
def yolov9_e(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9_e", **kwargs)


@register_model
def gelan_t(**kwargs) -> YOLOv9:
    return _create_yolov9("gelan_t", **kwargs)


@register_model
def gelan_s(**kwargs) -> YOLOv9:
    return _create_yolov9("gelan_s", **kwargs)


@register_model
def gelan_m(**kwargs) -> YOLOv9:
    return _create_yolov9("gelan_m", **kwargs)


@register_model
def gelan_c(**kwargs) -> YOLOv9:
    return _create_yolov9("gelan_c", **kwargs)


@register_model
def gelan_e(**kwargs) -> YOLOv9:
    return _create_yolov9("gelan_e", **kwargs)


@register_model
def yolov9(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9", **kwargs)


@register_model
def gelan(**kwargs) -> YOLOv9:
    return _create_yolov9("gelan", **kwargs)


@register_model
def yolov9_cf(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov9_cf", **kwargs)


@register_model
def yolov7_af(**kwargs) -> YOLOv9:
    return _create_yolov9("yolov7_af", **kwargs)
