"""Triton Inference Server model repository export: the model file plus a ``config.pbtxt`` written by us.

Layout (Triton's model repository convention)::

    <repository>/<name>/config.pbtxt
    <repository>/<name>/<version>/model.onnx      (platform onnxruntime_onnx)
    <repository>/<name>/<version>/model.plan      (platform tensorrt_plan)

The I/O names, types and dims come from the ONNX graph, or for a TensorRT engine from its sidecar JSON
(``<engine>.json``, written by ``yolodeploy build-engine``; a plan without one cannot be described). With
``max_batch_size > 0`` Triton batches requests itself: the model's first dim must be a dynamic batch, and
``dims`` leave it out. ``max_batch_size=0`` describes the full, unbatched shapes (no dynamic batching).
A TensorRT engine's optimization profile bounds the batch: ``max_batch_size`` above its max is refused.

The model directory is assembled in a temporary folder beside it and renamed into place, so a repository never
holds a half-written model.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, EngineError
from .onnx_utils import TensorMeta, load_onnx_checked, onnx_io

__all__ = ["TritonPlatform", "export_triton", "triton_config", "TRITON_TYPES"]

TRITON_TYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float64): "TYPE_FP64",
    np.dtype(np.int8): "TYPE_INT8",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.int16): "TYPE_INT16",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.bool_): "TYPE_BOOL",
}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class TritonPlatform(str, enum.Enum):
    """Triton backends a yolodeploy model can be served with."""

    ONNXRUNTIME = "onnxruntime_onnx"
    TENSORRT = "tensorrt_plan"

    @property
    def model_filename(self) -> str:
        return "model.onnx" if self is TritonPlatform.ONNXRUNTIME else "model.plan"


def _resolve_platform(model_file: Path, platform: str | TritonPlatform) -> TritonPlatform:
    if platform == "auto":
        if model_file.suffix.lower() == ".onnx":
            return TritonPlatform.ONNXRUNTIME
        if model_file.suffix.lower() in ENGINE_SUFFIXES:
            return TritonPlatform.TENSORRT
        raise ConfigError(
            f"{model_file}: cannot tell the platform from the suffix; pass onnxruntime_onnx or "
            "tensorrt_plan (or name the file .onnx / .engine)"
        )
    try:
        return TritonPlatform(platform)
    except ValueError:
        choices = ", ".join(["auto"] + [p.value for p in TritonPlatform])
        raise ConfigError(f"unknown Triton platform {platform!r}; expected one of {choices}") from None


def _engine_io(engine: Path) -> tuple[list[TensorMeta], list[TensorMeta], int | None]:
    """I/O of a TensorRT engine from its sidecar, and the largest batch its profiles allow (None: static)."""
    sidecar = Path(f"{os.fspath(engine)}.json")
    if not sidecar.is_file():
        raise EngineError(
            f"{engine}: no sidecar {sidecar.name} to read the I/O from; build the engine with "
            "`yolodeploy build-engine` (or export the ONNX instead)"
        )
    try:
        data = json.loads(sidecar.read_text())
        metas = [
            [TensorMeta(t["name"], np.dtype(t["dtype"]), tuple(t["shape"])) for t in data[key]]
            for key in ("inputs", "outputs")
        ]
        max_batch = min((int(p["max"][0]) for p in data.get("profiles") or []), default=None)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise EngineError(f"{sidecar}: not a readable engine sidecar ({type(exc).__name__}: {exc})") from None
    return metas[0], metas[1], max_batch


def _model_io(model_file: Path, platform: TritonPlatform) -> tuple[list[TensorMeta], list[TensorMeta], int | None]:
    if platform is TritonPlatform.ONNXRUNTIME:
        inputs, outputs = onnx_io(load_onnx_checked(model_file))
        return inputs, outputs, None
    if not model_file.is_file():
        raise EngineError(f"{model_file}: no such file")
    return _engine_io(model_file)


def _check_options(name, max_batch_size, preferred, max_queue_delay_us, instances, version) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"model name {name!r}: use letters, digits, '_', '-', '.' (it is a folder name)")
    for label, value, low in (
        ("max batch size", max_batch_size, 0),
        ("max queue delay", max_queue_delay_us, 0),
        ("instances", instances, 1),
        ("version", version, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")
    bad = [size for size in preferred if not isinstance(size, int) or not 1 <= size <= max(max_batch_size, 0)]
    if bad:
        raise ConfigError(f"preferred batch sizes {bad} must lie in 1..max batch size ({max_batch_size})")


def _check_batching(metas: list[TensorMeta], max_batch_size: int, profile_max: int | None, model_file: Path) -> None:
    if max_batch_size == 0:
        return
    static = [m.name for m in metas if not m.shape or isinstance(m.shape[0], int) and m.shape[0] > 0]
    if static:
        raise ConfigError(
            f"{model_file}: {', '.join(static)} has a static batch dimension; Triton batching "
            "needs a dynamic one: re-export with --dynamic-batch, or use --max-batch 0"
        )
    if profile_max is not None and max_batch_size > profile_max:
        raise ConfigError(
            f"{model_file}: the engine's profile allows batch <= {profile_max}, not "
            f"{max_batch_size}; lower --max-batch or rebuild with --bs 1,{max_batch_size}"
        )


def _tensor_block(metas: list[TensorMeta], batched: bool) -> list[str]:
    lines = []
    for index, meta in enumerate(metas):
        if meta.dtype not in TRITON_TYPES:
            raise ConfigError(f"{meta.name}: dtype {meta.dtype} has no Triton type")
        shape = meta.shape[1:] if batched else meta.shape
        dims = ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in shape)
        lines += [
            "  {",
            f'    name: "{meta.name}"',
            f"    data_type: {TRITON_TYPES[meta.dtype]}",
            f"    dims: [ {dims} ]",
            "  }" + ("," if index < len(metas) - 1 else ""),
        ]
    return lines


def triton_config(
    *,
    name: str,
    platform: TritonPlatform,
    inputs: list[TensorMeta],
    outputs: list[TensorMeta],
    max_batch_size: int,
    preferred_batch_sizes: Sequence[int] = (),
    max_queue_delay_us: int = 100,
    instances: int = 1,
) -> str:
    """The text of ``config.pbtxt`` (Triton's ModelConfig in protobuf text format)."""
    batched = max_batch_size > 0
    lines = [f'name: "{name}"', f'platform: "{platform.value}"', f"max_batch_size: {max_batch_size}"]
    lines += ["input ["] + _tensor_block(inputs, batched) + ["]"]
    lines += ["output ["] + _tensor_block(outputs, batched) + ["]"]
    if batched:
        lines.append("dynamic_batching {")
        if preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(str(s) for s in preferred_batch_sizes)} ]")
        lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    kind = "KIND_GPU" if platform is TritonPlatform.TENSORRT else "KIND_AUTO"
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {kind}", "  }", "]"]
    return "\n".join(lines) + "\n"


