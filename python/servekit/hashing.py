"""Content hashing of model artifacts (Rust core, interpreter released while hashing).

Digests are strings ``"<algorithm>:<hex>"``. Supported algorithms: ``blake3`` (default) and
``sha256``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from servekit import _core
from servekit.errors import InvalidArgumentError

Algorithm = Literal["blake3", "sha256"]
ALGORITHMS: tuple[Algorithm, ...] = ("blake3", "sha256")

StrPath = str | os.PathLike[str]


class FileEntry(NamedTuple):
    """One regular file of a tree: relative POSIX path, size in bytes, digest."""

    path: str
    size: int
    digest: str


class TreeDigest(NamedTuple):
    """The digest of a directory tree and its manifest (entries sorted by path)."""

    digest: str
    manifest: list[FileEntry]


@dataclass(frozen=True)
class VerifyReport:
    """How a tree differs from a manifest; each list holds relative paths, sorted."""

    missing: list[str]
    unexpected: list[str]
    changed: list[str]

    @property
    def ok(self) -> bool:
        """True when the tree matches the manifest exactly."""
        return not (self.missing or self.unexpected or self.changed)

    def problems(self) -> list[str]:
        """One human-readable line per difference."""
        return (
            [f"missing: {p}" for p in self.missing]
            + [f"unexpected: {p}" for p in self.unexpected]
            + [f"changed: {p}" for p in self.changed]
        )


def digest_file(path: StrPath, algorithm: Algorithm = "blake3") -> str:
    """Return the digest of the regular file at ``path``.

    The file is read (never memory-mapped), so a concurrent truncation cannot crash the
    process. Raises NotFoundError (missing path), InvalidArgumentError (a directory, a special
    file, an unknown algorithm), IntegrityError (the file changed while it was read) or
    StorageError (unreadable file); each message names the path or value.
    """
    return _core.digest_file(os.fspath(path), algorithm)


def digest_bytes(data: bytes | bytearray | memoryview, algorithm: Algorithm = "blake3") -> str:
    """Return the digest of any C-contiguous buffer (bytes, bytearray, memoryview, numpy array).

    ``bytes`` (immutable) is hashed in place with the interpreter released. A mutable buffer
    is first copied while the interpreter is held, so that another thread writing it cannot
    race the hash: the digest is that of one state of the buffer. Raises InvalidArgumentError
    for a non-contiguous buffer or an unknown algorithm.
    """
    if type(data) is bytes:
        return _core.digest_bytes(data, algorithm)
    try:
        view = memoryview(data).cast("B")
    except TypeError as exc:
        raise InvalidArgumentError(f"digest_bytes needs a C-contiguous buffer: {exc}") from None
    return _core.digest_bytes(view, algorithm)


def digest_tree(path: StrPath, algorithm: Algorithm = "blake3") -> TreeDigest:
    """Return the digest and manifest of the directory tree at ``path``.

    The digest depends only on relative paths and file contents. Raises InvalidArgumentError
    for a symbolic link or special file inside the tree (named in the message) or when ``path``
    is not a directory; NotFoundError when it does not exist.
    """
    digest, entries = _core.digest_tree(os.fspath(path), algorithm)
    return TreeDigest(digest, [FileEntry(*e) for e in entries])


def _entry(item: FileEntry | Mapping[str, object] | tuple[str, int, str]) -> FileEntry:
    if isinstance(item, Mapping):
        try:
            return FileEntry(str(item["path"]), int(item["size"]), str(item["digest"]))  # type: ignore[call-overload]
        except KeyError as exc:
            raise InvalidArgumentError(f"manifest entry {item!r} has no {exc.args[0]!r}") from None
    path, size, digest = item
    return FileEntry(path, size, digest)


def verify_tree(
    path: StrPath,
    manifest: Iterable[FileEntry | Mapping[str, object] | tuple[str, int, str]],
) -> VerifyReport:
    """Compare the tree at ``path`` with ``manifest`` (FileEntry items or their JSON mappings).

    Returns a VerifyReport of missing, unexpected and changed files. Raises like digest_tree,
    and InvalidArgumentError for a malformed manifest.
    """
    entries = [tuple(_entry(item)) for item in manifest]
    missing, unexpected, changed = _core.verify_tree(os.fspath(path), entries)
    return VerifyReport(missing, unexpected, changed)


def manifest_to_json(manifest: Iterable[FileEntry]) -> str:
    """Serialise a manifest as a JSON list of ``{"path", "size", "digest"}`` objects."""
    return json.dumps([e._asdict() for e in manifest], indent=2)


def manifest_from_json(text: str) -> list[FileEntry]:
    """Parse a manifest written by :func:`manifest_to_json`."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidArgumentError("manifest must be a JSON list of file entries")
    return [_entry(item) for item in items]


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "FileEntry",
    "TreeDigest",
    "VerifyReport",
    "digest_bytes",
    "digest_file",
    "digest_tree",
    "manifest_from_json",
    "manifest_to_json",
    "verify_tree",
]
