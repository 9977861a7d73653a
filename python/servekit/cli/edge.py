"""``servekit export edge`` and ``servekit verify-bundle``: edge bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from servekit.edge import build_bundle, verify_bundle
from servekit.errors import InvalidArgumentError, NotFoundError


@click.command("edge")
@click.argument("ref")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Bundle file to write (.tar.gz).",
)
@click.option("--ort", is_flag=True, help="Also include ONNX Runtime's .ort form of the model.")
@click.option(
    "--registry",
    "registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry root (default: $SERVEKIT_HOME, else ~/.servekit).",
)
def export_edge(ref: str, out: Path, ort: bool, registry: Path | None) -> None:
    """Write an edge bundle for REF: a registry reference (name, name:VERSION, name@ALIAS) of
    an ONNX version, or a packaged variant directory holding model.onnx."""
    artifact = Path(ref)
    if artifact.is_dir():
        signature, metadata = _artifact_description(artifact)
    elif "/" in ref or ref.startswith("."):  # registry names hold neither: a path was meant
        raise NotFoundError(f"{ref}: no such directory")
    else:
        from servekit.registry import Registry

        version = Registry(registry, create=False).get(ref)
        if version.format != "onnx":
            raise InvalidArgumentError(
                f"{version.ref} is a {version.format} model: edge bundles carry ONNX models only"
            )
        artifact = Registry(registry, create=False).artifact_path(ref)
        signature = version.signature.to_dict() if version.signature else {}
        metadata = {
            "ref": version.ref,
            "digest": version.digest,
            "variant": version.variant,
            "parent": version.parent,
            "metrics": version.metrics,
            **version.metadata,
        }
    path = build_bundle(artifact, out, signature=signature, metadata=metadata, ort=ort)
    click.echo(f"wrote {path}")


def _artifact_description(artifact: Path) -> tuple[dict, dict]:
    from servekit.signature import onnx_signature

    model = artifact / "model.onnx"
    if not model.is_file():
        raise InvalidArgumentError(
            f"{str(artifact)!r} holds no model.onnx: edge bundles carry ONNX models only"
        )
    metadata = {}
    parity = artifact / "parity.json"
    if parity.is_file():
        metadata["parity"] = json.loads(parity.read_text())
    return onnx_signature(model).to_dict(), metadata


@click.command("verify-bundle")
@click.argument("bundle", type=click.Path(path_type=Path))
def verify_bundle_command(bundle: Path) -> None:
    """Re-hash every file of BUNDLE against its manifest; exit 2 naming any tampered file."""
    manifest = verify_bundle(bundle)
    click.echo(f"ok: {len(manifest['files'])} files verified ({manifest['digest']})")
