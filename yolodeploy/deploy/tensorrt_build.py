"""Build a TensorRT engine from an ONNX file (TensorRT 10/11 Python API), with its sidecar and layer report.

``build_engine`` writes three files, atomically (all or none):
- ``<engine>``: the serialized plan;
- ``<engine>.json``: the sidecar (ONNX sha256, precision flags, optimization profile, TensorRT version, GPU
  name and compute capability, build time, inputs/outputs). ``TensorRTRunner`` refuses an engine whose sidecar
  names another TensorRT version or GPU, because plans are neither portable across versions nor tuned for other
  GPUs;
- ``<engine>.layers.json``: TensorRT's engine inspector report (per-layer precision and tactic), built with
  ``ProfilingVerbosity.DETAILED``.

Precision. TensorRT 10 builds weakly typed networks: ``--fp16`` sets ``BuilderFlag.FP16`` and ``--int8`` sets
``BuilderFlag.INT8``, which TensorRT needs to honour the explicit Q/DQ nodes of a quantized ONNX. TensorRT 11
removed both flags (networks are strongly typed): precision comes from the graph, so ``--int8`` needs only the
Q/DQ nodes, and ``--fp16`` needs an fp16 ONNX (``yolodeploy export --half``). ``--int8`` on an ONNX without Q/DQ
nodes is refused (there is no implicit calibration: run ``yolodeploy quantize`` first). TF32 stays TensorRT's
default unless ``tf32=False``.

Profiles. ``batch_sizes=(1, 32)`` gives one optimization profile with min = the smallest, max = the largest and
opt = the largest requested batch (``opt_batch`` overrides): TensorRT tunes its kernels for ``opt``, and the
large batch is where throughput matters; batch 1 still runs, on the same kernels. Explicit
``ShapeProfile(min, opt, max)`` objects replace that computation (``--min-shape/--opt-shape/--max-shape``).
An ONNX with a static batch needs no profile; asking for other batch sizes then is refused (re-export with
``--dynamic-batch``).

Everything above the ``build_engine`` section is pure Python, unit-tested without TensorRT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, EngineError, EngineMismatchError
from ..utils.io import atomic_path, file_sha256
from ..utils.optional import import_optional
from .runners.base import ShapeBounds, TensorMeta, format_shape

__all__ = [
    "TENSORRT_MISSING",
    "ShapeProfile",
    "EngineReport",
    "build_engine",
    "import_tensorrt",
    "require_cuda",
    "parse_batch_sizes",
    "parse_shape",
    "profiles_from_batch_sizes",
    "profiles_from_shapes",
    "resolve_profiles",
    "builder_flags_for",
    "build_sidecar",
    "validate_sidecar",
    "read_sidecar",
    "sidecar_path",
    "default_engine_path",
    "layers_path",
    "summarize_layers",
    "file_sha256",
]

TENSORRT_MISSING = (
    "TensorRT is not installed: pip install yolodeploy[tensorrt] on a machine with an NVIDIA GPU and driver"
)
SIDECAR_FORMAT = "yolodeploy-engine"
SIDECAR_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# TensorRT / CUDA presence
# ---------------------------------------------------------------------------------------------------------
def import_tensorrt():
    """``import tensorrt`` or a one-line ``BackendUnavailableError`` saying how to install it."""
    # absent, or its shared libraries (libnvinfer.so.*) are missing (OSError)
    return import_optional("tensorrt", TENSORRT_MISSING, catch=(ImportError, OSError))


def require_cuda() -> None:
    """Raise a one-line ``BackendUnavailableError`` unless torch sees a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRT needs a CUDA device, but torch sees none: install a CUDA build of torch on a machine with "
            "an NVIDIA GPU and driver"
        )


