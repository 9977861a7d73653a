"""Sign and verify an artifact (a file or a directory) with ``model_signing``.

``model_signing`` is imported when a function runs, so servekit works without the ``sign``
extra; a missing library surfaces as ModuleNotFoundError, which the CLI turns into one line
naming the extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from servekit.errors import IntegrityError, InvalidArgumentError

StrPath = str | os.PathLike[str]


class SignatureError(IntegrityError):
    """A signature does not verify: made by another key, tampered, or over other content."""


def _key(path: StrPath, what: str) -> Path:
    key = Path(path)
    if not key.is_file():
        raise InvalidArgumentError(f"{what} key {os.fspath(key)!r} does not exist")
    return key


def key_hint(public_key: StrPath) -> str:
    """The hex SHA-256 of a public key's DER form: the hint model_signing records in its
    bundles, used to say which key signed. Raises InvalidArgumentError for a missing or
    unreadable key."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(_key(public_key, "public").read_bytes())
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{os.fspath(public_key)!r} is not a PEM public key: {exc}"
        ) from None
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def sign_path(artifact: StrPath, private_key: StrPath) -> str:
    """Sign the file or directory ``artifact``; return the signature (Sigstore bundle JSON).

    Raises InvalidArgumentError for a missing artifact or key, or a key that is not an
    elliptic-curve private key in PEM form."""
    from model_signing import signing

    key = _key(private_key, "private")
    if not Path(artifact).exists():
        raise InvalidArgumentError(f"{os.fspath(artifact)!r} does not exist")
    with tempfile.TemporaryDirectory(prefix="servekit-sign-") as tmp:
        out = Path(tmp) / "model.sig"
        try:
            signing.Config().use_elliptic_key_signer(private_key=key).sign(artifact, out)
        except ValueError as exc:
            raise InvalidArgumentError(f"cannot sign with {os.fspath(key)!r}: {exc}") from None
        return out.read_text()


def verify_path(artifact: StrPath, signature: str, public_key: StrPath) -> None:
    """Check that ``signature`` (Sigstore bundle JSON) was made by the key paired with
    ``public_key`` over exactly the content of ``artifact``.

    Raises SignatureError (an IntegrityError) when it does not verify, naming the reason;
    InvalidArgumentError for a missing key or a signature that is not a bundle."""
    from cryptography.exceptions import InvalidSignature
    from model_signing import verifying

    key = _key(public_key, "public")
    try:
        json.loads(signature)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"the signature is not a Sigstore bundle: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="servekit-verify-") as tmp:
        sig = Path(tmp) / "model.sig"
        sig.write_text(signature)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=key).verify(artifact, sig)
        except (ValueError, TypeError, KeyError, InvalidSignature) as exc:
            # ValueError: key or content mismatch; the others: a malformed or forged bundle.
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise SignatureError(f"signature does not verify: {reason}") from None
