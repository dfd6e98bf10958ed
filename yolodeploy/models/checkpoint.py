"""Checkpoint I/O in the portable format: safetensors tensors + JSON metadata.

A yolodeploy checkpoint is one ``.safetensors`` file. Its header metadata holds a single JSON document
under the key ``"yolodeploy"``: format version, model class and full architecture config, num_classes,
class names, input size, form (train | deploy | quantized), and free-form user metadata. Loading reads JSON and raw
tensors only: it never unpickles or executes anything. Official (pickled) YOLO checkpoints are imported by
``yolodeploy.models.official`` through the same ``load_checkpoint`` entry point.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..core.reparam import reparameterize_model
from ..errors import ArchitectureMismatchError, CheckpointError
from ..utils.io import atomic_path
from ._registry import get_model_class

__all__ = ["save_checkpoint", "load_checkpoint", "read_metadata", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "yolodeploy-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "yolodeploy"
_MAX_HEADER = 100 * 1024 * 1024


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, half: bool = False, **meta: Any) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically.

    Args:
        model: a zoo detector (it must carry ``config`` and be a registered model class).
        path: destination file.
        half: store floating-point tensors as fp16 (half the size; loads back as fp32).
        **meta: extra JSON-able metadata (e.g. ``class_names=[...]``, ``source="..."``).

    Example:
        >>> save_checkpoint(create_model("yolov6n"), "yolov6n.safetensors")
    """
    from safetensors.torch import save_file

    path = Path(path)
    metadata = _build_metadata(model, meta)
    tensors = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[key] = tensor.contiguous().clone()  # clone: safetensors refuses shared storage
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(metadata)})
    return path


def _build_metadata(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise CheckpointError(
            f"cannot save a {type(model).__name__}: only zoo models (create_model / load_checkpoint) carry the "
            "architecture config a portable checkpoint needs"
        )
    get_model_class(type(model).__name__)  # raises if a checkpoint of this class could not be loaded back
    form = meta.pop("form", None) or getattr(model, "form", "train")
    class_names = meta.pop("class_names", None) or getattr(model, "class_names", None)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "yolodeploy_version": __version__,
        "model_class": type(model).__name__,
        "arch": getattr(model, "arch", None),
        "config": config.to_dict(),
        "num_classes": config.num_classes,
        "class_names": list(class_names) if class_names else None,
        "input_size": list(getattr(config, "input_size", (640, 640))),
        "form": form,
        "user": meta,
    }


def read_json_metadata(path: str | os.PathLike, key: str, *, missing: str, corrupt: str) -> tuple[Path, dict[str, Any]]:
    """``(path, document)``: the JSON document stored under ``key`` in a safetensors header (no tensor is read).

    ``missing`` and ``corrupt`` complete the one-line CheckpointError messages (``corrupt`` gets the parse error
    in ``{exc}``). Used by checkpoints and by other yolodeploy safetensors files (RepOpt scales).
    """
    path = _existing_file(path)
    header = _read_safetensors_header(path)
    raw = (header.get("__metadata__") or {}).get(key)
    if raw is None:
        raise CheckpointError(f"{path}: {missing}")
    try:
        return path, json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: {corrupt.format(exc=exc)}") from None


def check_format_version(path: Path, meta: dict[str, Any], supported: int) -> None:
    """CheckpointError if ``meta`` was written by a newer yolodeploy than this one reads."""
    if meta.get("format_version", 0) > supported:
        raise CheckpointError(f"{path}: written by a newer yolodeploy (format {meta['format_version']}); upgrade")


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a yolodeploy checkpoint, validated (no tensor is read)."""
    path, meta = read_json_metadata(
        path,
        _META_KEY,
        missing="a safetensors file without yolodeploy metadata; it was not written by save_checkpoint (import "
        "plain weights with create_model(...).load_state_dict)",
        corrupt="corrupt yolodeploy metadata ({exc})",
    )
    if meta.get("format") != FORMAT_NAME or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: metadata is not a {FORMAT_NAME} document")
    check_format_version(path, meta, FORMAT_VERSION)
    return meta


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a yolodeploy checkpoint, or import an official YOLOv6/v7/v9 ``.pt`` checkpoint safely.

    The returned model is in eval mode, in the form it was saved in (train or deploy).

    Raises:
        CheckpointError: missing, truncated or unrecognised file (subclasses for unsafe pickles and
            architecture mismatches).

    Example:
        >>> model = load_checkpoint("yolov6n.safetensors")
    """
    path = _existing_file(path)
    kind = sniff_format(path)
    if kind == "pickle":
        from .official import import_official_checkpoint

        return import_official_checkpoint(path, map_location=map_location)
    meta = read_metadata(path)
    if meta.get("form") == "quantized":
        from ..quant.model import load_quantized

        return load_quantized(path, map_location=map_location)
    model = model_from_metadata(meta)
    state_dict = _read_tensors(path, map_location)
    load_state_dict_checked(model, state_dict, source=str(path))
    return model.eval()


def model_from_metadata(meta: dict[str, Any]) -> nn.Module:
    """Build the (randomly initialised) model a checkpoint describes, in the checkpoint's form."""
    cls = get_model_class(meta["model_class"])
    try:
        model = cls.from_config(meta["config"], arch=meta.get("arch"))
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint config does not describe a valid {meta['model_class']}: {exc}") from None
    if meta.get("class_names"):
        model.class_names = list(meta["class_names"])
    if meta.get("form") == "deploy":
        model = reparameterize_model(model.eval(), inplace=True)
    return model


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Strict load with a one-line, actionable error instead of PyTorch's multi-line report."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise ArchitectureMismatchError(f"{source}: weights do not fit {getattr(model, 'arch', 'the model')}: {detail}")
    cast = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(cast, strict=True)


def sniff_format(path: Path) -> str:
    """'safetensors' or 'pickle' (a torch zip or legacy pickle), from the first bytes; else CheckpointError."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file is empty or truncated ({len(head)} bytes); re-download or re-export it")
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 0 < header_len < _MAX_HEADER:  # checked first: its length may start with 0x80
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "pickle"
    if head[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: a plain pickle, not a torch.save archive; yolodeploy imports only torch.save checkpoints "
            "(PyTorch >= 1.6 format) and never unpickles arbitrary files"
        )
    raise CheckpointError(
        f"{path}: not a checkpoint (expected a yolodeploy .safetensors file or an official YOLO .pt file)"
    )


def _read_safetensors_header(path: Path) -> dict[str, Any]:
    if sniff_format(path) != "safetensors":
        raise CheckpointError(f"{path}: not a safetensors file; official .pt checkpoints import with load_checkpoint")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: truncated file (header runs past the end); re-create it")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt safetensors header; re-create it") from None
    data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_len + data_end > size:
        raise CheckpointError(f"{path}: truncated file ({size} bytes, tensors need {8 + header_len + data_end})")
    return header


def _read_tensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(map_location))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: unreadable tensors ({exc}); re-create the checkpoint") from None


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    return path
