"""The training loop: data, forward/loss, accumulation, EMA, schedule, per-epoch evaluation, checkpoints, resume.

Outputs in ``config.output``: ``last.safetensors`` / ``best.safetensors`` (portable checkpoints of the EMA
weights, written atomically), ``state.safetensors`` (everything ``--resume`` needs) and ``results.json`` (one
record per epoch). Under ``torchrun`` the same code trains with DistributedDataParallel; rank 0 evaluates and
writes. Every random draw of the data pipeline is a function of (seed, epoch, index), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DatasetError
from ..utils.io import atomic_write_text
from .config import TrainConfig
from .distributed import DistributedContext, init_distributed, shard_indices
from .ema import ModelEMA, unwrap
from .objective import build_objective
from .optim import accumulation_steps, apply_schedule, build_sgd, param_groups, scaled_weight_decay
from .state import load_training_state, read_state_metadata, save_training_state

__all__ = ["Trainer", "TrainResult", "STATE_FILE", "resume_config"]

STATE_FILE = "state.safetensors"


@dataclass
class TrainResult:
    """Where the run wrote its checkpoints, its per-epoch history and the best AP seen."""

    output: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_ap: float | None = None
    epochs_done: int = 0
    finished: bool = False
    train_seconds: float = 0.0

    @property
    def best(self) -> Path:
        return self.output / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.output / "last.safetensors"


def resume_config(output: str | Path, **overrides: Any) -> TrainConfig:
    """The config stored in ``output``'s state file, with run-local fields (device, workers, ...) replaced."""
    meta = read_state_metadata(Path(output) / STATE_FILE)
    data = {**meta["config"], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict(data)


class Trainer:
    """Train ``config.model`` on ``config.data``; ``resume=True`` continues from ``config.output``'s state."""

    def __init__(self, config: TrainConfig, *, resume: bool = False) -> None:
        self.config = config
        self.resume = resume
        self.context: DistributedContext = init_distributed(config.device)
        self.device = torch.device(_device_name(config.device, self.context))
        self.output = Path(config.output)

    # --- setup -----------------------------------------------------------------------------------------------

    def _datasets(self):
        from ..core.data.augment import AugmentConfig
        from ..core.data.datasets import CocoDetection
        from ..core.data.train_dataset import TrainDetectionDataset
        from ..core.evaluation_run import EvalConfig, resolve_split

        cfg = self.config
        image_dir, ann_file = resolve_split(EvalConfig(model="-", data=cfg.data, split=cfg.train_split))
        base = CocoDetection(image_dir, ann_file)
        augment = AugmentConfig.from_dict(cfg.augment)
        train = TrainDetectionDataset(base, cfg.img_size, augment, seed=cfg.seed, border=cfg.border)
        try:
            resolve_split(EvalConfig(model="-", data=cfg.data, split=cfg.val_split))
            has_val = True
        except DatasetError:
            warnings.warn(f"no {cfg.val_split!r} split in {cfg.data}: training without evaluation", stacklevel=2)
            has_val = False
        return base, train, has_val

    def _model(self, num_classes: int, class_names: list[str]) -> nn.Module:
        from ..models import create_model
        from ..models.checkpoint import load_checkpoint

        torch.manual_seed(self.config.seed)
        if self.config.weights:
            model = load_checkpoint(self.config.weights)
            if model.num_classes != num_classes:
                raise ConfigError(
                    f"--weights {self.config.weights} has {model.num_classes} classes, the dataset {num_classes}"
                )
            if getattr(model, "form", "train") != "train":
                raise ConfigError(f"--weights {self.config.weights} is a deploy-form checkpoint; give a training one")
        else:
            overrides = {"head": self.config.head} if self.config.head else {}
            model = create_model(self.config.model, num_classes=num_classes, **overrides)
        model.class_names = list(class_names)
        return model.to(self.device).train()

    def _optimizer(self, model: nn.Module, accumulate: int) -> torch.optim.Optimizer:
        if self.config.repopt_scales:
            from .repopt import build_repopt_optimizer, check_scales_match, load_scales, reinit_from_scales_

            scales = load_scales(self.config.repopt_scales)
            check_scales_match(model, scales)
            if not self.resume:
                reinit_from_scales_(model, scales)
            optim = self.config.optim
            decay = scaled_weight_decay(optim, self.config.batch_size, accumulate)
            optimizer = build_repopt_optimizer(
                model, scales, lr=optim.lr0, momentum=optim.momentum, param_groups=param_groups(model, decay)
            )
            for group in optimizer.param_groups:
                group["initial_lr"] = optim.lr0
            return optimizer
        return build_sgd(model, self.config.optim, self.config.batch_size, accumulate)

    def _teacher(self):
        if not self.config.teacher:
            return None, None
        from ..models.checkpoint import load_checkpoint
        from .distill import SelfDistillationLoss

        teacher = load_checkpoint(self.config.teacher).to(self.device)
        if getattr(teacher, "form", "train") != "train":
            raise ConfigError(f"--teacher {self.config.teacher} is a deploy-form checkpoint; give a training one")
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher, SelfDistillationLoss(teacher.num_classes, **self.config.distill)

    def _loader(self, train_dataset, epoch: int):
        from ..core.data.train_dataset import train_collate

        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train_dataset), generator=generator).tolist()
        indices = shard_indices(order, self.context)
        batches = [indices[i : i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
        mosaic = epoch < cfg.epochs - cfg.close_mosaic
        train_dataset.set_epoch(epoch, mosaic=mosaic)
        return torch.utils.data.DataLoader(
            train_dataset, batch_sampler=batches, num_workers=cfg.workers, collate_fn=train_collate,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip

    # --- the loop ----------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``config.epochs`` (or ``stop_after`` more epochs); return where everything went."""
        cfg, context = self.config, self.context
        base, train_dataset, has_val = self._datasets()
        model = self._model(len(base.category_ids), base.class_names)
        objective = build_objective(model, **_loss_options(cfg.loss)).to(self.device)
        accumulate = accumulation_steps(cfg.batch_size, context.world_size, cfg.optim.nominal_batch)
        optimizer = self._optimizer(model, accumulate)
        ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
        teacher, distiller = self._teacher()
        progress = _Progress(self.output, cfg)
        if self.resume:
            progress.restore(load_training_state(self.output / STATE_FILE, model, ema.ema, optimizer))
            ema.updates = progress.ema_updates
        if context.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[context.local_rank] if self.device.type == "cuda" else None
            )  # noqa: E501
        amp = cfg.amp and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        steps_per_epoch = math.ceil(len(shard_indices(list(range(len(train_dataset))), context)) / cfg.batch_size)
        run_epochs = 0
        for epoch in range(progress.next_epoch, cfg.epochs):
            tick = time.perf_counter()
            losses = self._train_epoch(
                model, objective, optimizer, ema, scaler, amp, train_dataset, epoch, steps_per_epoch, accumulate,
                progress, teacher, distiller,
            )  # fmt: skip
            train_seconds = time.perf_counter() - tick
            record = {"epoch": epoch + 1, **losses, "train_seconds": round(train_seconds, 2),
                      "images_per_second": round(len(train_dataset) / train_seconds, 2)}  # fmt: skip
            if context.is_main:
                self._end_epoch(model, ema, optimizer, progress, record, epoch, has_val)
            context.barrier()
            run_epochs += 1
            if cfg.stop_after and run_epochs >= cfg.stop_after and epoch + 1 < cfg.epochs:
                break
        self.model = unwrap(model)
        return progress.result(finished=progress.next_epoch >= cfg.epochs)

    def _train_epoch(self, model, objective, optimizer, ema, scaler, amp, dataset, epoch, steps_per_epoch,
                     accumulate, progress, teacher, distiller) -> dict[str, float]:  # fmt: skip
        cfg = self.config
        model.train()
        sums: dict[str, float] = {}
        loader = self._loader(dataset, epoch)
        bar = _progress_bar(loader, cfg.progress and self.context.is_main, f"epoch {epoch + 1}/{cfg.epochs}")
        for index, (images, targets) in enumerate(bar):
            step = epoch * steps_per_epoch + index
            lr = apply_schedule(optimizer, cfg.optim, step, epoch, cfg.epochs, steps_per_epoch)
            images = images.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=amp):
                output = model(images)
                result = objective(output, targets.to(self.device), epoch)
                loss, parts = result.total, dict(result.parts)
                if distiller is not None:
                    from .distill import teacher_forward

                    distill_loss, distill_parts = distiller(
                        output, teacher_forward(teacher, images), epoch, cfg.epochs, result.fg_mask
                    )
                    loss = loss + distill_loss
                    parts.update({f"kd_{k}": v for k, v in distill_parts.items()})
            scaler.scale(loss).backward()
            last_of_epoch = index + 1 == steps_per_epoch  # no gradient is carried over an epoch end (exact resume)
            if step + 1 - progress.last_optimizer_step >= accumulate or last_of_epoch:
                _optimizer_step(model, optimizer, scaler, ema)
                progress.last_optimizer_step = step + 1
            for name, value in {"loss": loss.detach(), **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.2e}", refresh=False)
        count = max(index + 1, 1) if steps_per_epoch else 1
        return {name: round(total / count, 5) for name, total in sums.items()} | {"lr": lr}

    def _end_epoch(self, model, ema, optimizer, progress, record, epoch, has_val) -> None:
        from ..models.checkpoint import save_checkpoint

        cfg = self.config
        last_epoch = epoch + 1 == cfg.epochs
        if has_val and ((epoch + 1) % cfg.eval_interval == 0 or last_epoch):
            record.update(self._evaluate(ema.ema))
        progress.add(record, epoch, ema.updates)
        meta = {"epoch": epoch + 1, "metrics": record, "train_config": cfg.to_dict()}
        save_checkpoint(ema.ema, self.output / "last.safetensors", **meta)
        if progress.improved:
            save_checkpoint(ema.ema, self.output / "best.safetensors", **meta)
        save_training_state(self.output / STATE_FILE, unwrap(model), ema.ema, optimizer, progress.to_meta(cfg))
        atomic_write_text(self.output / "results.json", json.dumps(progress.history, indent=2) + "\n")
        if cfg.progress:
            shown = {k: record[k] for k in ("loss", "ap", "ap50") if k in record}
            print(f"epoch {epoch + 1}/{cfg.epochs}: {json.dumps(shown)}", flush=True)

    def _evaluate(self, ema_model: nn.Module) -> dict[str, float]:
        from ..core.evaluation_run import EvalConfig, evaluate_model

        cfg = self.config
        config = EvalConfig(model=cfg.model, data=cfg.data, split=cfg.val_split, img_size=cfg.img_size,
                            border=cfg.border, batch=cfg.eval_batch, backend="torch")  # fmt: skip
        model = copy.deepcopy(ema_model).eval()
        metrics = evaluate_model(config, model=model).metrics
        return {"ap": round(metrics.ap, 5), "ap50": round(metrics.ap50, 5), "ap75": round(metrics.ap75, 5)}


class _Progress:
    """Epoch counters, history and best AP: what a resumed run must continue from."""

    def __init__(self, output: Path, config: TrainConfig) -> None:
        self.output, self.history = output, []
        self.next_epoch, self.last_optimizer_step, self.ema_updates = 0, 0, 0
        self.best_ap: float | None = None
        self.improved = False
        self.started = time.perf_counter()
        self.previous_seconds = 0.0

    def restore(self, meta: dict[str, Any]) -> None:
        self.next_epoch = meta["next_epoch"]
        self.last_optimizer_step = meta["last_optimizer_step"]
        self.ema_updates = meta["ema_updates"]
        self.best_ap, self.history = meta["best_ap"], meta["history"]
        self.previous_seconds = meta.get("train_seconds", 0.0)

    def add(self, record: dict[str, Any], epoch: int, ema_updates: int) -> None:
        self.history.append(record)
        self.next_epoch, self.ema_updates = epoch + 1, ema_updates
        ap = record.get("ap")
        self.improved = ap is not None and (self.best_ap is None or ap > self.best_ap)
        if self.improved:
            self.best_ap = ap
        elif ap is None and self.best_ap is None:
            self.improved = True  # no evaluation: the latest weights are the best we know

    def elapsed(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started

    def to_meta(self, config: TrainConfig) -> dict[str, Any]:
        return {"config": config.to_dict(), "next_epoch": self.next_epoch, "best_ap": self.best_ap,
                "last_optimizer_step": self.last_optimizer_step, "ema_updates": self.ema_updates,
                "history": self.history, "train_seconds": self.elapsed()}  # fmt: skip

    def result(self, finished: bool) -> TrainResult:
        return TrainResult(self.output, self.history, self.best_ap, self.next_epoch, finished, self.elapsed())


def _optimizer_step(model: nn.Module, optimizer, scaler, ema: ModelEMA) -> None:
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    ema.update(model)


def _progress_bar(loader, enabled: bool, description: str):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=description, leave=False, dynamic_ncols=True, mininterval=2.0)


def _device_name(device: str, context: DistributedContext) -> str:
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
        return f"cuda:{context.local_rank}" if context.enabled else device
    if device != "cpu":
        raise ConfigError(f"--device must be cpu or cuda[:N], got {device!r}")
    return "cpu"


def _loss_options(options: dict[str, Any]) -> dict[str, Any]:
    from ..core.losses import IoUKind

    options = dict(options)
    if isinstance(options.get("iou_kind"), str):
        options["iou_kind"] = IoUKind[options["iou_kind"].upper()]
    return options
