"""Signatures carried by edge bundles: the registry version's model-signing bundle, checked on
the device against a trusted public key.

``payload/model.sig`` holds the Sigstore bundle the version was signed with, and the manifest's
``"model_signing"`` entry says what it covers: ``{"kind": "file", "files": ["model.onnx"]}``
for a single-file artifact, ``{"kind": "directory", "files": [...]}`` for a directory artifact
(every file of which the bundle carries under the same relative name). The signature file is
itself listed in the manifest, so the digest check covers it too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from servekit.errors import IntegrityError, InvalidArgumentError

SIGNATURE_FILE = "model.sig"
MANIFEST_KEY = "model_signing"


def signed_files(artifact: Path, carried: set[str]) -> dict[str, Any]:
    """The manifest entry for a signature over ``artifact`` whose bundle carries the payload
    files ``carried``. Raises InvalidArgumentError when a directory artifact has a file the
    bundle does not carry (the signature could not be checked on the device)."""
    if artifact.is_file():
        return {"kind": "file", "files": ["model.onnx"]}
    files = sorted(p.relative_to(artifact).as_posix() for p in artifact.rglob("*") if p.is_file())
    left_out = [f for f in files if f not in carried]
    if left_out:
        raise InvalidArgumentError(
            f"the signature covers {', '.join(left_out)}, which an edge bundle does not carry"
        )
    return {"kind": "directory", "files": files}


def verify_signed_payload(
    name: str, payload: Path, manifest: dict[str, Any], public_key: str | os.PathLike[str]
) -> None:
    """Check the bundle's carried signature against ``public_key``. Raises IntegrityError when
    the bundle carries none, SignatureError when it does not verify."""
    from servekit.signing.sign import verify_path

    entry = manifest.get(MANIFEST_KEY)
    sig = payload / SIGNATURE_FILE
    if not isinstance(entry, dict) or not sig.is_file():
        raise IntegrityError(f"bundle {name} carries no signature ({SIGNATURE_FILE})")
    files = entry.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise IntegrityError(f"bundle {name}: malformed {MANIFEST_KEY} entry")
    if entry.get("kind") == "file" and files == ["model.onnx"]:
        verify_path(payload / "model.onnx", sig.read_text(), public_key)
        return
    with tempfile.TemporaryDirectory(prefix="servekit-signed-") as tmp:
        for rel in files:
            src = payload / rel
            if ".." in rel.split("/") or not src.is_file():
                raise IntegrityError(f"bundle {name}: signed file {rel!r} is not in the bundle")
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, Path(tmp) / rel)
        verify_path(tmp, sig.read_text(), public_key)
