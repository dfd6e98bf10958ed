"""Safe import of official YOLOv6 / YOLOv7 / YOLOv9 checkpoints (pickled whole models).

The official repositories save ``torch.save({'model': <nn.Module>, 'ema': ..., ...})``: unpickling that
normally imports their code and may execute anything the file names. Here it never does:

1. every global the pickle names is listed first (without unpickling); anything outside the official model
   classes, ``torch.nn`` modules and torch's own tensor-rebuild helpers is refused;
2. the allowed model classes are mapped to inert records (plain attribute bags, no methods run), and the file
   is read with torch's ``weights_only`` unpickler, which only ever rebuilds tensors and containers;
3. the state_dict is collected from the records' ``_parameters``/``_buffers``/``_modules`` in the order
   ``nn.Module.state_dict`` would use, and the architecture is recovered by matching it (keys and shapes)
   against the registered models of the family, in training or deploy form.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.reparam import reparameterize_model
from ..errors import ArchitectureMismatchError, CheckpointError, UnsafeCheckpointError
from ._registry import create_model, list_models
from .checkpoint import load_state_dict_checked

__all__ = ["import_official_checkpoint", "read_official_checkpoint", "OfficialRecord", "record_state_dict"]

# Classes that may appear in an official checkpoint; each becomes an inert record.
_RECORD_PREFIXES = (
    "yolov6.models.",
    "yolov6.layers.",
    "models.yolo.",
    "models.common.",
    "models.experimental.",
    "torch.nn.modules.",
)
# Plain-data globals some official files carry (numpy scalars/arrays in old yolov7 checkpoints).
_DATA_GLOBALS = {
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
}
# Which registry families can hold a model whose root class lives under this module prefix.
_FAMILIES = {
    "yolov6.models.yolo_lite.": ("yolov6_lite",),
    "yolov6.": ("yolov6", "yolov6_lite"),
    "models.": ("yolov7", "yolov9"),
}  # first matching prefix wins
# Head variants announced by state_dict keys (YOLOv6 options of create_model).
_VARIANT_HINTS = {"reg_preds_dist.": {"head": "distill_ns"}, "_ab.": {"head": "fuse_ab"}}


class OfficialRecord:
    """Inert stand-in for an official class: the pickle's state lands in ``__dict__``, nothing else runs."""

    official_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # called only if a pickle REDUCEs the class
        self.__dict__["_init_args"] = args

    def __repr__(self) -> str:
        return f"<record of {self.official_name}>"


@functools.cache
def _record_class(full_name: str) -> type[OfficialRecord]:
    return type(full_name.rsplit(".", 1)[-1], (OfficialRecord,), {"official_name": full_name})


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle an official checkpoint with every model class replaced by an inert record.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside the allow-list (e.g. ``os.system``).
        CheckpointError: the file is not a readable torch checkpoint.
    """
    path = Path(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a checkpoint we can read"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    stand_ins = []
    for name in names:
        if name.startswith(_RECORD_PREFIXES):
            stand_ins.append((_record_class(name), name))
        elif name in _DATA_GLOBALS:
            stand_ins.append((_data_global(name), name))
        else:
            raise UnsafeCheckpointError(
                f"{path}: refers to {name!r}, which is not part of any YOLO model; refusing to unpickle it "
                "(it could run code). Only load checkpoints from sources you trust."
            )
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        kind = UnsafeCheckpointError if "unsupported" in str(exc).lower() else CheckpointError
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise kind(f"{path}: cannot read checkpoint safely ({type(exc).__name__}: {first_line})") from None


def _data_global(name: str) -> Any:
    import numpy

    module_name, attr = name.rsplit(".", 1)
    module = numpy
    for part in module_name.split(".")[1:]:
        module = getattr(module, part)
    return getattr(module, attr)


def record_state_dict(record: OfficialRecord, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The state_dict ``nn.Module.state_dict`` would give for a recorded module: params, buffers, children."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    state = record.__dict__
    for name, param in (state.get("_parameters") or {}).items():
        if param is not None:
            out[prefix + name] = param.detach()
    skipped = state.get("_non_persistent_buffers_set") or set()
    for name, buffer in (state.get("_buffers") or {}).items():
        if buffer is not None and name not in skipped:
            out[prefix + name] = buffer
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, OfficialRecord):
            out.update(record_state_dict(child, f"{prefix}{name}."))
    return out


def import_official_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an official checkpoint as our model (eval mode, float32, in the form it was saved in).

    Example:
        >>> model = import_official_checkpoint("yolov6n.pt")
    """
    path = Path(path)
    ckpt = read_official_checkpoint(path)
    root = _model_record(ckpt, path)
    state_dict = record_state_dict(root)
    if not state_dict:
        raise CheckpointError(f"{path}: the pickled model holds no weights")
    num_classes = _num_classes(root, state_dict, path)
    state_dict = OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in state_dict.items())
    yaml_cfg = root.__dict__.get("yaml")
    if isinstance(yaml_cfg, dict):
        model = _model_from_yaml(root, yaml_cfg, num_classes, state_dict, path)
    else:
        arch, overrides, deploy = match_architecture(root, state_dict, num_classes, source=str(path))
        model = create_model(arch, num_classes=num_classes, **overrides)
        if deploy:
            model = reparameterize_model(model.eval(), inplace=True)
        load_state_dict_checked(model, state_dict, source=str(path))
    names = root.__dict__.get("names")
    if isinstance(names, (list, tuple)) and len(names) == num_classes:
        model.class_names = [str(n) for n in names]
    elif isinstance(names, dict) and len(names) == num_classes:
        model.class_names = [str(names[k]) for k in sorted(names)]
    return model.to(map_location).eval()