def export_triton(
    model_file: str | os.PathLike,
    repository: str | os.PathLike,
    *,
    name: str,
    platform: str | TritonPlatform = "auto",
    max_batch_size: int = 32,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = 100,
    instances: int = 1,
    version: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write ``<repository>/<name>/`` (model file and ``config.pbtxt``) for Triton Inference Server.

    Args:
        model_file: an ``.onnx`` file, or a TensorRT ``.engine``/``.plan`` with its sidecar ``<engine>.json``.
        repository: the model repository folder (created if missing).
        name: the model's name in Triton (its folder name).
        platform: ``"auto"`` (from the suffix), ``"onnxruntime_onnx"`` or ``"tensorrt_plan"``.
        max_batch_size: the largest batch Triton forms (0: no batching; full shapes in ``dims``).
        preferred_batch_sizes: batch sizes the dynamic batcher aims for (default: none, Triton's advice).
        max_queue_delay_us: how long a request may wait for others to batch with.
        instances: model instances (``instance_group`` count); GPU for TensorRT, Triton's choice for ORT.
        version: the version folder.
        overwrite: replace an existing ``<repository>/<name>``.

    Returns:
        The model folder ``<repository>/<name>``.

    Raises:
        OnnxModelError / EngineError: unreadable model; ConfigError: invalid option, static batch with batching,
        batch above the engine profile, or an existing model folder without ``overwrite``.

    Example:
        >>> export_triton("yolov6n.onnx", "models", name="yolov6n", max_batch_size=32, preferred_batch_sizes=[8, 32])
    """
    model_file, repository = Path(model_file), Path(repository)
    preferred = sorted(set(preferred_batch_sizes or ()))
    _check_options(name, max_batch_size, preferred, max_queue_delay_us, instances, version)
    platform = _resolve_platform(model_file, platform)
    inputs, outputs, profile_max = _model_io(model_file, platform)
    _check_batching(inputs + outputs, max_batch_size, profile_max, model_file)
    config = triton_config(
        name=name,
        platform=platform,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
    )
    target = repository / name
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists; choose another --name or pass --force to replace it")
    return _write_model_dir(target, model_file, platform, version, config)


def _write_model_dir(target: Path, model_file: Path, platform: TritonPlatform, version: int, config: str) -> Path:
    """Assemble the model folder beside ``target`` and rename it into place (replacing an old one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        (staging / str(version)).mkdir()
        shutil.copyfile(model_file, staging / str(version) / platform.model_filename)
        (staging / "config.pbtxt").write_text(config)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and (old / target.name).exists() and not target.exists():
            os.replace(old / target.name, target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target
