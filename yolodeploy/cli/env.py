"""``yolodeploy env``: the backends (PyTorch, ONNX Runtime, TensorRT, OpenVINO) and devices this machine has."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def env_command(as_json: bool) -> None:
    """Show which backends and devices are available here, with their versions."""
    from ..deploy.env_report import environment_report, format_environment_report

    report = environment_report()
    if as_json:
        import json

        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("\n".join(format_environment_report(report)))


COMMANDS = [env_command]
