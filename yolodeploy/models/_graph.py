"""Layer-table models: the architecture format of YOLOv7 and YOLOv9 (and YOLOv5 before them).

A model is a list of layers ``(from, repeats, module, args)``; layer ``i`` is stored as ``model.{i}`` (so the
official state_dict keys hold) and reads the output of the previous layer (``from == -1``), of an earlier
layer, or of several. Channel bookkeeping depends on the module's *kind*, declared once per module type in a
family's ``ModuleTable`` (instead of the official ``if m in {...}`` chains and ``eval`` of yaml strings).

Unlike the official ``parse_model``, nothing here mutates a class-global default activation: the activation
is part of the model config and is passed to each module that takes one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from torch import Tensor, nn

__all__ = [
    "Kind",
    "ModuleSpec",
    "LayerSpec",
    "BuildContext",
    "build_layers",
    "LayerGraph",
    "make_divisible",
    "saved_indices",
    "run_layers",
]

From = int | tuple[int, ...]


class Kind(Enum):
    """How a module type maps input channels and args to its constructor and output channels."""

    CONV = "conv"  # args[0] = output channels (width-scaled): ctor(c_in, c_out, *args[1:])
    CONV_REPEAT = "conv_repeat"  # like CONV, and the depth-scaled repeat count goes in as ctor's third arg
    CONCAT = "concat"  # output channels = sum of inputs; ctor(*args)
    SHORTCUT = "shortcut"  # output channels = first input's; ctor(*args)
    DETECT = "detect"  # ctor(*args, [c_in of every input]); output = predictions
    LINEAR_SPLIT = "linear_split"  # (CBLinear) ctor(c_in, args[0] (unscaled list), *args[1:])
    FUSE = "fuse"  # (CBFuse) output channels = last input's; ctor(*args)
    SAME = "same"  # output channels = input's; ctor(*args)
    SPACE_TO_DEPTH = "space_to_depth"  # (ReOrg) output channels = 4 x input's; ctor(*args)


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """A module type usable in a layer table."""

    factory: Callable[..., nn.Module]
    kind: Kind
    takes_activation: bool = False  # ctor accepts ``activation=`` (the config's activation name)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One row of a layer table: ``(from, repeats, module name, args)``."""

    source: From
    repeats: int
    module: str
    args: tuple[Any, ...] = ()

    @classmethod
    def of(cls, row: Sequence[Any]) -> LayerSpec:
        source, repeats, module, args = row
        source = tuple(source) if isinstance(source, (list, tuple)) else int(source)
        return cls(source, int(repeats), str(module), tuple(args))


@dataclasses.dataclass
class BuildContext:
    """Model-wide settings a layer table is built with."""

    modules: dict[str, ModuleSpec]
    depth_multiple: float = 1.0
    width_multiple: float = 1.0
    activation: str | None = None
    num_outputs: int | None = None  # a CONV layer with exactly this many channels is an output: not scaled
    extra_detect_args: dict[str, Any] = dataclasses.field(default_factory=dict)


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x."""
    return int(math.ceil(x / divisor) * divisor)


def build_layers(
    rows: Sequence[LayerSpec], ctx: BuildContext, in_channels: int = 3
) -> tuple[list[nn.Module], list[int]]:
    """Instantiate a layer table. Returns the layers (each tagged with ``.i`` and ``.f``) and their output channels."""
    channels: list[int] = []
    layers: list[nn.Module] = []
    for index, row in enumerate(rows):
        spec = ctx.modules.get(row.module)
        if spec is None:
            raise ValueError(f"layer {index}: unknown module {row.module!r}; known: {sorted(ctx.modules)}")
        known = channels if channels else [in_channels]  # layer 0 reads the image
        module, c_out = _build_one(spec, row, ctx, known.__getitem__)
        module.i, module.f = index, row.source
        layers.append(module)
        channels.append(c_out)
    return layers, channels


def _build_one(spec: ModuleSpec, row: LayerSpec, ctx: BuildContext, ch: Callable[[int], int]) -> tuple[nn.Module, int]:
    repeats = max(round(row.repeats * ctx.depth_multiple), 1) if row.repeats > 1 else row.repeats
    args, kwargs = list(row.args), {}
    sources = row.source if isinstance(row.source, tuple) else (row.source,)
    if spec.takes_activation and ctx.activation is not None:
        kwargs["activation"] = ctx.activation
    if spec.kind in (Kind.CONV, Kind.CONV_REPEAT):
        c_out = args[0] if args[0] == ctx.num_outputs else make_divisible(args[0] * ctx.width_multiple, 8)
        args = [ch(row.source), c_out, *args[1:]]
        if spec.kind is Kind.CONV_REPEAT:
            args.insert(2, repeats)
            repeats = 1
    elif spec.kind is Kind.CONCAT:
        c_out = sum(ch(s) for s in sources)
    elif spec.kind is Kind.SHORTCUT:
        c_out = ch(sources[0])
    elif spec.kind is Kind.DETECT:
        args.append([ch(s) for s in sources])
        kwargs.update(ctx.extra_detect_args)
        c_out = 0
    elif spec.kind is Kind.LINEAR_SPLIT:
        c_out = args[0]
        args = [ch(row.source), *args]
    elif spec.kind is Kind.FUSE:
        c_out = ch(sources[-1])
    elif spec.kind is Kind.SPACE_TO_DEPTH:
        c_out = 4 * ch(sources[0])
    else:
        c_out = ch(sources[0])
    if repeats > 1:
        return nn.Sequential(*(spec.factory(*args, **kwargs) for _ in range(repeats))), c_out
    return spec.factory(*args, **kwargs), c_out


def saved_indices(layers: Sequence[nn.Module]) -> list[int]:
    """Indices of the layers whose outputs a later layer reads (besides the next one), sorted."""
    return sorted(
        {s % layer.i for layer in layers for s in (layer.f if isinstance(layer.f, tuple) else (layer.f,)) if s != -1}
    )


def run_layers(layers: Sequence[nn.Module], x: Any, saved: Sequence[int] | set[int]) -> tuple[Any, list[Any]]:
    """Forward through ``layers`` (tagged ``.i``/``.f`` by :func:`build_layers`), the first one reading ``x``.

    Returns the last layer's output and the per-layer outputs (None except at the ``saved`` indices), so that
    a caller can pick any saved intermediate map (e.g. the inputs of a detection head).
    """
    outputs: list[Any] = []
    saved = set(saved)
    for layer in layers:
        if layer.f != -1:
            x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
        x = layer(x)
        outputs.append(x if layer.i in saved else None)
    return x, outputs


class LayerGraph(nn.Module):
    """Runs a built layer table: ``self.model`` is the ``nn.Sequential`` of layers (``model.{i}`` keys)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.save = saved_indices(layers)

    def run(self, x: Tensor, stop: int | None = None) -> Any:
        """Forward through layers ``[0, stop)`` (all by default); returns the last layer's output."""
        return run_layers(self.model[:stop] if stop is not None else self.model, x, self.save)[0]
