"""The records the registry hands out: versions, registered models, alias events, gc reports.

Rows arrive from the Rust core as tuples with JSON fields as text; they are decoded here.
Timestamps (``created_at``, ``time``) are UTC ISO-8601 strings with microseconds and a ``Z``
suffix, e.g. ``"2025-01-31T09:05:07.123456Z"``; they sort as text in time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from servekit.hashing import FileEntry
from servekit.signature import Signature


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version. ``metrics``, ``tags``, ``description``, ``aliases``
    and ``archived`` are the values at the time it was read.

    ``kind`` is ``"file"`` or ``"directory"``; ``manifest`` lists the artifact's files (one
    entry, named after the registered file, for a file artifact); ``parent`` is a
    ``"name:version"`` reference; ``ref`` is ``"name:version"``.
    """

    name: str
    version: int
    ref: str
    digest: str
    kind: str
    format: str
    manifest: list[FileEntry]
    size_bytes: int
    created_at: str
    signature: Signature | None
    metadata: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    variant: str | None
    parent: str | None
    source: dict[str, Any]
    description: str
    aliases: list[str]
    archived: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, the signature in its JSON form, manifest entries as
        ``{"path", "size", "digest"}`` objects."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["manifest"] = [e._asdict() for e in self.manifest]
        out["signature"] = self.signature.to_dict() if self.signature is not None else None
        return out


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model: ``latest_version`` is the newest version not archived (None when
    every version is archived); ``aliases`` maps alias name to version."""

    name: str
    description: str
    tags: dict[str, str]
    created_at: str
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]


@dataclass(frozen=True)
class AliasEvent:
    """One entry of the append-only alias audit log. ``action`` is ``set``, ``promote``,
    ``force``, ``rollback``, ``delete`` or ``refused`` (a gated promotion on live figures that
    was refused; the alias did not move); ``previous_version`` is None when the alias was new,
    ``new_version`` None when it was deleted."""

    time: str
    model: str
    alias: str
    action: str
    previous_version: int | None
    new_version: int | None
    actor: str
    reason: str | None


@dataclass(frozen=True)
class GcReport:
    """What :meth:`Registry.gc` removed: staging files of dead writers and unreferenced
    artifacts, and the bytes freed."""

    removed: list[Path]
    bytes_freed: int


_EMPTY = "{}"


def _object(text: str) -> dict[str, Any]:
    return {} if text == _EMPTY else orjson.loads(text)


@lru_cache(maxsize=4096)
def _signature(text: str) -> Signature:
    # Signatures are immutable and often shared by many versions: decode each text once.
    return Signature.from_dict(orjson.loads(text))


@lru_cache(maxsize=4096)
def _manifest(text: str) -> tuple[FileEntry, ...]:
    # Versions sharing an artifact share its manifest text: decode each text once.
    return tuple(FileEntry(e["path"], e["size"], e["digest"]) for e in orjson.loads(text))


_new = object.__new__


def version_from_row(row: tuple[Any, ...]) -> ModelVersion:
    """Build a ModelVersion from the core's row tuple (see rust/bindings/registry.rs)."""
    (name, version, digest, kind, fmt, manifest, size, created, sig, metadata, metrics, tags,
     variant, parent, source, description, archived, aliases) = row  # fmt: skip
    mv = _new(ModelVersion)
    # Filling __dict__ directly skips the frozen dataclass's per-field __setattr__ calls,
    # which dominate lookup time; the fields are exactly the dataclass's.
    mv.__dict__.update(
        name=name,
        version=version,
        ref=f"{name}:{version}",
        digest=digest,
        kind=kind,
        format=fmt,
        manifest=list(_manifest(manifest)),
        size_bytes=size,
        created_at=created,
        signature=_signature(sig) if sig is not None else None,
        metadata=_object(metadata),
        metrics=_object(metrics),
        tags=_object(tags),
        variant=variant,
        parent=parent,
        source=_object(source),
        description=description,
        aliases=aliases,
        archived=archived,
    )
    return mv


def model_from_row(row: tuple[Any, ...]) -> RegisteredModel:
    """Build a RegisteredModel from the core's row tuple."""
    name, description, tags, created, latest, count, aliases = row
    return RegisteredModel(name, description, _object(tags), created, latest, count, dict(aliases))


def event_from_row(row: tuple[Any, ...]) -> AliasEvent:
    """Build an AliasEvent from the core's row tuple."""
    return AliasEvent(*row)
