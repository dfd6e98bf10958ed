"""``yolodeploy`` command line: a thin click layer over the library.

Every command parses options, calls one library function and prints its result. User errors
(``YoloDeployError``) become one line on stderr and exit code 1; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import YoloDeployError


class _Group(click.Group):
    """A click group that turns ``YoloDeployError`` into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except YoloDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="yolodeploy")
def cli() -> None:
    """Re-parameterize, quantize, export and benchmark YOLOv6/v7/v9 detectors."""


def _register_commands() -> None:
    from . import benchmark, convert, data, demo, engine, env, evaluate, export, quant, quantize, repopt, train, zoo

    for module in (zoo, convert, demo, benchmark, engine, env, export, data, evaluate, repopt, train, quant, quantize):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main() -> None:
    cli(prog_name="yolodeploy")


if __name__ == "__main__":
    main()