def _model_from_yaml(
    root: OfficialRecord, yaml_cfg: dict, num_classes: int, state_dict: dict[str, torch.Tensor], path: Path
) -> nn.Module:
    """Build the model a recorded official yaml describes (YOLOv7/YOLOv9 keep it on the model), then load.

    Each family module may offer ``model_from_official_yaml(yaml, num_classes) -> model | None`` (None: not
    this family's yaml). The weights may be in training form or already fused (``Model.fuse()``); both load.
    """
    families = next((fams for prefix, fams in _FAMILIES.items() if root.official_name.startswith(prefix)), ())
    for family in families:
        hook = getattr(importlib.import_module(f"{__package__}.{family}"), "model_from_official_yaml", None)
        model = hook(yaml_cfg, num_classes) if hook else None
        if model is None:
            continue
        model = next((form for form in _saved_forms(model.eval()) if _fits(form, state_dict)), model)
        load_state_dict_checked(model, state_dict, source=str(path))
        return model
    raise ArchitectureMismatchError(
        f"{path}: its recorded architecture ({root.official_name}) uses layers no registered family knows; "
        "see `yolodeploy models` for what is supported"
    )


def _saved_forms(model: nn.Module):
    """The forms an official model may have been saved in: as trained; blocks fused in place (``Model.fuse()``,
    auxiliary branches kept); fully converted to deploy form (auxiliary branches dropped)."""
    yield model
    in_place = copy.deepcopy(model)
    for child in in_place.children():
        reparameterize_model(child, inplace=True)
    yield in_place
    yield reparameterize_model(model)


def _fits(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> bool:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return expected == {k: tuple(v.shape) for k, v in state_dict.items()}


def _model_record(ckpt: Any, path: Path) -> OfficialRecord:
    if isinstance(ckpt, OfficialRecord):
        return ckpt
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict with 'model' or 'ema', got {type(ckpt).__name__}")
    for key in ("ema", "model"):
        record = ckpt.get(key)
        if isinstance(record, OfficialRecord):
            return record
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()) and ckpt:
        raise CheckpointError(
            f"{path}: a bare state_dict without architecture; build the model with create_model(name) and "
            "load it with model.load_state_dict"
        )
    raise CheckpointError(f"{path}: no pickled model under 'ema' or 'model' (keys: {sorted(map(str, ckpt))[:8]})")


def _num_classes(root: OfficialRecord, state_dict: dict[str, torch.Tensor], path: Path) -> int:
    nc = root.__dict__.get("nc")
    if isinstance(nc, int) and nc > 0:
        return nc
    yaml_cfg = root.__dict__.get("yaml")
    if isinstance(yaml_cfg, dict) and isinstance(yaml_cfg.get("nc"), int):
        return yaml_cfg["nc"]
    for key, tensor in state_dict.items():
        if ".cls_preds.0.weight" in key:
            return int(tensor.shape[0])
    raise ArchitectureMismatchError(f"{path}: cannot tell the number of classes (no 'nc' attribute)")


def match_architecture(
    root: OfficialRecord, state_dict: dict[str, torch.Tensor], num_classes: int, *, source: str
) -> tuple[str, dict[str, Any], bool]:
    """Find the registered model (name, create_model overrides, deploy form?) whose layout equals the weights'."""
    families = next((fams for prefix, fams in _FAMILIES.items() if root.official_name.startswith(prefix)), ())
    target = {k: tuple(v.shape) for k, v in state_dict.items()}
    variants = [{}] + [hint for marker, hint in _VARIANT_HINTS.items() if any(marker in k for k in target)]
    top_level = {k.split(".", 1)[0] for k in target}
    for family in families:
        names = _canonical_models(family)
        first = _signature(names[0], num_classes, (), False) if names else None
        if first is None or {k.split(".", 1)[0] for k in first} != top_level:
            continue  # a family's models share their top-level modules (backbone/neck/detect, model, ...)
        for name in names:
            for overrides in variants:
                for deploy in (False, True):
                    if _signature(name, num_classes, tuple(sorted(overrides.items())), deploy) == target:
                        return name, dict(overrides), deploy
    raise ArchitectureMismatchError(
        f"{source}: a {root.official_name} whose {len(target)} weights match no registered model "
        f"({', '.join(families) or 'unknown family'}); see `yolodeploy models` for what is supported"
    )


def _canonical_models(family: str) -> list[str]:
    """The family's model names, shortest first, so that aliases (``*_finetune``) resolve to their base name."""
    try:
        names = list_models(family=family)
    except Exception:  # noqa: BLE001 - a family not in this version of the zoo
        return []
    return sorted(names, key=lambda n: (len(n), n))


@functools.lru_cache(maxsize=512)
def _signature(name: str, num_classes: int, overrides: tuple, deploy: bool) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of a registered model, built on the meta device (no memory, no init cost)."""
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, **dict(overrides))
            if deploy:
                model = reparameterize_model(model.eval(), inplace=True)
    except Exception:  # noqa: BLE001 - a variant/override this model does not accept
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
