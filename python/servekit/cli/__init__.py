"""The ``servekit`` command: a thin layer over the Python API of each stage."""

from __future__ import annotations

import click

from servekit import __version__
from servekit.cli._group import ServekitGroup
from servekit.cli.bench import bench_command
from servekit.cli.demo import demo
from servekit.cli.drift import drift
from servekit.cli.edge import export, verify_bundle_command
from servekit.cli.export_triton import export_triton_command
from servekit.cli.hash import hash_command
from servekit.cli.package import package_command
from servekit.cli.promote import promote_command
from servekit.cli.registry import registry
from servekit.cli.serve import serve_command


@click.group(cls=ServekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="servekit")
def main() -> None:
    """servekit: package, register, benchmark, promote, serve and monitor ML models."""


main.add_command(hash_command)
main.add_command(demo)
main.add_command(registry)
main.add_command(drift)
main.add_command(package_command)
main.add_command(export)
main.add_command(verify_bundle_command)
main.add_command(bench_command)
main.add_command(promote_command)
main.add_command(serve_command)
export.add_command(export_triton_command)

__all__ = ["main"]
