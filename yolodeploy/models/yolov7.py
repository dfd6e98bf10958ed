"""YOLOv7 (tiny, base, X, W6, E6, D6, E6E), state_dict-compatible with the official code.

Paper: "YOLOv7: Trainable bag-of-freebies sets new state-of-the-art for real-time object detectors"
(arXiv:2207.02696). Reference: https://github.com/WongKinYiu/yolov7 (commit a207844).

A YOLOv7 model is a layer table ``(from, repeats, module, args)`` (the official ``cfg/*.yaml`` format, here as
Python data in :data:`MODEL_CFGS`), built by :mod:`._graph` so that every layer is ``model.{i}`` as in the
official state_dicts. The training form has the YOLOR implicit-knowledge head ``IDetect`` (and for the P6
models the auxiliary head ``IAuxDetect``); the deploy form, :func:`to_deploy_architecture`, is the official
``cfg/deploy`` model that ``tools/reparameterization.ipynb`` fills: plain ``Detect`` with the implicit knowledge
folded into its 1x1 convs, auxiliary head and the layers only it reads dropped. ``reparameterize_model``
does that conversion and then fuses Conv+BN and RepConv (the layout of the official ``Model.fuse()``).

Example:
    >>> from yolodeploy import reparameterize_model
    >>> from yolodeploy.models import create_model
    >>> model = create_model("yolov7-tiny").eval()
    >>> deploy = reparameterize_model(model)
    >>> predictions = deploy(torch.rand(1, 3, 640, 640))  # (1, 25200, 84): xyxy pixels + 80 scores
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.fuse import fold_implicit
from ..core.layers import _ACTIVATIONS
from ..core.layers_v7 import (
    MP,
    SP,
    SPPCSPC,
    Concat,
    Conv,
    Detect,
    DownC,
    IAuxDetect,
    IDetect,
    ReOrg,
    RepConv,
    Shortcut,
)
from ..errors import ArchitectureMismatchError, ConfigError
from ._base import ConfigMixin, Detector
from ._graph import BuildContext, Kind, LayerSpec, ModuleSpec, build_layers, run_layers, saved_indices
from ._registry import register_model, register_model_class

__all__ = [
    "YOLOv7Config",
    "YOLOv7",
    "MODEL_CFGS",
    "MODULES",
    "deploy_layer_table",
    "to_deploy_architecture",
    "model_from_official_yaml",
]

Row = tuple[Any, int, str, tuple]  # (from, repeats, module, args): one layer-table row

_DETECT = ModuleSpec(Detect, Kind.DETECT)
MODULES: dict[str, ModuleSpec] = {
    "Conv": ModuleSpec(Conv, Kind.CONV, takes_activation=True),
    "RepConv": ModuleSpec(RepConv, Kind.CONV, takes_activation=True),
    "DownC": ModuleSpec(DownC, Kind.CONV_REPEAT),
    "SPPCSPC": ModuleSpec(SPPCSPC, Kind.CONV_REPEAT),
    "MP": ModuleSpec(MP, Kind.SAME),
    "SP": ModuleSpec(SP, Kind.SAME),
    "ReOrg": ModuleSpec(ReOrg, Kind.SPACE_TO_DEPTH),
    "Concat": ModuleSpec(Concat, Kind.CONCAT),
    "Shortcut": ModuleSpec(Shortcut, Kind.SHORTCUT),
    "nn.Upsample": ModuleSpec(nn.Upsample, Kind.SAME),
    "Detect": _DETECT,
    "IDetect": ModuleSpec(IDetect, Kind.DETECT),
    "IAuxDetect": ModuleSpec(IAuxDetect, Kind.DETECT),
}
"""The module names a YOLOv7 layer table may use (the official names) and how each is built."""
_HEADS = ("Detect", "IDetect", "IAuxDetect")
_TRAINING_HEADS = ("IDetect", "IAuxDetect")


@dataclass
class YOLOv7Config(ConfigMixin):
    """Architecture of one YOLOv7 variant: the data of an official config file.

    Attributes:
        layers: the layer table, rows ``(from, repeats, module, args)`` with official module names (keys of
            :data:`MODULES`); the last row is the head (``IDetect``/``IAuxDetect`` in the training form,
            ``Detect`` in the deploy form) and has no args. Conv rows are ``(channels, kernel, stride)``.
        anchors: per level, anchor (w, h) pairs in pixels, flattened.
        depth_multiple: scales repeats (``max(round(n * d), 1)`` for n > 1).
        width_multiple: scales channels (rounded up to a multiple of 8).
        activation: activation of the ``Conv``/``RepConv`` rows (``"silu"``, ``"leaky_relu"`` = LeakyReLU(0.1),
            ``"relu"``); DownC/SPPCSPC always use SiLU, as in the official code.
        num_classes: number of classes.
        strides: stride of each head level in input pixels.
        input_size: the (height, width) the official model is trained at.
    """

    layers: tuple[Row, ...]
    anchors: tuple[tuple[int, ...], ...]
    depth_multiple: float = 1.0
    width_multiple: float = 1.0
    activation: str = "silu"
    num_classes: int = 80
    strides: tuple[int, ...] = (8, 16, 32)
    input_size: tuple[int, int] = (640, 640)

    def __post_init__(self) -> None:
        if not self.layers or self.layers[-1][2] not in _HEADS:
            raise ConfigError(f"YOLOv7Config.layers must end with a head row, one of {', '.join(_HEADS)}")
        unknown = sorted({row[2] for row in self.layers} - set(MODULES))
        if unknown:
            raise ConfigError(f"YOLOv7Config.layers: unknown modules {unknown}; known: {', '.join(MODULES)}")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"YOLOv7Config.activation={self.activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        if not self.anchors or len(self.strides) != len(self.anchors):
            raise ConfigError("YOLOv7Config: one stride per anchor level is needed")
        if self.num_classes < 1:
            raise ConfigError(f"YOLOv7Config.num_classes must be positive, got {self.num_classes}")

    @property
    def is_deploy_architecture(self) -> bool:
        """True when the head is the plain ``Detect`` (nothing left for :func:`to_deploy_architecture` to do)."""
        return self.layers[-1][2] not in _TRAINING_HEADS


@register_model_class
class YOLOv7(Detector):
    """YOLOv7 detector: the layer table's modules as ``model.{i}`` (the official layout), the last one the head.

    Forward, eval mode: (B, N, 4 + C), boxes xyxy in input pixels then per-class score = objectness x class
    probability; N = anchors x cells, ordered level, anchor, row, column. Forward, training mode: the official
    raw outputs, a list of per-level (B, A, H, W, 5 + C) maps (P6 training models: the lead levels, then the
    auxiliary ones). Raw lead maps in eval mode: :meth:`forward_raw`.

    Args:
        config: the architecture.
        arch: the registered variant name (for reporting and checkpoints).
    """

    config_class = YOLOv7Config

    def __init__(self, config: YOLOv7Config, arch: str | None = None) -> None:
        super().__init__(config, arch)
        anchors_per_level = len(config.anchors[0]) // 2
        context = BuildContext(
            MODULES,
            config.depth_multiple,
            config.width_multiple,
            config.activation,
            num_outputs=anchors_per_level * (config.num_classes + 5),
            extra_detect_args={"num_classes": config.num_classes, "anchors": config.anchors, "strides": config.strides},
        )
        layers, _ = build_layers([LayerSpec.of(row) for row in config.layers], context)
        self.model = nn.Sequential(*layers)
        self.save = saved_indices(layers)

    @property
    def head(self) -> Detect:
        """The detection head (the last layer)."""
        return self.model[-1]

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The maps the head consumes, in its input order (for ``IAuxDetect``: lead levels, then auxiliary)."""
        head = self.head
        last, outputs = run_layers(self.model[:-1], x, self.save)
        outputs[-1] = last
        sources = head.f if isinstance(head.f, tuple) else (head.f,)
        return [outputs[source % head.i] for source in sources]

    def forward_raw(self, x: Tensor) -> list[Tensor]:
        """Per lead level the pre-sigmoid head outputs (B, A, H, W, 5 + C), in any mode (see ``Detect.forward_raw``)."""
        return self.head.forward_raw(self.forward_features(x))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        return self.head(self.forward_features(x))

    def reparameterize(self) -> None:
        """Structural step of the deploy conversion (run first by ``reparameterize_model``): become the deploy
        architecture of :func:`to_deploy_architecture`, in place. No-op when already there."""
        if self.config.is_deploy_architecture:
            return
        deploy = _convert(self, clone=False)
        self.config, self.model, self.save = deploy.config, deploy.model, deploy.save


