"""Safe extraction of an edge bundle: every member is checked before a byte of it is written.

A bundle comes from elsewhere, so it is read as hostile. The archive is read as a stream
(never seeking, so a gzip bomb is not expanded to find later headers), and each member is
refused, with a line naming it, when it is:

- not a regular file (links, devices, fifos; directories are skipped);
- named with an absolute path, a ``..`` part, a backslash or a NUL, or named twice;
- outside ``manifest.json`` (which must come first) and ``payload/``, or a payload file the
  manifest does not list, or of another size than the manifest lists;
- beyond the limits: member count, bytes per member, bytes in total (:class:`Limits`).

Members are written with exactly the size their header announces, so the limits bound what
reaches the disk. None of this depends on ``tarfile``'s ``filter="data"`` (Python 3.11.4+).
"""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from servekit.errors import IntegrityError, InvalidArgumentError

MANIFEST = "manifest.json"
PAYLOAD = "payload"
#: The largest manifest read (it lists a handful of files).
MAX_MANIFEST_BYTES = 1 << 20
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What a bundle may hold. Defaults fit any ONNX model servekit bundles (about seven files;
    an ONNX file without external data is at most 2 GiB, protobuf's limit, and its ``.ort``
    form about as large) while keeping a hostile archive from filling the disk."""

    max_members: int = 64
    max_member_bytes: int = 2 << 30
    max_total_bytes: int = 5 << 30

    def __post_init__(self) -> None:
        for name in ("max_members", "max_member_bytes", "max_total_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"bundle limit {name} must be a positive integer")


def _check_name(bundle: str, name: str, seen: set[str]) -> str:
    """The member's normalised relative name; IntegrityError for an unsafe or repeated one."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise IntegrityError(f"bundle {bundle}: member {name!r} has an absolute or unsafe name")
    parts = name.split("/")
    if ".." in parts:
        raise IntegrityError(f"bundle {bundle}: member {name!r} leaves the bundle ('..')")
    clean = posixpath.normpath(name)
    if clean in seen:
        raise IntegrityError(f"bundle {bundle}: member {name!r} appears twice")
    seen.add(clean)
    return clean


def _read_manifest(bundle: str, data: IO[bytes] | None) -> dict[str, Any]:
    try:
        manifest = json.loads((data.read(MAX_MANIFEST_BYTES) if data else b"") or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"bundle {bundle}: {MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise IntegrityError(f"bundle {bundle}: {MANIFEST} lists no files")
    return manifest


def _listed_sizes(bundle: str, manifest: dict[str, Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise IntegrityError(f"bundle {bundle}: {MANIFEST} has a malformed entry {entry!r}")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise IntegrityError(f"bundle {bundle}: {MANIFEST} entry {entry['path']!r}: bad size")
        sizes[f"{PAYLOAD}/{entry['path']}"] = size
    return sizes


def extract_bundle(bundle: str | os.PathLike[str], dest: Path, limits: Limits) -> dict[str, Any]:
    """Extract ``bundle`` into ``dest`` under the rules of the module docs; return the parsed
    (not yet verified) manifest.

    Raises InvalidArgumentError when the file is missing or not a gzip tar archive,
    IntegrityError naming the member for every refusal in the module docs.
    """
    path = Path(bundle)
    if not path.is_file():
        raise InvalidArgumentError(f"bundle {os.fspath(path)!r} does not exist or is not a file")
    name = path.name
    manifest: dict[str, Any] | None = None
    listed: dict[str, int] = {}
    seen: set[str] = set()
    count = total = 0
    try:
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                count += 1
                if count > limits.max_members:
                    raise IntegrityError(
                        f"bundle {name}: more than {limits.max_members} members "
                        f"(at {member.name!r})"
                    )
                clean = _check_name(name, member.name, seen)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise IntegrityError(
                        f"bundle {name}: member {member.name!r} is not a regular file "
                        "(links, devices and fifos are refused)"
                    )
                if member.size > limits.max_member_bytes:
                    raise IntegrityError(
                        f"bundle {name}: member {member.name!r} expands to {member.size} bytes, "
                        f"over the limit of {limits.max_member_bytes}"
                    )
                total += member.size
                if total > limits.max_total_bytes:
                    raise IntegrityError(
                        f"bundle {name}: members expand to more than {limits.max_total_bytes} "
                        f"bytes (at {member.name!r})"
                    )
                if manifest is None:
                    if clean != MANIFEST or member.size > MAX_MANIFEST_BYTES:
                        raise IntegrityError(
                            f"bundle {name}: the first member must be {MANIFEST} "
                            f"(of at most {MAX_MANIFEST_BYTES} bytes), found {member.name!r}"
                        )
                    manifest = _read_manifest(name, tar.extractfile(member))
                    listed = _listed_sizes(name, manifest)
                    (dest / MANIFEST).write_text(json.dumps(manifest))
                    continue
                if clean not in listed:
                    raise IntegrityError(
                        f"bundle {name}: member {member.name!r} is not listed in {MANIFEST}"
                    )
                if member.size != listed[clean]:
                    raise IntegrityError(
                        f"bundle {name} failed verification: changed: {clean} "
                        f"({member.size} bytes, {MANIFEST} lists {listed[clean]})"
                    )
                target = dest / clean
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with open(target, "xb") as out:
                    if source is not None:
                        shutil.copyfileobj(source, out, _COPY_CHUNK)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # tarfile's "could not be opened" lists every compression it tried, one per line.
        detail = "" if "\n" in str(exc) else f": {exc}"
        raise InvalidArgumentError(
            f"{os.fspath(path)}: not an edge bundle (a .tar.gz written by servekit export "
            f"edge){detail}"
        ) from None
    if manifest is None:
        raise IntegrityError(f"bundle {name}: no {MANIFEST}")
    return manifest
