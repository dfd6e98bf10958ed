"""``yolodeploy convert`` and ``yolodeploy reparam``: checkpoint format and form conversions."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("convert")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Destination .safetensors.")
@click.option("--half", is_flag=True, help="Store weights as fp16 (half the size).")
def convert_command(source: str, output: str, half: bool) -> None:
    """Import an official YOLO checkpoint (pickled .pt, read safely) into the portable format."""
    from ..pipeline import convert_checkpoint

    model = convert_checkpoint(source, output, half=half)
    click.echo(f"{source} -> {output}: {model.arch} ({model.form} form, {model.num_classes} classes)")


@click.command("reparam")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Destination .safetensors.")
@click.option("--img", "img_size", default=256, show_default=True, help="Image size of the equivalence check.")
@click.option("--no-verify", is_flag=True, help="Skip the numerical equivalence check.")
@click.option("--half", is_flag=True, help="Store weights as fp16.")
def reparam_command(checkpoint: str, output: str, img_size: int, no_verify: bool, half: bool) -> None:
    """Re-parameterize CHECKPOINT into its deploy form, prove it equal, and save it."""
    from ..pipeline import reparameterize_checkpoint

    report = reparameterize_checkpoint(checkpoint, output, verify=not no_verify, img_size=img_size, half=half)
    click.echo("\n".join(report.lines()) if report.check else f"{report.arch} -> {output} (not verified)")


COMMANDS = [convert_command, reparam_command]
