"""Model size and cost: parameter counts and GFLOPs, computed on the meta device (no memory, no weights)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.reparam import reparameterize_model
from ._registry import create_model, model_family

__all__ = ["ModelSummary", "summarize_model", "count_parameters", "count_gflops"]


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Size of one registered model: params in training and deploy form, deploy GFLOPs at ``img_size``."""

    name: str
    family: str
    train_params: int
    deploy_params: int
    gflops: float
    img_size: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def count_parameters(model: nn.Module) -> int:
    """All parameters (including frozen ones, as the official repos count)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, img_size: int | tuple[int, int] = 640, batch: int = 1) -> float:
    """Forward GFLOPs (2 x multiply-accumulates, the convention of the YOLO papers) for one input size."""
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.zeros(batch, 3, height, width, device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() / 1e9


def summarize_model(name: str, img_size: int = 640, **overrides) -> ModelSummary:
    """Parameters (train/deploy) and deploy-form GFLOPs of a registered model, without allocating weights.

    Example:
        >>> summarize_model("yolov6n").gflops
    """
    with torch.device("meta"):
        model = create_model(name, **overrides).eval()
        train_params = count_parameters(model)
        deploy = reparameterize_model(model, inplace=True)
        gflops = count_gflops(deploy, img_size)
    return ModelSummary(name, model_family(name), train_params, count_parameters(deploy), gflops, img_size)
