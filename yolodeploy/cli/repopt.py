"""``yolodeploy repopt-scales``: extract the RepOptimizer scales of a trained hyper-search checkpoint."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("repopt-scales")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Destination .safetensors.")
def repopt_scales_command(checkpoint: str, output: str) -> None:
    """Write the branch scales of a hyper-search CHECKPOINT (e.g. yolov6n_hs) for RepOpt training."""
    from ..models import load_checkpoint
    from ..train.repopt import extract_scales, save_scales

    scales = extract_scales(load_checkpoint(checkpoint))
    save_scales(scales, output)
    identity = sum(len(branch_scales) == 3 for branch_scales in scales.values())
    click.echo(f"{checkpoint} -> {output}: scales of {len(scales)} blocks ({identity} with identity) of {scales.arch}")


COMMANDS = [repopt_scales_command]
