"""``yolodeploy train``: train a zoo model on a COCO-format dataset (also under ``torchrun`` for DDP)."""

from __future__ import annotations

import json

import click

__all__ = ["COMMANDS"]


def _json_option(value: str | None, name: str) -> dict:
    from ..errors import ConfigError

    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} must be a JSON object, e.g. '{{\"mosaic\": 0.5}}' ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name} must be a JSON object, e.g. '{{\"mosaic\": 0.5}}'")
    return parsed


@click.command("train")
@click.option("--model", help="Zoo model name, e.g. yolov6n (not needed with --resume).")
@click.option("--data", type=click.Path(), help="Dataset root: images/<split>/, annotations/instances_<split>.json.")
@click.option("--head", type=click.Choice(["default", "fuse_ab", "distill_ns"]), help="YOLOv6 training head variant.")
@click.option("--epochs", default=100, show_default=True)
@click.option("--img", "img_size", default=640, show_default=True, help="Square training/eval size.")
@click.option("--batch", "batch_size", default=16, show_default=True, help="Images per step and process.")
@click.option("--nominal-batch", default=64, show_default=True, help="Gradients are accumulated to this batch.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N] (AMP on CUDA).")
@click.option("--workers", default=2, show_default=True, help="Data-loading processes.")
@click.option("--output", "-o", default="runs/train", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
@click.option("--lr0", default=0.01, show_default=True)
@click.option("--lrf", default=0.01, show_default=True, help="Final LR as a fraction of --lr0 (cosine).")
@click.option("--warmup-epochs", default=3.0, show_default=True)
@click.option("--min-warmup-steps", default=1000, show_default=True, help="Warm-up lasts at least this many steps.")
@click.option("--close-mosaic", default=15, show_default=True, help="Mosaic off for the last N epochs ('fade').")
@click.option("--augment", "augment_json", help="JSON of augmentation overrides, e.g. '{\"mixup\": 0.1}'.")
@click.option("--iou-loss", type=click.Choice(["giou", "siou", "ciou", "diou", "iou"]), help="Box IoU loss.")
@click.option("--atss-warmup-epochs", type=int, help="Epochs assigned with ATSS before TAL.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Start from this training-form checkpoint.")
@click.option("--teacher", type=click.Path(dir_okay=False), help="Self-distillation teacher checkpoint.")
@click.option("--distill", "distill_json", help="JSON of self-distillation options (temperature, weights).")
@click.option("--repopt-scales", type=click.Path(dir_okay=False), help="RepOpt stage: scales from hyper-search.")
@click.option("--eval-interval", default=1, show_default=True, help="Evaluate the EMA model every N epochs.")
@click.option("--stop-after", type=int, help="Stop (resumably) after N epochs of this invocation.")
@click.option("--resume", is_flag=True, help="Continue the run in --output exactly where it stopped.")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_command(**options) -> None:
    """Train a detector with the YOLOv6 recipe: SGD + warm-up + cosine, EMA, TAL, mosaic fade, per-epoch eval.

    Checkpoints (EMA weights) go to OUTPUT/best.safetensors and OUTPUT/last.safetensors. Under
    `torchrun --nproc_per_node N yolodeploy train ...` it trains with DistributedDataParallel.
    """
    from ..train.config import TrainConfig
    from ..train.trainer import Trainer, resume_config

    config = _build_config(options, TrainConfig, resume_config)
    result = Trainer(config, resume=options["resume"]).fit()
    state = "finished" if result.finished else f"stopped after epoch {result.epochs_done} (continue with --resume)"
    best = f"{result.best_ap:.4f}" if result.best_ap is not None else "n/a"
    click.echo(f"{state}; best AP {best}; {result.train_seconds:.0f} s; checkpoints in {result.output}")


def _build_config(options: dict, config_class, resume_config):
    from ..errors import ConfigError
    from ..train.optim import OptimConfig

    if options["resume"]:
        return resume_config(options["output"], stop_after=options["stop_after"], workers=options["workers"],
                             device=options["device"], progress=not options["quiet"])  # fmt: skip
    if not options["model"] or not options["data"]:
        raise ConfigError("train needs --model and --data (or --resume with the --output of a previous run)")
    loss = {}
    if options["iou_loss"]:
        loss["iou_kind"] = options["iou_loss"]
    if options["atss_warmup_epochs"] is not None:
        loss["warmup_epochs"] = options["atss_warmup_epochs"]
    optim = OptimConfig(
        lr0=options["lr0"], lrf=options["lrf"], warmup_epochs=options["warmup_epochs"],
        min_warmup_steps=options["min_warmup_steps"], nominal_batch=options["nominal_batch"],
    )  # fmt: skip
    return config_class(
        model=options["model"], data=options["data"], head=options["head"], epochs=options["epochs"],
        img_size=options["img_size"],
        batch_size=options["batch_size"], device=options["device"], workers=options["workers"],
        output=options["output"], seed=options["seed"], optim=optim,
        augment=_json_option(options["augment_json"], "--augment"), close_mosaic=options["close_mosaic"],
        loss=loss, weights=options["weights"], teacher=options["teacher"],
        distill=_json_option(options["distill_json"], "--distill"), repopt_scales=options["repopt_scales"],
        eval_interval=options["eval_interval"], stop_after=options["stop_after"], amp=not options["no_amp"],
        progress=not options["quiet"],
    )  # fmt: skip


COMMANDS = [train_command]
