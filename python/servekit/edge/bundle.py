"""Edge bundles: one ``.tar.gz`` holding an ONNX model (and optionally ONNX Runtime's ``.ort``
form), its signature, metadata and reference profile, plus a manifest of every file's digest.

Layout inside the archive::

    manifest.json                 {"format": "servekit-edge-bundle", "version": 1,
                                   "algorithm": "blake3", "files": [{"path", "size", "digest"}]}
    payload/model.onnx
    payload/model.ort             (with ort=True; plus model.required_operators.config, the
                                   operator list for a minimal ONNX Runtime build)
    payload/signature.json
    payload/metadata.json
    payload/reference_profile.json   (when the artifact has one)
    payload/parity.json              (when the artifact has one)

This module imports only the standard library and servekit's Rust hashing: an edge device
needs numpy and onnxruntime, nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from servekit import hashing
from servekit.edge.extract import MANIFEST, PAYLOAD, Limits, extract_bundle
from servekit.edge.signed import (
    MANIFEST_KEY,
    SIGNATURE_FILE,
    signed_files,
    verify_signed_payload,
)
from servekit.errors import IntegrityError, InvalidArgumentError, PackagingError, StorageError

FORMAT = "servekit-edge-bundle"
VERSION = 1
#: Artifact files copied into a bundle when present, besides the model.
_EXTRA_FILES = ("reference_profile.json", "parity.json")


def build_bundle(
    artifact: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    signature: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    ort: bool = False,
    model_format: str | None = None,
    model_signature: str | None = None,
) -> Path:
    """Write an edge bundle for ``artifact`` (a directory holding ``model.onnx``, or an ``.onnx``
    file; with ``model_format="onnx"``, as the registry knows its artifacts, any file, such as a
    registry blob, whose name has no suffix) to ``out``; return its path.

    ``signature`` is the Signature JSON form. ``model_signature``, the registry version's
    model-signing bundle over ``artifact``, is carried as ``payload/model.sig`` (see
    :mod:`servekit.edge.signed`). With ``ort``, ONNX Runtime's converter adds
    ``model.ort`` and the required-operators config. The archive is written to a temporary name
    and renamed, so a failure leaves no partial bundle. Raises InvalidArgumentError when there
    is no ONNX model, StorageError when ``out`` cannot be written, PackagingError when the ORT
    conversion fails.
    """
    src = Path(artifact)
    model = src / "model.onnx" if src.is_dir() else src
    if not model.is_file() or (model.suffix != ".onnx" and model_format != "onnx"):
        raise InvalidArgumentError(
            f"{os.fspath(src)!r} holds no model.onnx: edge bundles carry ONNX models only"
        )
    out_path = Path(out)
    with tempfile.TemporaryDirectory(prefix="servekit-bundle-") as tmp:
        payload = Path(tmp) / PAYLOAD
        payload.mkdir()
        shutil.copyfile(model, payload / "model.onnx")
        for name in _EXTRA_FILES:
            if src.is_dir() and (src / name).is_file():
                shutil.copyfile(src / name, payload / name)
        (payload / "signature.json").write_text(json.dumps(signature, indent=1))
        (payload / "metadata.json").write_text(json.dumps(metadata or {}, indent=1, default=str))
        signed = None
        if model_signature is not None:
            carried = {p.name for p in payload.iterdir()}
            signed = signed_files(src, carried)
            (payload / SIGNATURE_FILE).write_text(model_signature)
        if ort:
            _convert_to_ort(payload / "model.onnx")
        tree = hashing.digest_tree(payload)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "algorithm": "blake3",
            "digest": tree.digest,
            "files": [e._asdict() for e in tree.manifest],
            **({MANIFEST_KEY: signed} if signed is not None else {}),
        }
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=1))
        partial = out_path.with_name(out_path.name + ".servekit-tmp")
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(Path(tmp) / MANIFEST, arcname=MANIFEST)
                for entry in tree.manifest:
                    tar.add(payload / entry.path, arcname=f"{PAYLOAD}/{entry.path}")
            os.replace(partial, out_path)
        except OSError as exc:
            if partial.is_file():
                partial.unlink()
            raise StorageError(
                f"cannot write bundle {os.fspath(out_path)!r}: {exc.strerror or exc}"
            ) from None
    return out_path


def _convert_to_ort(model: Path) -> None:
    """Run ONNX Runtime's ORT-format converter next to ``model`` (in a subprocess: it imports
    onnx and more, which an edge process should not carry)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            os.fspath(model),
            "--optimization_style",
            "Fixed",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not model.with_suffix(".ort").is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PackagingError(f"ORT format conversion failed: {tail[0]}")


def extract_verified(
    bundle: str | os.PathLike[str], dest: Path, limits: Limits | None = None
) -> dict[str, Any]:
    """Extract ``bundle`` into ``dest`` (safely: see :mod:`servekit.edge.extract`), re-hash
    every payload file, recompute the manifest's tree digest, and return the manifest.

    Raises InvalidArgumentError when the file is missing or not an archive, IntegrityError
    naming each missing, unexpected or changed file, a digest that does not match, or an
    unsafe member (or one beyond ``limits``, default :class:`Limits`).
    """
    name = Path(bundle).name
    manifest = extract_bundle(bundle, dest, limits or Limits())
    if manifest.get("format") != FORMAT:
        raise IntegrityError(f"bundle {name}: {MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        version = manifest.get("version")
        raise IntegrityError(f"bundle {name}: unsupported bundle version {version!r}")
    algorithm = manifest.get("algorithm")
    if algorithm not in hashing.ALGORITHMS:
        raise IntegrityError(f"bundle {name}: unknown digest algorithm {algorithm!r}")
    payload = dest / PAYLOAD
    payload.mkdir(exist_ok=True)
    listed = {e.path: e for e in (hashing.manifest_from_json(json.dumps(manifest["files"])))}
    tree = hashing.digest_tree(payload, algorithm)
    found = {e.path: e for e in tree.manifest}
    problems = [f"missing: {PAYLOAD}/{p}" for p in sorted(listed.keys() - found.keys())]
    problems += [f"unexpected: {PAYLOAD}/{p}" for p in sorted(found.keys() - listed.keys())]
    problems += [
        f"changed: {PAYLOAD}/{p}"
        for p in sorted(listed.keys() & found.keys())
        if listed[p] != found[p]
    ]
    if problems:
        raise IntegrityError(f"bundle {name} failed verification: {'; '.join(problems)}")
    if manifest.get("digest") != tree.digest:
        raise IntegrityError(
            f"bundle {name} failed verification: the manifest digest "
            f"{manifest.get('digest')!r} is not the digest of its files ({tree.digest})"
        )
    return manifest


def verify_bundle(
    bundle: str | os.PathLike[str],
    limits: Limits | None = None,
    *,
    public_key: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Re-hash every file of ``bundle`` against its manifest and, with ``public_key``, check
    the signature it carries; return the manifest.

    Raises IntegrityError naming each file that is missing, unexpected or changed, or the
    unsafe member (see :func:`extract_verified`), or saying the bundle carries no signature;
    SignatureError when the signature does not verify against ``public_key``.
    """
    with tempfile.TemporaryDirectory(prefix="servekit-verify-") as tmp:
        manifest = extract_verified(bundle, Path(tmp), limits)
        if public_key is not None:
            verify_signed_payload(Path(bundle).name, Path(tmp) / PAYLOAD, manifest, public_key)
        return manifest
