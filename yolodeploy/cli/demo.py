"""``yolodeploy demo``: the main job on the CPU default (grows with the pipeline)."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("demo")
@click.option("--model", "model_name", default="yolov6n", show_default=True, help="Registered model name.")
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--img", "img_size", default=320, show_default=True, help="Image size of the checks.")
@click.option("--num-classes", default=80, show_default=True, help="Classes of the demo model's head.")
def demo_command(model_name: str, out_dir: str, img_size: int, num_classes: int) -> None:
    """List the zoo, build a model, re-parameterize it (proven equal), save, reload and report."""
    from ..pipeline import run_demo

    report = run_demo(model_name, out_dir, img_size=img_size, num_classes=num_classes)
    click.echo("\n".join(report.lines()))
    if not (report.reparam.check and report.reload_check):
        raise SystemExit(1)


COMMANDS = [demo_command]
