"""Signatures of registry versions: stored with the version, checked against a trusted key.

A version's signature is kept in its tags (the registry's only mutable per-version store):
``signing.bundle`` holds the Sigstore bundle JSON over the stored artifact, ``signing.key``
the signing key's hint, ``signing.actor`` and ``signing.time`` who signed it and when. The
artifact is immutable and content-addressed, so the signature stays valid for its lifetime.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

from servekit.registry import Registry, default_actor
from servekit.signing.sign import SignatureError, key_hint, sign_path, verify_path

BUNDLE_TAG = "signing.bundle"
KEY_TAG = "signing.key"
ACTOR_TAG = "signing.actor"
TIME_TAG = "signing.time"

StrPath = str | os.PathLike[str]


class UnsignedError(SignatureError):
    """The version carries no signature."""


@dataclass(frozen=True)
class Signed:
    """A version's signature as stored: who signed, when, with which key (hint)."""

    ref: str
    key_hint: str
    actor: str
    time: str


def sign_version(
    registry: Registry, ref: str, private_key: StrPath, *, actor: str | None = None
) -> Signed:
    """Sign the artifact of ``ref`` (re-hashed first) and store the signature with it.

    Returns what was stored. Raises the registry's errors for an unknown reference,
    IntegrityError when the stored artifact no longer matches its digest, InvalidArgumentError
    for a bad key."""
    version = registry.get(ref)
    pinned = version.ref
    bundle = sign_path(registry.artifact_path(pinned), private_key)
    hint = json.loads(bundle)["verificationMaterial"]["publicKey"]["hint"]
    signed = Signed(
        pinned,
        hint,
        actor or default_actor(),
        datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    registry.set_tags(
        pinned,
        {BUNDLE_TAG: bundle, KEY_TAG: hint, ACTOR_TAG: signed.actor, TIME_TAG: signed.time},
    )
    return signed


def stored_signature(registry: Registry, ref: str) -> str:
    """The signature stored with ``ref``. Raises UnsignedError when it has none."""
    version = registry.get(ref)
    bundle = version.tags.get(BUNDLE_TAG)
    if not bundle:
        raise UnsignedError(f"{version.ref} is not signed")
    return bundle


def verify_version(registry: Registry, ref: str, public_key: StrPath) -> Signed:
    """Check the signature stored with ``ref`` against ``public_key`` and the stored artifact.

    Returns the stored signature's details. Raises UnsignedError when the version has none,
    SignatureError when it does not verify (another key, tampered signature or artifact),
    NotFoundError for an unknown reference."""
    version = registry.get(ref)
    bundle = stored_signature(registry, version.ref)
    verify_path(registry.artifact_path(version.ref, verify=False), bundle, public_key)
    tags = version.tags
    return Signed(
        version.ref,
        tags.get(KEY_TAG, key_hint(public_key)),
        tags.get(ACTOR_TAG, "-"),
        tags.get(TIME_TAG, "-"),
    )


__all__ = [
    "Signed",
    "UnsignedError",
    "sign_version",
    "stored_signature",
    "verify_version",
]
