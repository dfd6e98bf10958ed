"""The resumable training state: one safetensors file (weights, EMA, optimizer tensors) + JSON metadata.

Tensors are stored under ``model.*``, ``ema.*`` and ``optimizer.<param index>.<key>``; everything else (epoch,
step counters, optimizer hyper-parameters, the run's config, RNG state) is JSON. No pickle anywhere, so a state
file can be loaded as safely as a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..utils.io import atomic_path

__all__ = ["save_training_state", "load_training_state", "read_state_metadata"]

_META_KEY = "yolodeploy-train-state"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_training_state(
    path: str | os.PathLike, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> Path:
    """Write the state atomically (a crash mid-write leaves the previous state intact)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous().clone() for k, v in ema.state_dict().items()})
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    document = {**meta, "optimizer": optimizer_meta, "torch_rng": torch.get_rng_state().tolist()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(document)})
    return Path(path)


def read_state_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON part of a state file; CheckpointError if it is missing or not a training state."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from; train without --resume first")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        return json.loads(meta[_META_KEY])
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same to the user
        raise CheckpointError(f"{path}: not a readable yolodeploy training state ({exc})") from None


def load_training_state(
    path: str | os.PathLike, model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore weights, EMA, optimizer (tensors and hyper-parameters) and torch's RNG; return the metadata."""
    from safetensors.torch import load_file

    meta = read_state_metadata(path)
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    optimizer_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return meta
