"""``servekit export edge`` and ``servekit verify-bundle``: edge bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from servekit.edge import build_bundle, verify_bundle
from servekit.edge.extract import Limits
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
    model_signature = None
    if artifact.is_dir():
        signature, metadata = _artifact_description(artifact)
    elif "/" in ref or ref.startswith("."):  # registry names hold neither: a path was meant
        raise NotFoundError(f"{ref}: no such directory")
    else:
        from servekit.registry import Registry

        reg = Registry(registry, create=False)
        version = reg.get(ref)
        if version.format != "onnx":
            raise InvalidArgumentError(
                f"{version.ref} is a {version.format} model: edge bundles carry ONNX models only"
            )
        # Resolved once: the pinned NAME:VERSION, so an alias moving meanwhile cannot mix two
        # versions' metadata and files.
        artifact = reg.artifact_path(version.ref)
        from servekit.signing.registry import BUNDLE_TAG

        model_signature = version.tags.get(BUNDLE_TAG)  # carried when the version is signed
        if version.signature is not None:
            signature = version.signature.to_dict()
        else:  # registered without one (``servekit registry register``): read it from the graph
            from servekit.signature import onnx_signature

            signature = onnx_signature(reg.model_file(version.ref, verify=False)).to_dict()
        metadata = {
            "ref": version.ref,
            "digest": version.digest,
            "variant": version.variant,
            "parent": version.parent,
            "metrics": version.metrics,
            **version.metadata,
        }
    path = build_bundle(
        artifact, out, signature=signature, metadata=metadata, ort=ort, model_format="onnx",
        model_signature=model_signature,
    )  # fmt: skip
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


_DEFAULT_LIMITS = Limits()


@click.command("verify-bundle")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--max-members", type=int, default=_DEFAULT_LIMITS.max_members, show_default=True,
    help="Refuse a bundle with more archive members.",
)  # fmt: skip
@click.option(
    "--max-member-bytes", type=int, default=_DEFAULT_LIMITS.max_member_bytes, show_default=True,
    help="Refuse a member that expands to more bytes (checked before it is written).",
)  # fmt: skip
@click.option(
    "--max-total-bytes", type=int, default=_DEFAULT_LIMITS.max_total_bytes, show_default=True,
    help="Refuse a bundle whose members expand to more bytes in all.",
)  # fmt: skip
@click.option(
    "--key",
    "public_key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also check the signature the bundle carries against this public key (PEM).",
)
def verify_bundle_command(
    bundle: Path,
    max_members: int,
    max_member_bytes: int,
    max_total_bytes: int,
    public_key: Path | None,
) -> None:
    """Re-hash every file of BUNDLE against its manifest (with --key, check its signature
    too); exit 2 naming any tampered file."""
    limits = Limits(max_members, max_member_bytes, max_total_bytes)
    manifest = verify_bundle(bundle, limits, public_key=public_key)
    if public_key is not None:
        click.echo(f"ok: signature verified with {public_key}")
    click.echo(f"ok: {len(manifest['files'])} files verified ({manifest['digest']})")
