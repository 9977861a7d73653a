"""``servekit demo``: the README's main command, an offline run of what servekit does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np

from servekit import hashing


def _write_sample_artifact(root: Path) -> Path:
    """Write a small model-like directory (weights and a config) and return its path."""
    model = root / "sample-model"
    model.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(model / "weights.npy", rng.standard_normal((64, 10), dtype=np.float32))
    (model / "config.json").write_text('{"inputs": 64, "outputs": 10}\n')
    return model


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo writes everything (default: a temporary directory).",
)
@click.option("--quick", is_flag=True, help="Smaller models and shorter measurements.")
def demo(workdir: Path | None, quick: bool) -> None:
    """Run servekit end to end on a sample model, offline."""
    with tempfile.TemporaryDirectory(prefix="servekit-demo-") as tmp:
        root = workdir if workdir is not None else Path(tmp)
        click.echo("== servekit demo: content-addressed hashing of a model artifact")
        model = _write_sample_artifact(root)
        tree = hashing.digest_tree(model)
        for entry in tree.manifest:
            click.echo(f"  {entry.digest}  {entry.size:>7} B  {entry.path}")
        click.echo(f"tree digest: {tree.digest}  {model}")
        report = hashing.verify_tree(model, tree.manifest)
        click.echo(f"verified: {'ok' if report.ok else ', '.join(report.problems())}")
