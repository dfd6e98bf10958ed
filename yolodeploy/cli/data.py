"""``yolodeploy data``: dataset tools (``data synth``: the synthetic shapes dataset)."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


def _parse_splits(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(part) for part in value.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3:
        from ..errors import DatasetError

        raise DatasetError(f"--splits expects three comma-separated fractions train,val,calib, got {value!r}")
    return fractions


@click.group("data")
def data_group() -> None:
    """Dataset tools."""


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", default=300, show_default=True, help="Total number of images (all splits).")
@click.option("--classes", default=4, show_default=True, help="Number of shape classes (1-8).")
@click.option("--img-size", default=320, show_default=True, help="Square image side in pixels.")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed: byte-identical dataset).")
@click.option("--splits", default="0.7,0.2,0.1", show_default=True, callback=_parse_splits, help="train,val,calib.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
def synth_command(
    out: str, images: int, classes: int, img_size: int, seed: int, splits: tuple[float, float, float], overwrite: bool
) -> None:
    """Draw a deterministic COCO-format dataset of textured shapes into OUT (train/val/calib splits)."""
    from ..core.data.synth import synthesize_dataset

    report = synthesize_dataset(
        out, images=images, classes=classes, img_size=img_size, seed=seed, splits=splits, overwrite=overwrite
    )
    click.echo(report.summary())


COMMANDS = [data_group]
