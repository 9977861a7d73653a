"""A wheelhouse made from this environment: servekit and exactly the dependencies of its extras.

Each wheel is repacked from an installed distribution (its ``RECORD`` lists the files, its
``WHEEL`` file the tags it was built for), so the wheelhouse holds the very versions this
machine runs and tested, needs no package index, and installs with ``pip install --no-index``
(an image build with ``--network none``). The price: it installs only on the Python and
platform this one runs (checked by the Containerfile before pip runs).

servekit itself is packed from its package directory (an editable install has no files in its
``RECORD``), with the ``METADATA`` and entry points of its installed distribution.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import sys
import sysconfig
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from servekit.errors import InvalidArgumentError, NotFoundError

#: dist-info files that belong to one installation, not to the distribution.
_INSTALL_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


@dataclass(frozen=True)
class Wheel:
    """One wheel written to the wheelhouse."""

    name: str
    version: str
    path: Path


def requirements_of(extras: Iterable[str]) -> list[md.Distribution]:
    """The installed distributions ``servekit[extras]`` needs, servekit first, each once.

    Raises NotFoundError when one is not installed here and InvalidArgumentError when the
    installed version does not satisfy the requirement or an extra is unknown.
    """
    root = md.distribution("servekit")
    known = set(root.metadata.get_all("Provides-Extra") or [])
    unknown = sorted(set(extras) - known)
    if unknown:
        raise InvalidArgumentError(
            f"unknown extra(s) {', '.join(unknown)}; servekit has {', '.join(sorted(known))}"
        )
    found: dict[str, md.Distribution] = {"servekit": root}
    pending: list[tuple[md.Distribution, frozenset[str]]] = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        dist, dist_extras = pending.pop()
        key = (canonicalize_name(dist.metadata["Name"]), dist_extras)
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            if not _applies(req, dist_extras):
                continue
            name = canonicalize_name(req.name)
            if name == "servekit":  # a self-referencing extra such as servekit[frontend]
                pending.append((root, frozenset(req.extras)))
                continue
            dep = found.get(name) or _installed(req)
            found[name] = dep
            pending.append((dep, frozenset(req.extras)))
    return list(found.values())


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def _installed(req: Requirement) -> md.Distribution:
    try:
        dist = md.distribution(req.name)
    except md.PackageNotFoundError:
        raise NotFoundError(
            f"{req.name} is not installed here; the wheelhouse is made from this environment: "
            f"pip install '{req}' first"
        ) from None
    if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
        raise InvalidArgumentError(
            f"{req.name} {dist.version} is installed but servekit needs {req}: "
            f"pip install '{req}' first"
        )
    return dist


def build_wheelhouse(extras: Iterable[str], out: Path) -> list[Wheel]:
    """Write one wheel per distribution ``servekit[extras]`` needs into ``out``; return them.

    Raises what :func:`requirements_of` raises, and NotFoundError for a distribution whose
    files are not listed (installed without a ``RECORD``).
    """
    out.mkdir(parents=True, exist_ok=True)
    wheels = []
    for dist in requirements_of(extras):
        if canonicalize_name(dist.metadata["Name"]) == "servekit":
            wheels.append(_pack_servekit(dist, out))
        else:
            wheels.append(_repack(dist, out))
    return wheels


def _repack(dist: md.Distribution, out: Path) -> Wheel:
    name, version = dist.metadata["Name"], dist.version
    if dist.files is None:
        raise NotFoundError(f"{name} {version} was installed without a RECORD: cannot repack it")
    wheel_text = dist.read_text("WHEEL") or ""
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_text.splitlines() if ln.startswith("Tag:")]
    if not tags:
        raise NotFoundError(f"{name} {version}: its WHEEL file names no tag; cannot repack it")
    members: list[tuple[str, Path]] = []
    dist_info = None
    for entry in dist.files:
        arcname = entry.as_posix()
        # Files outside site-packages (console scripts) are regenerated by pip from
        # entry_points.txt; byte code is compiled again at install.
        if arcname.startswith("..") or "__pycache__" in entry.parts or arcname.endswith(".pyc"):
            continue
        top = entry.parts[0]
        if top.endswith(".dist-info"):
            dist_info = top
            if entry.name in _INSTALL_FILES:
                continue
        members.append((arcname, Path(str(dist.locate_file(entry)))))
    if dist_info is None:
        raise NotFoundError(f"{name} {version}: no .dist-info directory in its RECORD")
    return _write_wheel(out, dist_info, _compressed(tags), members, {})


def _compressed(tags: list[str]) -> str:
    """The file-name form of a tag set (``py2.py3-none-any``), every tag of WHEEL kept."""
    parts: list[list[str]] = [[], [], []]
    for tag in tags:
        for i, part in enumerate(tag.split("-")):
            if part not in parts[i]:
                parts[i].append(part)
    return "-".join(".".join(p) for p in parts)


def _pack_servekit(dist: md.Distribution, out: Path) -> Wheel:
    import servekit

    package = Path(servekit.__file__).resolve().parent
    members = [
        (f"servekit/{p.relative_to(package).as_posix()}", p)
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    version = dist.version
    dist_info = f"servekit-{version}.dist-info"
    extra = {"METADATA": dist.read_text("METADATA") or ""}
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        extra["entry_points.txt"] = entry_points
    # The Rust extension is built for this interpreter and platform (not a manylinux build).
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return _write_wheel(out, dist_info, f"{abi}-{abi}-{platform}", members, extra)


def _write_wheel(
    out: Path, dist_info: str, tag: str, members: list[tuple[str, Path]], extra: dict[str, str]
) -> Wheel:
    stem = dist_info.removesuffix(".dist-info")
    name, version = stem.rsplit("-", 1)
    path = out / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    records: list[tuple[str, str, str]] = []
    generated = {
        **extra,
        "WHEEL": "Wheel-Version: 1.0\nGenerator: servekit\nRoot-Is-Purelib: false\n"
        + "".join(f"Tag: {t}\n" for t in _expanded(tag)),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, source in members:
            if arcname.startswith(f"{dist_info}/") and arcname.split("/", 1)[1] in generated:
                continue
            data = source.read_bytes()
            info = zipfile.ZipInfo.from_file(source, arcname)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            records.append((arcname, _hash(data), str(len(data))))
        for filename, text in generated.items():
            arcname = f"{dist_info}/{filename}"
            data = text.encode()
            zf.writestr(arcname, data)
            records.append((arcname, _hash(data), str(len(data))))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([*records, (f"{dist_info}/RECORD", "", "")])
        zf.writestr(f"{dist_info}/RECORD", buffer.getvalue())
    return Wheel(name, version, path)


def _expanded(tag: str) -> list[str]:
    pythons, abis, platforms = (part.split(".") for part in tag.split("-"))
    return [f"{p}-{a}-{pl}" for p in pythons for a in abis for pl in platforms]


def _hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"
