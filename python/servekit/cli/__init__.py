"""The ``servekit`` command: a thin layer over the Python API of each stage.

Each command's module is imported only when that command runs (see ``_group.LazyGroup``).
"""

from __future__ import annotations

import click

from servekit import __version__
from servekit.cli._group import LazyGroup, ServekitGroup

COMMANDS = {
    "hash": "servekit.cli.hash:hash_command",
    "demo": "servekit.cli.demo:demo",
    "registry": "servekit.cli.registry:registry",
    "drift": "servekit.cli.drift:drift",
    "package": "servekit.cli.package:package_command",
    "export": "servekit.cli:export",
    "verify-bundle": "servekit.cli.edge:verify_bundle_command",
    "bench": "servekit.cli.bench:bench_command",
    "promote": "servekit.cli.promote:promote_command",
    "serve": "servekit.cli.serve:serve_command",
    "containerize": "servekit.cli.containerize:containerize_command",
    "ui": "servekit.cli.ui:ui_command",
    "keys": "servekit.cli.keys:keys",
}

EXPORT_COMMANDS = {
    "edge": "servekit.cli.edge:export_edge",
    "triton": "servekit.cli.export_triton:export_triton_command",
}


@click.group(
    cls=ServekitGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="servekit")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
def main(debug: bool) -> None:
    """servekit: package, register, benchmark, promote, serve and monitor ML models."""


@click.group("export", cls=LazyGroup, lazy=EXPORT_COMMANDS)
def export() -> None:
    """Export a packaged model to another form."""


__all__ = ["main"]