def deploy_layer_table(layers: Sequence[Row]) -> tuple[tuple[Row, ...], dict[int, int]]:
    """The deploy-form layer table of a training one, and the map old layer index -> new layer index.

    The head becomes a plain ``Detect`` over the lead inputs (``IAuxDetect``: the first half); every layer
    that the remaining head does not depend on (the auxiliary branch) is dropped and the ``from`` indices are
    renumbered, relative ones staying relative. This reproduces the official ``cfg/deploy`` files.
    """
    *body, (source, repeats, module, args) = layers
    if module not in _TRAINING_HEADS:
        return tuple(layers), {index: index for index in range(len(layers))}
    sources = [s % len(body) for s in (source if isinstance(source, tuple) else (source,))]
    if module == "IAuxDetect":
        sources = sources[: len(sources) // 2]
    needed, pending = set(), list(sources)
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(_inputs_of(body[index], index))
    mapping = {old: new for new, old in enumerate(sorted(needed))}
    rows = [_renumbered(body[old], old, mapping) for old in sorted(needed)]
    rows.append((tuple(mapping[s] for s in sources), repeats, "Detect", tuple(args)))
    mapping[len(body)] = len(rows) - 1
    return tuple(rows), mapping


def _inputs_of(row: Row, index: int) -> list[int]:
    """Absolute indices of the layers a row reads (none for the image)."""
    sources = row[0] if isinstance(row[0], tuple) else (row[0],)
    absolute = [index + s if s < 0 else s for s in sources]
    return [source for source in absolute if source >= 0]


def _renumbered(row: Row, old: int, mapping: dict[int, int]) -> Row:
    new = mapping[old]

    def renumber(source: int) -> int:
        if old + source < 0 and source < 0:  # the image
            return source
        target = mapping[old + source if source < 0 else source]
        return target - new if source < 0 else target

    source = row[0]
    source = tuple(map(renumber, source)) if isinstance(source, tuple) else renumber(source)
    return (source, *row[1:])


def to_deploy_architecture(model: YOLOv7) -> YOLOv7:
    """The official deploy architecture (``cfg/deploy``) holding ``model``'s weights, not yet fused.

    As ``tools/reparameterization.ipynb`` does: implicit knowledge folded into the head's 1x1 output convs
    (``W' = M W``, ``b' = M (b + W A)``), the auxiliary head of the P6 models and the layers only it reads
    dropped, the lead head kept. Weights are copied by the layer correspondence of :func:`deploy_layer_table`.
    ``reparameterize_model`` then fuses Conv+BN and RepConv. The result has ``form == "train"`` (unfused).

    Example:
        >>> deploy_unfused = to_deploy_architecture(create_model("yolov7-w6"))
    """
    if model.config.is_deploy_architecture:
        return copy.deepcopy(model)
    return _convert(model, clone=True)


def _convert(model: YOLOv7, clone: bool) -> YOLOv7:
    rows, mapping = deploy_layer_table(model.config.layers)
    config = dataclasses.replace(model.config, layers=rows)
    with torch.no_grad():
        state = _deploy_state_dict(model, mapping, clone)
    with torch.device("meta"):  # no init cost: every tensor is assigned below
        deploy = YOLOv7(config, arch=model.arch)
    deploy.load_state_dict(state, strict=True, assign=True)
    deploy.class_names = model.class_names
    return deploy.train(model.training)


def _deploy_state_dict(model: YOLOv7, mapping: dict[int, int], clone: bool) -> dict[str, Tensor]:
    head_index = len(model.model) - 1
    state = {}
    for key, tensor in model.state_dict().items():
        _, index, name = key.split(".", 2)
        if int(index) != head_index and int(index) in mapping:
            state[f"model.{mapping[int(index)]}.{name}"] = tensor.clone() if clone else tensor
    head, prefix = model.head, f"model.{mapping[head_index]}"
    state[f"{prefix}.anchors"], state[f"{prefix}.anchor_grid"] = head.anchors.clone(), head.anchor_grid.clone()
    for level, output in enumerate(head.m):
        kernel, bias = fold_implicit(output.weight, output.bias, head.ia[level].implicit, head.im[level].implicit)
        state[f"{prefix}.m.{level}.weight"], state[f"{prefix}.m.{level}.bias"] = kernel, bias
    return state


# --- official yaml (recorded in official checkpoints) -> our config -----------------------------------------

_MODULE_ALIASES = {"torch.nn.Upsample": "nn.Upsample", "Upsample": "nn.Upsample"}
_OFFICIAL_ACTIVATIONS = {
    r"nn\.SiLU\(\)": "silu",
    r"nn\.ReLU\(\)": "relu",
    r"nn\.LeakyReLU\(\s*0?\.10*\s*\)": "leaky_relu",
}


def model_from_official_yaml(yaml: dict, num_classes: int) -> YOLOv7 | None:
    """Build the model an official YOLOv7 yaml dict describes (as recorded on official checkpoints' models).

    Strings in the yaml are interpreted, never evaluated. ``model.arch`` is the registered name whose config
    (training or deploy form) has this architecture, else ``"yolov7-custom"``.

    Returns:
        The model (random init, training or deploy architecture as the yaml says), or None when the yaml is
        not a YOLOv7 one (modules or head outside :data:`MODULES`, e.g. YOLOv9's).

    Raises:
        ArchitectureMismatchError: a YOLOv7 yaml with options we cannot represent (e.g. mixed activations).

    Example:
        >>> model = model_from_official_yaml(record.yaml, num_classes=80)  # yaml dict of an official Model
        >>> model.arch
        'yolov7_tiny'
    """
    rows = list(yaml.get("backbone") or []) + list(yaml.get("head") or [])
    anchors = yaml.get("anchors")
    if not rows or not all(isinstance(row, (list, tuple)) and len(row) == 4 for row in rows):
        return None
    modules = [_MODULE_ALIASES.get(str(row[2]), str(row[2])) for row in rows]
    if any(module not in MODULES for module in modules) or modules[-1] not in _HEADS:
        return None
    if not isinstance(anchors, (list, tuple)) or not all(isinstance(level, (list, tuple)) for level in anchors):
        return None  # anchor-free heads that share the name "Detect" (YOLOv9's yolov7-af)
    layers, activations = [], set()
    for (source, repeats, _, args), module in zip(rows, modules):
        args, activation = _parse_official_args(module, list(args))
        if args is None:
            return None
        activations.update([activation] if activation else [])
        layers.append((tuple(source) if isinstance(source, (list, tuple)) else int(source), int(repeats), module, args))
    if len(activations) > 1:
        raise ArchitectureMismatchError(
            f"YOLOv7 yaml: its Conv layers mix activations {sorted(activations)}; a yolodeploy YOLOv7 model has "
            "one activation for all of them"
        )
    config = YOLOv7Config(
        layers=tuple(layers),
        anchors=tuple(tuple(level) for level in anchors),
        depth_multiple=float(yaml.get("depth_multiple", 1.0)),
        width_multiple=float(yaml.get("width_multiple", 1.0)),
        activation=activations.pop() if activations else "silu",
        num_classes=num_classes,
        strides=tuple(8 * 2**level for level in range(len(anchors))),
    )
    strides = _infer_strides(config)
    config = dataclasses.replace(config, strides=strides, input_size=(640, 640) if len(strides) == 3 else (1280, 1280))
    return YOLOv7(config, arch=_registered_name(config))


def _parse_official_args(module: str, args: list) -> tuple[tuple | None, str | None]:
    """(args as our rows hold them, activation name of a Conv/RepConv row); (None, None) if not ours."""
    args = [None if arg == "None" else arg for arg in args]
    if module in _HEADS:
        return ((), None) if args == ["nc", "anchors"] else (None, None)
    activation = None
    if module in ("Conv", "RepConv"):
        activation = _official_activation(args[5] if len(args) > 5 else True)
        args = args[:5]
        defaults = (None, 1)  # padding, groups (args 3 and 4)
        while len(args) > 3 and args[-1] == defaults[len(args) - 4]:
            args.pop()
    if any(isinstance(arg, str) and arg not in ("nearest", "bilinear") for arg in args):
        raise ArchitectureMismatchError(f"YOLOv7 yaml: cannot interpret the arguments {args} of a {module} layer")
    return tuple(args), activation


def _official_activation(value: Any) -> str:
    if value is True:
        return "silu"
    for pattern, name in _OFFICIAL_ACTIVATIONS.items():
        if isinstance(value, str) and re.fullmatch(pattern, value.strip()):
            return name
    raise ArchitectureMismatchError(
        f"YOLOv7 yaml: unsupported activation {value!r}; supported: True (SiLU), nn.SiLU(), nn.ReLU(), "
        "nn.LeakyReLU(0.1)"
    )


def _infer_strides(config: YOLOv7Config) -> tuple[int, ...]:
    """Strides of the head's lead inputs, measured as the official ``Model`` does (a 256 px probe, on meta)."""
    with torch.device("meta"):
        features = YOLOv7(config).eval().forward_features(torch.zeros(1, 3, 256, 256))
    return tuple(256 // feature.shape[-2] for feature in features[: len(config.anchors)])


def _registered_name(config: YOLOv7Config) -> str:
    fields = ("layers", "anchors", "depth_multiple", "width_multiple", "activation")
    for name, registered in MODEL_CFGS.items():
        deploy = dataclasses.replace(registered, layers=deploy_layer_table(registered.layers)[0])
        for candidate in (registered, deploy):
            if all(getattr(candidate, field) == getattr(config, field) for field in fields):
                return name
    return "yolov7-custom"


# --- the official layer tables, written with their repeated blocks --------------------------------------


class _TableWriter:
    """Appends official layer-table rows; the helpers write YOLOv7's recurring row patterns exactly as the
    official cfg files spell them (same relative ``from`` indices), so tables compare equal to parsed yamls."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, source: Any, module: str, *args: Any) -> int:
        self.rows.append((source, 1, module, tuple(args)))
        return len(self.rows) - 1

    def conv(self, channels: int, kernel: int = 1, stride: int = 1, source: Any = -1, module: str = "Conv") -> int:
        return self.add(source, module, channels, kernel, stride)

    def elan(self, split: int, mid: int, out: int, depth: int, step: int, groups: int) -> int:
        """ELAN: two 1x1 convs of the input, a chain of ``depth`` 3x3 convs on the second, concat of every
        ``step``-th chain output and both 1x1s, 1x1 fusion conv. E-ELAN (``groups=2``): two ELANs summed."""
        size = depth + 4  # rows of one ELAN
        for group in range(groups):
            self.conv(split, source=-1 if group == 0 else -(size + 1))
            self.conv(split, source=-2 if group == 0 else -(size + 2))
            for _ in range(depth):
                self.conv(mid, 3)
            self.add(tuple(-(1 + j) for j in range(0, depth + 1, step)) + (-(depth + 2),), "Concat", 1)
            out_index = self.conv(out)
        return self.add((-1, -(size + 1)), "Shortcut", 1) if groups == 2 else out_index

    def down(self, kind: str | None, channels: int, skip: int | None = None) -> int:
        """Stride-2 transition: ``MP``; ``MPConv`` (maxpool+1x1 beside 1x1+3x3/2, concatenated); ``Conv``
        (3x3/2); ``DownC``. With ``skip``, its output is concatenated with that layer's (the PAN path)."""
        skips = () if skip is None else (skip,)
        if kind == "MPConv":
            self.add(-1, "MP")
            self.conv(channels)
            self.conv(channels, source=-3)
            self.conv(channels, 3, 2)
            return self.add((-1, -3, *skips), "Concat", 1)
        if kind == "MP":
            last = self.add(-1, "MP")
        elif kind == "Conv":
            last = self.conv(channels, 3, 2)
        else:
            last = self.add(-1, "DownC", channels)
        return self.add((-1, *skips), "Concat", 1) if skips else last

    def spp(self, kind: str, channels: int) -> int:
        if kind == "SPPCSPC":
            return self.add(-1, "SPPCSPC", channels)
        self.conv(channels)  # YOLOv7-tiny writes its SPP-CSP block out as plain layers
        self.conv(channels, source=-2)
        for offset, kernel in enumerate((5, 9, 13)):
            self.add(-1 - offset, "SP", kernel)
        self.add((-1, -2, -3, -4), "Concat", 1)
        self.conv(channels)
        self.add((-1, -7), "Concat", 1)
        return self.conv(channels)


@dataclass(frozen=True)
class _Layout:
    """One YOLOv7 topology: stem, backbone stages (transition kind, channels, ELAN split/mid/out), SPP, top-down
    levels (reduce channels, ELAN), bottom-up levels (transition, channels, ELAN), output convs, aux convs."""

    stem: tuple[tuple, ...]
    stages: tuple[tuple, ...]
    backbone_elan: tuple[int, int, int]  # depth, step, groups
    spp: tuple[str, int]
    top_down: tuple[tuple, ...]
    bottom_up: tuple[tuple, ...]
    head_elan: tuple[int, int, int]
    outputs: tuple[int, ...]
    output_module: str = "Conv"
    auxiliary: tuple[int, ...] = ()
    # the official E6E auxiliary convs read the top-down E-ELANs' second fusion conv, the row before their sum
    auxiliary_before_sum: bool = False

    def layer_table(self) -> tuple[Row, ...]:
        table = _TableWriter()
        for module, *args in self.stem:
            table.add(-1, module, *args)
        stage_outputs = []
        for kind, channels, elan in self.stages:
            if kind is not None:
                table.down(kind, channels)
            stage_outputs.append(table.elan(*elan, *self.backbone_elan))
        levels = len(self.top_down) + 1
        top_down = [table.spp(*self.spp)]
        for (channels, elan), lateral in zip(self.top_down, stage_outputs[-2 : -levels - 1 : -1]):
            table.conv(channels)
            table.add(-1, "nn.Upsample", None, 2, "nearest")
            table.conv(channels, source=lateral)
            table.add((-1, -2), "Concat", 1)
            top_down.append(table.elan(*elan, *self.head_elan))
        bottom_up = [top_down[-1]]
        for (kind, channels, elan), skip in zip(self.bottom_up, reversed(top_down[:-1])):
            table.down(kind, channels, skip)
            bottom_up.append(table.elan(*elan, *self.head_elan))
        heads = [table.conv(c, 3, 1, s, self.output_module) for c, s in zip(self.outputs, bottom_up)]
        shift = int(self.auxiliary_before_sum)
        auxiliary = [top_down[0]] + [index - shift for index in top_down[1:]]
        heads += [table.conv(c, 3, 1, s) for c, s in zip(self.auxiliary, reversed(auxiliary))]
        table.add(tuple(heads), "IAuxDetect" if self.auxiliary else "IDetect")
        return tuple(table.rows)


_TINY = _Layout(
    stem=(("Conv", 32, 3, 2), ("Conv", 64, 3, 2)),
    stages=((None, 0, (32, 32, 64)), ("MP", 0, (64, 64, 128)), ("MP", 0, (128, 128, 256)), ("MP", 0, (256, 256, 512))),
    backbone_elan=(2, 1, 1),
    spp=("SP", 256),
    top_down=((128, (64, 64, 128)), (64, (32, 32, 64))),
    bottom_up=(("Conv", 128, (64, 64, 128)), ("Conv", 256, (128, 128, 256))),
    head_elan=(2, 1, 1),
    outputs=(128, 256, 512),
)
_BASE = _Layout(
    stem=(("Conv", 32, 3, 1), ("Conv", 64, 3, 2), ("Conv", 64, 3, 1), ("Conv", 128, 3, 2)),
    stages=(
        (None, 0, (64, 64, 256)),
        ("MPConv", 128, (128, 128, 512)),
        ("MPConv", 256, (256, 256, 1024)),
        ("MPConv", 512, (256, 256, 1024)),
    ),
    backbone_elan=(4, 2, 1),
    spp=("SPPCSPC", 512),
    top_down=((256, (256, 128, 256)), (128, (128, 64, 128))),
    bottom_up=(("MPConv", 128, (256, 128, 256)), ("MPConv", 256, (512, 256, 512))),
    head_elan=(4, 1, 1),
    outputs=(256, 512, 1024),
    output_module="RepConv",
)
_X = _Layout(
    stem=(("Conv", 40, 3, 1), ("Conv", 80, 3, 2), ("Conv", 80, 3, 1), ("Conv", 160, 3, 2)),
    stages=(
        (None, 0, (64, 64, 320)),
        ("MPConv", 160, (128, 128, 640)),
        ("MPConv", 320, (256, 256, 1280)),
        ("MPConv", 640, (256, 256, 1280)),
    ),
    backbone_elan=(6, 2, 1),
    spp=("SPPCSPC", 640),
    top_down=((320, (256, 256, 320)), (160, (128, 128, 160))),
    bottom_up=(("MPConv", 160, (256, 256, 320)), ("MPConv", 320, (512, 512, 640))),
    head_elan=(6, 2, 1),
    outputs=(320, 640, 1280),
)


def _p6(down: str, stem: int, widths: tuple, spp: int, top_down: tuple, depth: int, groups=1, auxiliary=None):
    """The P6 layouts (W6, E6, D6, E6E) differ only in widths, transition type and ELAN depth/groups."""
    stage_elans = ((64, 64), (128, 128), (256, 256), (384, 384), (512, 512))  # split, mid
    head_elans = ((384, 192), (256, 128), (128, 64))
    bottom_up = zip((top_down[1], top_down[0], spp), (*head_elans[1::-1], (512, 256)))
    return _Layout(
        stem=(("ReOrg",), ("Conv", stem, 3, 1)),
        stages=tuple((down, width, (*elan, width)) for width, elan in zip(widths, stage_elans)),
        backbone_elan=(depth, 2, groups),
        spp=("SPPCSPC", spp),
        top_down=tuple((width, (*elan, width)) for width, elan in zip(top_down, head_elans)),
        bottom_up=tuple((down, width, (*elan, width)) for width, elan in bottom_up),
        head_elan=(depth, 1, groups),
        outputs=widths[1:],
        auxiliary=auxiliary or widths[1:],
        auxiliary_before_sum=groups == 2,
    )


_ANCHORS_TINY = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
_ANCHORS_P5 = ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401))
_ANCHORS_P6 = (
    (19, 27, 44, 40, 38, 94),
    (96, 68, 86, 152, 180, 137),
    (140, 301, 303, 264, 238, 542),
    (436, 615, 739, 380, 925, 792),
)
_P6 = {"anchors": _ANCHORS_P6, "strides": (8, 16, 32, 64), "input_size": (1280, 1280)}
_E6_WIDTHS = (160, 320, 640, 960, 1280)


