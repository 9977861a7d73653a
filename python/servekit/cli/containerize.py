"""``servekit containerize``: an OCI build context for a registry version, optionally built."""

from __future__ import annotations

from pathlib import Path

import click

from servekit.containerize import build_image, default_base, write_context
from servekit.registry import Registry


@click.command("containerize")
@click.argument("ref", metavar="REF")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the build context (must not exist or be empty).",
)
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry root (default: $SERVEKIT_HOME, else ~/.servekit).",
)
@click.option(
    "--base",
    default=default_base(),
    show_default=True,
    help="Base image; its Python must be this one's minor version (the wheels are built here).",
)
@click.option(
    "--extras",
    default="",
    metavar="EXTRA[,EXTRA]",
    help="servekit extras beyond serve to install in the image, e.g. torch for TorchScript.",
)
@click.option("--build", is_flag=True, help="Run podman build or docker build on the context.")
@click.option("--tag", help="Image tag for --build (default: servekit-NAME:VERSION).")
def containerize_command(
    ref: str,
    out: Path,
    registry: Path | None,
    base: str,
    extras: str,
    build: bool,
    tag: str | None,
) -> None:
    """Write a self-contained build context for registry version REF (NAME, NAME:V or
    NAME@ALIAS): a Containerfile, a wheelhouse (no index needed: builds with --network none),
    a one-version registry and a .dockerignore.

    The image serves the version over KServe v2 on port 8000 (gRPC 8001) as a non-root user,
    re-hashing the artifact before it starts; SERVEKIT_* variables set serve's options.
    """
    if tag is not None and not build:
        raise click.UsageError("--tag needs --build")
    wanted = tuple(e.strip() for e in extras.split(",") if e.strip())
    context = write_context(Registry(registry), ref, out, base=base, extras=wanted)
    click.echo(
        f"context for {context.version.ref} ({context.version.digest}) in {out}: "
        f"{len(context.wheels)} wheels, base {base}"
    )
    if build:
        image = tag or context.default_tag
        build_image(out, image)
        click.echo(f"built {image}")
    else:
        click.echo(
            f"build it with: podman build --network none --format docker -t TAG {out}"
            f" (or: docker build --network none -t TAG {out})"
        )
