"""``servekit hash``: digest of a file or directory tree."""

from __future__ import annotations

from pathlib import Path

import click

from servekit import hashing


@click.command("hash")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--algorithm",
    default="blake3",
    show_default=True,
    help="Hash algorithm: blake3 or sha256.",
)
@click.option("--manifest", is_flag=True, help="Print the per-file manifest as JSON.")
def hash_command(path: Path, algorithm: str, manifest: bool) -> None:
    """Print '<digest>  PATH' for a file or a directory tree (symbolic links are refused)."""
    if path.is_dir() and not path.is_symlink():
        tree = hashing.digest_tree(path, algorithm)  # type: ignore[arg-type]
        if manifest:
            click.echo(hashing.manifest_to_json(tree.manifest))
        else:
            click.echo(f"{tree.digest}  {path}")
        return
    digest = hashing.digest_file(path, algorithm)  # type: ignore[arg-type]
    if manifest:
        size = path.stat().st_size
        click.echo(hashing.manifest_to_json([hashing.FileEntry(path.name, size, digest)]))
    else:
        click.echo(f"{digest}  {path}")