# ---------------------------------------------------------------------------------------------------------
# Optimization profiles (pure)
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shapes of one input in the engine's optimization profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("min", "opt", "max"):
            object.__setattr__(self, field, tuple(int(d) for d in getattr(self, field)))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ConfigError(f"profile of {self.input!r}: min/opt/max shapes have different ranks ({self._text()})")
        if any(d < 1 for d in self.min):
            raise ConfigError(f"profile of {self.input!r}: every dim must be >= 1 ({self._text()})")
        if not all(lo <= op <= hi for lo, op, hi in zip(self.min, self.opt, self.max)):
            raise ConfigError(f"profile of {self.input!r}: needs min <= opt <= max in every dim ({self._text()})")

    def _text(self) -> str:
        return f"min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"

    @property
    def bounds(self) -> ShapeBounds:
        return ShapeBounds(self.min, self.max)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeProfile:
        return cls(data["input"], tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


def parse_batch_sizes(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"1,32"`` (or ``[1, 32]``) -> ``(1, 32)``: sorted, unique, each >= 1."""
    if isinstance(value, int):
        value = [value]
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    else:
        items = list(value)
    try:
        sizes = sorted({int(item) for item in items})
    except (TypeError, ValueError):
        raise ConfigError(f"batch sizes must be integers like 1,32, got {value!r}") from None
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"batch sizes must be integers >= 1 like 1,32, got {value!r}")
    return tuple(sizes)


_SHAPE_RE = re.compile(r"^(?:(?P<name>[^:]+):)?(?P<dims>\d+(?:[x,]\d+)*)$")


def parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """``"1x3x640x640"`` -> ``(None, (1, 3, 640, 640))``; ``"images:1x3x640x640"`` names the input."""
    match = _SHAPE_RE.match(text.strip().replace(" ", ""))
    if not match:
        raise ConfigError(f"bad shape {text!r}: write it as 1x3x640x640 (optionally prefixed by the input, images:...)")
    return match["name"], tuple(int(d) for d in re.split(r"[x,]", match["dims"]))


def _static_tail(meta: TensorMeta) -> None:
    dynamic = [axis for axis, dim in enumerate(meta.shape[1:], start=1) if not _is_static(dim)]
    if dynamic:
        raise ConfigError(
            f"input {meta.name!r} ({format_shape(meta.shape)}) has dynamic dims besides the batch (axes {dynamic}); "
            f"give the full shapes with --min-shape/--opt-shape/--max-shape"
        )


def _is_static(dim: Any) -> bool:
    return isinstance(dim, int) and dim > 0


def profiles_from_batch_sizes(
    inputs: Sequence[TensorMeta], batch_sizes: str | Sequence[int], *, opt_batch: int | None = None
) -> list[ShapeProfile]:
    """One profile per dynamic-batch input: min = smallest, opt = ``opt_batch`` or the largest, max = largest.

    Inputs with a static batch get no profile; they are refused if the requested batch sizes differ from it.
    """
    sizes = parse_batch_sizes(batch_sizes)
    low, high = sizes[0], sizes[-1]
    opt = high if opt_batch is None else int(opt_batch)
    if not low <= opt <= high:
        raise ConfigError(f"opt batch {opt} must lie between the smallest ({low}) and largest ({high}) batch size")
    profiles = []
    for meta in inputs:
        if not meta.shape:
            raise ConfigError(f"input {meta.name!r} is a scalar; batch sizes apply to batched inputs only")
        _static_tail(meta)
        tail = tuple(int(d) for d in meta.shape[1:])
        if _is_static(meta.shape[0]):
            if sizes != (meta.shape[0],):
                raise ConfigError(
                    f"input {meta.name!r} has a static batch of {meta.shape[0]}, so the engine cannot take batch "
                    f"sizes {','.join(map(str, sizes))}; re-export the ONNX with --dynamic-batch"
                )
            continue
        profiles.append(ShapeProfile(meta.name, (low, *tail), (opt, *tail), (high, *tail)))
    return profiles


def profiles_from_shapes(
    inputs: Sequence[TensorMeta],
    min_shape: str | Sequence[str],
    opt_shape: str | Sequence[str] | None,
    max_shape: str | Sequence[str],
) -> list[ShapeProfile]:
    """Explicit profiles from ``--min-shape/--opt-shape/--max-shape`` (opt defaults to max).

    Each option is a shape (``1x3x640x640``, for the one dynamic input) or several ``name:shape`` values. A
    shape must keep the ONNX's rank and static dims.
    """
    by_name = {meta.name: meta for meta in inputs}
    dynamic = [meta.name for meta in inputs if not all(_is_static(d) for d in meta.shape)]
    mins = _shapes_by_input(min_shape, dynamic, "--min-shape")
    maxs = _shapes_by_input(max_shape, dynamic, "--max-shape")
    opts = _shapes_by_input(opt_shape, dynamic, "--opt-shape") if opt_shape else dict(maxs)
    if not set(mins) == set(opts) == set(maxs):
        raise ConfigError("--min-shape, --opt-shape and --max-shape must name the same inputs")
    profiles = []
    for name in mins:
        if name not in by_name:
            raise ConfigError(f"shape given for unknown input {name!r}; the ONNX's inputs are: {', '.join(by_name)}")
        profile = ShapeProfile(name, mins[name], opts[name], maxs[name])
        _check_against_onnx(profile, by_name[name])
        profiles.append(profile)
    missing = [name for name in dynamic if name not in mins]
    if missing:
        raise ConfigError(f"input {missing[0]!r} has dynamic dims but no --min-shape/--max-shape was given for it")
    return profiles


def _shapes_by_input(values: str | Sequence[str], dynamic: list[str], option: str) -> dict[str, tuple[int, ...]]:
    values = [values] if isinstance(values, str) else list(values)
    result = {}
    for value in values:
        name, shape = parse_shape(value)
        if name is None:
            if len(dynamic) != 1:
                raise ConfigError(f"{option} {value}: the ONNX has {len(dynamic)} dynamic inputs; prefix the name")
            name = dynamic[0]
        result[name] = shape
    return result


def _check_against_onnx(profile: ShapeProfile, meta: TensorMeta) -> None:
    if len(profile.min) != len(meta.shape):
        raise ConfigError(
            f"profile of {meta.name!r} has rank {len(profile.min)}, the ONNX input is {format_shape(meta.shape)}"
        )
    for axis, dim in enumerate(meta.shape):
        if _is_static(dim) and not profile.min[axis] == profile.opt[axis] == profile.max[axis] == dim:
            raise ConfigError(
                f"profile of {meta.name!r}: dim {axis} is fixed to {dim} in the ONNX ({format_shape(meta.shape)}); "
                f"{profile._text()}"
            )


def resolve_profiles(
    inputs: Sequence[TensorMeta],
    *,
    batch_sizes: str | Sequence[int] | None = None,
    opt_batch: int | None = None,
    profiles: Sequence[ShapeProfile] | None = None,
    min_shape: str | Sequence[str] | None = None,
    opt_shape: str | Sequence[str] | None = None,
    max_shape: str | Sequence[str] | None = None,
) -> list[ShapeProfile]:
    """The engine's profiles from exactly one of: ``profiles``, min/opt/max shapes, or batch sizes (default 1)."""
    shapes_given = bool(min_shape or opt_shape or max_shape)
    ways = [profiles is not None, shapes_given, batch_sizes is not None or opt_batch is not None]
    if sum(ways) > 1:
        raise ConfigError(
            "give either batch sizes (--bs/--opt-bs) or explicit shapes (--min/--opt/--max-shape), not both"
        )
    if profiles is not None:
        return list(profiles)
    if shapes_given:
        if not (min_shape and max_shape):
            raise ConfigError("explicit profiles need both --min-shape and --max-shape (--opt-shape defaults to max)")
        return profiles_from_shapes(inputs, min_shape, opt_shape, max_shape)
    return profiles_from_batch_sizes(inputs, batch_sizes if batch_sizes is not None else (1,), opt_batch=opt_batch)


# ---------------------------------------------------------------------------------------------------------
# Precision (pure)
# ---------------------------------------------------------------------------------------------------------
def builder_flags_for(
    available_flags: set[str], *, fp16: bool, int8: bool, onnx_is_half: bool, tf32: bool = True
) -> tuple[list[str], list[str]]:
    """The ``BuilderFlag`` names to set and to clear for a build; ``available_flags`` lists the installed
    TensorRT's flags (TensorRT 11 has no FP16/INT8 flag: it is strongly typed)."""
    set_flags, clear_flags = [], []
    if fp16:
        if "FP16" in available_flags:
            set_flags.append("FP16")
        elif not onnx_is_half:
            raise EngineError(
                "this TensorRT builds strongly typed networks only (no FP16 builder flag): export an fp16 ONNX "
                "(`yolodeploy export --half`) and build that"
            )
    if int8 and "INT8" in available_flags:
        set_flags.append("INT8")  # TensorRT 10: needed for explicit Q/DQ; TensorRT 11 reads precision from Q/DQ
    if not tf32 and "TF32" in available_flags:
        clear_flags.append("TF32")
    return set_flags, clear_flags


# ---------------------------------------------------------------------------------------------------------
# Sidecar (pure)
# ---------------------------------------------------------------------------------------------------------
def default_engine_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.engine``."""
    return Path(onnx_path).with_suffix(".engine")


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    return Path(f"{os.fspath(engine_path)}.json")


def layers_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` -> ``model.engine.layers.json``."""
    return Path(f"{os.fspath(engine_path)}.layers.json")


def _meta_dict(meta: TensorMeta) -> dict[str, Any]:
    return {"name": meta.name, "dtype": np.dtype(meta.dtype).name, "shape": list(meta.shape)}


def build_sidecar(
    *,
    onnx_path: str | os.PathLike,
    onnx_sha256: str,
    fp16: bool,
    int8: bool,
    builder_flags: Sequence[str],
    profiles: Sequence[ShapeProfile],
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: Sequence[int] | None,
    inputs: Sequence[TensorMeta],
    outputs: Sequence[TensorMeta],
    build_seconds: float,
    workspace_gib: float | None = None,
    built_at: str | None = None,
) -> dict[str, Any]:
    """The sidecar document saved next to an engine (see the module docstring)."""
    from .. import __version__

    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "yolodeploy": __version__,
        "onnx": {"path": os.fspath(onnx_path), "sha256": onnx_sha256},
        "precision": {"fp16": bool(fp16), "int8": bool(int8), "builder_flags": list(builder_flags)},
        "profiles": [profile.to_dict() for profile in profiles],
        "tensorrt_version": str(tensorrt_version),
        "gpu": {"name": gpu_name, "compute_capability": list(compute_capability) if compute_capability else None},
        "build": {
            "seconds": round(float(build_seconds), 3),
            "at": built_at or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "workspace_gib": workspace_gib,
        },
        "inputs": [_meta_dict(meta) for meta in inputs],
        "outputs": [_meta_dict(meta) for meta in outputs],
    }


def validate_sidecar(
    sidecar: Mapping[str, Any], *, tensorrt_version: str, gpu_name: str, engine_path: str | os.PathLike = "engine"
) -> None:
    """Raise a one-line error unless the sidecar is ours and names this TensorRT version and this GPU.

    Raises:
        EngineError: not a yolodeploy engine sidecar (or a newer format).
        EngineMismatchError: built by another TensorRT version or for another GPU.
    """
    if not isinstance(sidecar, Mapping) or sidecar.get("format") != SIDECAR_FORMAT:
        raise EngineError(f"{sidecar_path(engine_path)}: not a {SIDECAR_FORMAT} sidecar")
    if sidecar.get("format_version", 0) > SIDECAR_VERSION:
        raise EngineError(f"{sidecar_path(engine_path)}: written by a newer yolodeploy; upgrade")
    source = (sidecar.get("onnx") or {}).get("path", "MODEL.onnx")
    rebuild = f"rebuild it here: yolodeploy build-engine {source} -o {engine_path}"
    built_version = str(sidecar.get("tensorrt_version"))
    if built_version != str(tensorrt_version):
        raise EngineMismatchError(
            f"{engine_path} was built with TensorRT {built_version}, but this is TensorRT {tensorrt_version} "
            f"(engines are not portable across versions); {rebuild}"
        )
    built_gpu = str((sidecar.get("gpu") or {}).get("name"))
    if built_gpu != str(gpu_name):
        raise EngineMismatchError(
            f"{engine_path} was built for GPU {built_gpu!r}, but this GPU is {gpu_name!r} (engines are tuned per GPU); "
            f"{rebuild}"
        )


def read_sidecar(engine_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar next to an engine, None when there is none (e.g. a plan built by trtexec)."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path}: unreadable sidecar ({exc}); rebuild the engine") from None


def summarize_layers(information: str | Mapping[str, Any]) -> dict[str, Any]:
    """Count the engine's layers by output precision from the inspector's JSON (TensorRT 10 and 11 layouts)."""
    data = json.loads(information) if isinstance(information, str) else information
    layers = data.get("Layers", []) if isinstance(data, Mapping) else []
    counts: dict[str, int] = {}
    for layer in layers:
        precision = _layer_precision(layer) if isinstance(layer, Mapping) else "unknown"
        counts[precision] = counts.get(precision, 0) + 1
    return {"layers": len(layers), "precisions": dict(sorted(counts.items()))}


def _layer_precision(layer: Mapping[str, Any]) -> str:
    outputs = layer.get("Outputs") or []
    if not outputs or not isinstance(outputs[0], Mapping):
        return "unknown"
    first = outputs[0]
    text = str(first.get("DataType") or first.get("Format/Datatype") or "").lower()
    for key, name in (("int8", "int8"), ("half", "fp16"), ("fp16", "fp16"), ("float", "fp32"), ("fp32", "fp32")):
        if key in text:
            return name
    return text.split()[0] if text else "unknown"


# ---------------------------------------------------------------------------------------------------------
# ONNX facts the build needs
# ---------------------------------------------------------------------------------------------------------
def _onnx_facts(onnx_path: Path) -> tuple[list[TensorMeta], list[TensorMeta], bool]:
    """(inputs, outputs, has Q/DQ nodes) of a checked ONNX file (one-line ``OnnxModelError`` otherwise)."""
    from .onnx_utils import has_qdq, load_onnx_checked, onnx_io

    model = load_onnx_checked(onnx_path)
    inputs, outputs = onnx_io(model)
    return list(inputs), list(outputs), bool(has_qdq(model))


# ---------------------------------------------------------------------------------------------------------
# build_engine
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EngineReport:
    """What ``build_engine`` wrote and how the engine came out."""

    engine_path: Path
    sidecar_path: Path
    layers_path: Path | None
    sidecar: dict[str, Any]
    layer_summary: dict[str, Any] | None

    def lines(self) -> list[str]:
        precision = self.sidecar["precision"]
        flags = ",".join(precision["builder_flags"]) or "none"
        lines = [
            f"{self.engine_path}: TensorRT {self.sidecar['tensorrt_version']} on {self.sidecar['gpu']['name']}, "
            f"builder flags {flags}, built in {self.sidecar['build']['seconds']:.1f} s",
        ]
        for profile in self.sidecar["profiles"]:
            lines.append(
                f"  profile {profile['input']}: min {format_shape(profile['min'])} opt {format_shape(profile['opt'])} "
                f"max {format_shape(profile['max'])}"
            )
        lines.append(f"  sidecar: {self.sidecar_path}")
        if self.layers_path is not None and self.layer_summary is not None:
            counts = ", ".join(f"{k} {v}" for k, v in self.layer_summary["precisions"].items())
            lines.append(f"  layers: {self.layer_summary['layers']} ({counts}) -> {self.layers_path}")
        return lines


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    fp16: bool = False,
    int8: bool = False,
    batch_sizes: str | Sequence[int] | None = None,
    opt_batch: int | None = None,
    profiles: Sequence[ShapeProfile] | None = None,
    min_shape: str | Sequence[str] | None = None,
    opt_shape: str | Sequence[str] | None = None,
    max_shape: str | Sequence[str] | None = None,
    workspace_gib: float | None = None,
    timing_cache: str | os.PathLike | None = None,
    inspect: bool = True,
    tf32: bool = True,
) -> EngineReport:
    """Build a TensorRT engine from ``onnx_path`` and write it with its sidecar and layer report.

    Args:
        fp16 / int8: precision (see the module docstring; ``int8`` needs Q/DQ nodes in the ONNX).
        batch_sizes: the batch sizes the engine must take (``"1,32"``; default 1).
        opt_batch: the batch TensorRT tunes for (default: the largest of ``batch_sizes``).
        profiles: explicit ``ShapeProfile`` objects, instead of ``batch_sizes``.
        min_shape / opt_shape / max_shape: explicit shapes as text (``1x3x640x640``, ``images:1x3x640x640``),
            instead of ``batch_sizes``; ``opt_shape`` defaults to ``max_shape``.
        workspace_gib: cap on the builder's workspace memory pool (default: TensorRT's, the whole GPU).
        timing_cache: a timing-cache file read before (if present) and saved after the build.
        inspect: also write the per-layer inspector report.
        tf32: allow TF32 kernels for fp32 layers (TensorRT's default).

    Raises:
        BackendUnavailableError: TensorRT or CUDA missing (one line saying how to install).
        EngineError / ConfigError: refused options (``--int8`` without Q/DQ, bad profiles) or a failed build.

    Example:
        >>> report = build_engine("yolov6n.onnx", "yolov6n.engine", fp16=True, batch_sizes=(1, 32))
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    inputs, outputs, quantized = _onnx_facts(onnx_path)
    if int8 and not quantized:
        raise EngineError(
            f"--int8 needs explicit Q/DQ nodes in the ONNX and {onnx_path} has none; run `yolodeploy quantize` first"
        )
    profiles = resolve_profiles(
        inputs,
        batch_sizes=batch_sizes,
        opt_batch=opt_batch,
        profiles=profiles,
        min_shape=min_shape,
        opt_shape=opt_shape,
        max_shape=max_shape,
    )
    if workspace_gib is not None and workspace_gib <= 0:
        raise ConfigError(f"workspace must be > 0 GiB, got {workspace_gib}")
    trt = import_tensorrt()
    require_cuda()
    onnx_is_half = any(np.dtype(meta.dtype) == np.float16 for meta in inputs)
    flags = builder_flags_for(
        set(trt.BuilderFlag.__members__), fp16=fp16, int8=int8, onnx_is_half=onnx_is_half, tf32=tf32
    )
    start = time.perf_counter()
    plan, cache_bytes = _build_plan(trt, onnx_path, profiles, flags, workspace_gib, timing_cache)
    seconds = time.perf_counter() - start
    layer_info = _inspect_plan(trt, plan) if inspect else None
    sidecar = build_sidecar(
        onnx_path=onnx_path,
        onnx_sha256=file_sha256(onnx_path),
        fp16=fp16,
        int8=int8,
        builder_flags=flags[0],
        profiles=profiles,
        tensorrt_version=trt.__version__,
        **_gpu_facts(),
        inputs=inputs,
        outputs=outputs,
        build_seconds=seconds,
        workspace_gib=workspace_gib,
    )
    _write_outputs(engine_path, plan, sidecar, layer_info, timing_cache, cache_bytes)
    return EngineReport(
        engine_path=engine_path,
        sidecar_path=sidecar_path(engine_path),
        layers_path=layers_path(engine_path) if layer_info is not None else None,
        sidecar=sidecar,
        layer_summary=summarize_layers(layer_info) if layer_info is not None else None,
    )


def _gpu_facts() -> dict[str, Any]:
    import torch

    return {
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": list(torch.cuda.get_device_capability()),
    }


def _build_plan(trt, onnx_path: Path, profiles, flags, workspace_gib, timing_cache) -> tuple[bytes, bytes | None]:
    """Parse the ONNX and build the serialized plan (plus the updated timing cache, when one was asked for)."""
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT and the other shipped plugins
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = [str(parser.get_error(i)).strip().splitlines()[0] for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown parser error'}")
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    set_flags, clear_flags = flags
    for name in set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if profiles:
        profile = builder.create_optimization_profile()
        for item in profiles:
            profile.set_shape(item.input, item.min, item.opt, item.max)
        config.add_optimization_profile(profile)
    if timing_cache is not None:
        cache_file = Path(timing_cache)
        cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (its log above says why)")
    cache_bytes = bytes(config.get_timing_cache().serialize()) if timing_cache is not None else None
    return bytes(plan), cache_bytes


def _inspect_plan(trt, plan: bytes) -> str:
    """The engine inspector's per-layer JSON (layer names, precisions, tactics)."""
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineError("TensorRT built a plan it cannot deserialize")
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def _write_outputs(engine_path, plan, sidecar, layer_info, timing_cache, cache_bytes) -> None:
    """Plan, sidecar, layer report (and timing cache) appear together or not at all."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(atomic_path(engine_path)).write_bytes(plan)
        stack.enter_context(atomic_path(sidecar_path(engine_path))).write_text(json.dumps(sidecar, indent=2) + "\n")
        if layer_info is not None:
            try:
                text = json.dumps(json.loads(layer_info), indent=2) + "\n"
            except json.JSONDecodeError:
                text = layer_info
            stack.enter_context(atomic_path(layers_path(engine_path))).write_text(text)
        if cache_bytes is not None:
            stack.enter_context(atomic_path(timing_cache)).write_bytes(cache_bytes)
