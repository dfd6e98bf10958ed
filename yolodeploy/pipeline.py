"""High-level jobs behind the CLI: convert, re-parameterize with proof, and the end-to-end demo.

Each job is one function returning a report dataclass; the CLI only formats it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch
from torch import nn

from .core.compare import CompareResult, compare_outputs
from .core.init import randomize_for_verification_
from .core.reparam import reparameterize_model
from .models import create_model, list_models, load_checkpoint, save_checkpoint
from .models.summary import count_parameters

__all__ = [
    "ReparamReport",
    "DemoReport",
    "convert_checkpoint",
    "reparameterize_checkpoint",
    "verify_reparameterization",
    "run_demo",
]


@dataclasses.dataclass
class ReparamReport:
    """What re-parameterization did: sizes before/after and the numerical proof on a random input."""

    arch: str
    train_params: int
    deploy_params: int
    check: CompareResult
    output: str | None = None

    def lines(self) -> list[str]:
        return [
            f"model          {self.arch}",
            f"params         {self.train_params:,} (as loaded) -> {self.deploy_params:,} (deploy form)",
            f"equivalence    {self.check}",
        ] + ([f"saved          {self.output}"] if self.output else [])


def verify_reparameterization(
    model: nn.Module, deploy: nn.Module, *, img_size: int = 256, batch: int = 1, seed: int = 0
) -> CompareResult:
    """Compare eval outputs of a model and its deploy form on a seeded random image batch.

    Tolerance: 1e-4 relative to the largest output magnitude (decoded boxes are in pixels; fusion changes
    float32 summation order only).
    """
    stride = max(getattr(model, "strides", (32,)))
    img_size = max(stride, img_size // stride * stride)
    x = torch.rand(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref, test = model.eval()(x), deploy.eval()(x)
    scale = float(ref.abs().max())
    return compare_outputs(ref, test, name="train vs deploy", atol=1e-4 * max(scale, 1.0), rtol=0.0)


def convert_checkpoint(source: str | os.PathLike, output: str | os.PathLike, *, half: bool = False) -> nn.Module:
    """Import any supported checkpoint (e.g. an official ``.pt``) and write it in the portable format."""
    model = load_checkpoint(source)
    save_checkpoint(model, output, half=half, source=Path(source).name)
    return model


def reparameterize_checkpoint(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    verify: bool = True,
    img_size: int = 256,
    half: bool = False,
) -> ReparamReport:
    """Load a checkpoint, convert it to deploy form, prove equality on a random input, and save it."""
    model = load_checkpoint(source)
    deploy = reparameterize_model(model)
    check = verify_reparameterization(model, deploy, img_size=img_size) if verify else None
    if check is not None and not check:
        from .errors import YoloDeployError

        raise YoloDeployError(f"re-parameterization changed the outputs ({check}); please report this bug")
    save_checkpoint(deploy, output, half=half, source=Path(source).name)
    return ReparamReport(model.arch, count_parameters(model), count_parameters(deploy), check, str(output))


@dataclasses.dataclass
class DemoReport:
    zoo_size: int
    families: dict[str, int]
    reparam: ReparamReport
    reload_check: CompareResult
    train_file: str
    deploy_file: str
    seconds: float

    def lines(self) -> list[str]:
        fams = ", ".join(f"{k} {v}" for k, v in sorted(self.families.items()))
        return [
            f"zoo            {self.zoo_size} models ({fams})",
            *self.reparam.lines(),
            f"train ckpt     {self.train_file}",
            f"reload         {self.reload_check}",
            f"total time     {self.seconds:.1f} s",
        ]


def run_demo(
    model_name: str = "yolov6n",
    out_dir: str | os.PathLike = "runs/demo",
    *,
    img_size: int = 320,
    num_classes: int = 80,
    seed: int = 0,
) -> DemoReport:
    """The main job on the CPU default: build, re-parameterize (proven), save, reload (proven), report."""
    from .models._registry import model_family

    start = time.perf_counter()
    out = Path(out_dir)
    names = list_models()
    families: dict[str, int] = {}
    for name in names:
        families[model_family(name)] = families.get(model_family(name), 0) + 1
    torch.manual_seed(seed)
    # An untrained model has identity BN statistics and zero-initialised heads: give it trained-like
    # statistics so that the equivalence proof below exercises every branch (a trained checkpoint has them).
    model = randomize_for_verification_(create_model(model_name, num_classes=num_classes), seed).eval()
    train_file = save_checkpoint(model, out / f"{model_name}.safetensors")
    deploy = reparameterize_model(model)
    check = verify_reparameterization(model, deploy, img_size=img_size)
    deploy_file = save_checkpoint(deploy, out / f"{model_name}_deploy.safetensors")
    reloaded = load_checkpoint(deploy_file)
    x = torch.rand(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        reload_check = compare_outputs(deploy(x), reloaded(x), name="deploy vs reloaded", atol=0.0, rtol=0.0)
    report = ReparamReport(model.arch, count_parameters(model), count_parameters(deploy), check, str(deploy_file))
    return DemoReport(
        len(names), families, report, reload_check, str(train_file), str(deploy_file), time.perf_counter() - start
    )
