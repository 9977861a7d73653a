"""The ``servekit`` command: a thin layer over the Python API of each stage."""

from __future__ import annotations

import click

from servekit import __version__
from servekit.cli._group import ServekitGroup
from servekit.cli.demo import demo
from servekit.cli.drift import drift
from servekit.cli.hash import hash_command
from servekit.cli.serve import serve_command


@click.group(cls=ServekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servekit")
def main() -> None:
    """servekit: package, register, benchmark, promote, serve and monitor ML models."""


main.add_command(hash_command)
main.add_command(demo)
main.add_command(drift)
main.add_command(serve_command)

__all__ = ["main"]
