"""Local signing keys: an elliptic-curve (NIST P-256) key pair as PEM files."""

from __future__ import annotations

import os
from pathlib import Path

from servekit.errors import ConflictError, StorageError

PRIVATE = "private.pem"
PUBLIC = "public.pem"


def generate_keys(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new P-256 key pair to ``out_dir/private.pem`` (PKCS#8, mode 0600) and
    ``out_dir/public.pem`` (SubjectPublicKeyInfo); return both paths.

    Raises ConflictError when either file exists and ``overwrite`` is false (a signing key is
    never replaced by accident), StorageError when the directory cannot be written, and
    ModuleNotFoundError naming ``cryptography`` when the ``sign`` extra is not installed.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = Path(out_dir)
    private, public = out / PRIVATE, out / PUBLIC
    if not overwrite and (private.exists() or public.exists()):
        raise ConflictError(f"{out} already holds {PRIVATE} or {PUBLIC}: pass --force to replace")
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(private, flags, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        public.write_bytes(public_pem)
    except OSError as exc:
        raise StorageError(f"cannot write keys to {out}: {exc.strerror or exc}") from None
    return private, public