def _cfg(layout: _Layout, **kwargs) -> YOLOv7Config:
    return YOLOv7Config(layers=layout.layer_table(), **{"anchors": _ANCHORS_P5, **kwargs})


MODEL_CFGS: dict[str, YOLOv7Config] = {
    "yolov7_tiny": _cfg(_TINY, anchors=_ANCHORS_TINY, activation="leaky_relu"),
    "yolov7": _cfg(_BASE),
    "yolov7x": _cfg(_X),
    "yolov7_w6": _cfg(
        _p6("Conv", 64, (128, 256, 512, 768, 1024), 512, (384, 256, 128), 4, 1, (320, 640, 960, 1280)), **_P6
    ),
    "yolov7_e6": _cfg(_p6("DownC", 80, _E6_WIDTHS, 640, (480, 320, 160), 6), **_P6),
    "yolov7_d6": _cfg(_p6("DownC", 96, (192, 384, 768, 1152, 1536), 768, (576, 384, 192), 8), **_P6),
    "yolov7_e6e": _cfg(_p6("DownC", 80, _E6_WIDTHS, 640, (480, 320, 160), 6, groups=2), **_P6),
}
# YOLOv7-tiny-SiLU exists only as a deploy cfg: its "training form" is that deploy architecture.
MODEL_CFGS["yolov7_tiny_silu"] = dataclasses.replace(
    MODEL_CFGS["yolov7_tiny"], layers=deploy_layer_table(MODEL_CFGS["yolov7_tiny"].layers)[0], activation="silu"
)


def _create_yolov7(variant: str, **kwargs) -> YOLOv7:
    return YOLOv7(dataclasses.replace(MODEL_CFGS[variant], **kwargs), arch=variant)


@register_model
def yolov7_tiny(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7_tiny", **kwargs)


@register_model
def yolov7_tiny_silu(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7_tiny_silu", **kwargs)


@register_model
def yolov7(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7", **kwargs)


@register_model
def yolov7x(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7x", **kwargs)


@register_model
def yolov7_w6(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7_w6", **kwargs)


@register_model
def yolov7_e6(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7_e6", **kwargs)


@register_model
def yolov7_d6(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7_d6", **kwargs)


@register_model
def yolov7_e6e(**kwargs) -> YOLOv7:
    return _create_yolov7("yolov7_e6e", **kwargs)
