"""``servekit demo``: the README's main command, an offline run of every stage."""

from __future__ import annotations

from pathlib import Path

import click

from servekit.cli._progress import progress_option
from servekit.demo import run_demo


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("servekit-demo"),
    show_default=True,
    help="Where the demo writes everything (registry, packages, reports, server log).",
)
@click.option("--quick", is_flag=True, help="Smaller model, fewer epochs, shorter measurements.")
@progress_option
def demo(workdir: Path, quick: bool, progress: bool) -> None:
    """Train, package, register, benchmark, promote, serve and monitor a digits classifier."""
    run_demo(workdir, quick=quick, progress=progress, say=click.echo)
