"""``servekit keys ...``: local signing keys."""

from __future__ import annotations

from pathlib import Path

import click

from servekit.signing.keys import generate_keys


@click.group("keys")
def keys() -> None:
    """Local elliptic-curve keys for signing registry versions and bundles."""


@keys.command("generate")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write private.pem and public.pem to.",
)
@click.option("--force", is_flag=True, help="Replace keys already in --out.")
def generate_command(out_dir: Path, force: bool) -> None:
    """Write a new P-256 key pair: OUT/private.pem (mode 0600) and OUT/public.pem."""
    private, public = generate_keys(out_dir, overwrite=force)
    click.echo(f"wrote {private} and {public}")
