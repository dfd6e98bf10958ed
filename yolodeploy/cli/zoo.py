"""``yolodeploy models`` and ``yolodeploy info``: what the zoo holds and what a checkpoint is."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--img", "img_size", default=640, show_default=True, help="Input size for the GFLOPs column.")
@click.option("--no-flops", is_flag=True, help="Only list names (fast).")
def models_command(pattern: str, img_size: int, no_flops: bool) -> None:
    """List registered models matching PATTERN (shell wildcards), with params and GFLOPs."""
    from ..errors import UnknownModelError
    from ..models import list_models
    from ..models.summary import summarize_model

    names = list_models(pattern)
    if not names:
        raise UnknownModelError(f"no model matches {pattern!r}; try `yolodeploy models` for the full list")
    if no_flops:
        click.echo("\n".join(names))
        return
    click.echo(f"{'model':<26}{'family':<13}{'params(train)':>14}{'params(deploy)':>16}{f'GFLOPs@{img_size}':>13}")
    for name in names:
        s = summarize_model(name, img_size)
        click.echo(
            f"{name:<26}{s.family:<13}{s.train_params / 1e6:>13.2f}M{s.deploy_params / 1e6:>15.2f}M{s.gflops:>13.2f}"
        )


@click.command("info")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
def info_command(checkpoint: str) -> None:
    """Describe a checkpoint (ours or an official .pt): architecture, form, classes, size."""
    from ..models.inspect import describe_checkpoint

    for key, value in describe_checkpoint(checkpoint).items():
        click.echo(f"{key:<16}{value}")


COMMANDS = [models_command, info_command]
