"""A self-contained OCI build context for one registry version.

The context (``--out DIR``) holds:

- ``Containerfile`` (also valid as a Dockerfile): two stages over the same base; the first makes
  a virtual environment from ``wheels/`` with no index (without byte code or the packages'
  ``tests/`` directories, then byte-compiles what the server imports:
  :mod:`servekit.containerize.precompile`), the second copies it and the registry, so the
  wheelhouse never reaches the image;
- ``wheels/``: servekit and exactly the dependencies of ``servekit[serve,EXTRAS]``, repacked
  from this environment (:mod:`servekit.containerize.wheelhouse`);
- ``registry/``: a one-version registry holding the version's artifact (with the reference
  profile and any signature inside it), metadata, metrics, tags and signature. It numbers the
  version 1 (a registry numbers its own versions); the origin ``NAME:V`` is recorded in the
  version's ``source`` and in the image's labels, the digest is the same;
- ``.dockerignore``.

The image runs ``servekit serve --exit-on-error`` as uid 65534 on the read-only registry: the
artifact is re-hashed before anything starts and a tampered one stops the container with one
line (exit status 2).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from servekit import __version__
from servekit.containerize.wheelhouse import Wheel, build_wheelhouse
from servekit.errors import ConflictError, IntegrityError, InvalidArgumentError
from servekit.registry import Registry
from servekit.registry.records import ModelVersion

#: Where the image keeps the registry and the virtual environment.
IMAGE_REGISTRY = "/models/registry"
IMAGE_VENV = "/opt/servekit"
#: Triton's ports: HTTP and gRPC.
HTTP_PORT = 8000
GRPC_PORT = 8001
#: The unprivileged user the server runs as (``nobody`` in Debian-based images).
IMAGE_UID = 65534
#: Modules a server imports only with its first model, byte-compiled at build time
#: (:mod:`servekit.containerize.precompile`): always, and per extra.
PRECOMPILE = ("servekit.serving.registry_source", "onnxruntime")
PRECOMPILE_OF_EXTRA = {"torch": ("torch",)}
#: Extras that cannot go in an image built by this context.
REFUSED_EXTRAS = {
    "gpu": "gpu installs onnxruntime-gpu next to serve's onnxruntime (one module, two builds)",
    "dev": "dev holds test tools, not serving dependencies",
    "all": "all holds the packaging and benchmark stacks; name the extras the model needs",
}


def default_base() -> str:
    """A slim Python image of the running minor version (``python:3.11-slim``)."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


@dataclass(frozen=True)
class BuildContext:
    """What :func:`write_context` wrote."""

    path: Path
    version: ModelVersion
    base: str
    extras: tuple[str, ...]
    wheels: list[Wheel]
    labels: dict[str, str]

    @property
    def default_tag(self) -> str:
        """``servekit-NAME:V``, lower case as image names must be."""
        return f"servekit-{self.version.name.lower()}:{self.version.version}"


def write_context(
    registry: Registry,
    ref: str,
    out: Path,
    *,
    base: str | None = None,
    extras: tuple[str, ...] = (),
) -> BuildContext:
    """Write the build context for registry version ``ref`` (NAME, NAME:V or NAME@ALIAS) into
    ``out``, which must not exist or be empty; return what was written.

    Raises NotFoundError (unknown reference, a dependency not installed here), IntegrityError
    (the artifact does not match its digest), ConflictError (``out`` is not empty) and
    InvalidArgumentError (an extra that cannot go in the image, or an unknown one).
    """
    for extra in extras:
        if extra in REFUSED_EXTRAS:
            raise InvalidArgumentError(f"--extras {extra}: {REFUSED_EXTRAS[extra]}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"{out}: exists and is not an empty directory")
    version = registry.get(ref)
    artifact = registry.artifact_path(version.ref, verify=True)
    out.mkdir(parents=True, exist_ok=True)
    wheels = build_wheelhouse(("serve", *extras), out / "wheels")
    _copy_version(version, artifact, out / "registry")
    base = base or default_base()
    labels = image_labels(version, ref, base)
    (out / "Containerfile").write_text(containerfile(version, base, extras, labels))
    (out / ".dockerignore").write_text(DOCKERIGNORE)
    return BuildContext(out, version, base, tuple(extras), wheels, labels)


def _copy_version(version: ModelVersion, artifact: Path, root: Path) -> None:
    algorithm = version.digest.split(":", 1)[0]
    target = Registry(root)
    copied = target.register(
        version.name,
        artifact,
        format=version.format,
        signature=version.signature,
        metadata=version.metadata,
        metrics=version.metrics,
        tags=version.tags,
        variant=version.variant,
        source={**version.source, "containerized_from": version.ref},
        description=version.description,
        algorithm=algorithm,
    )
    if copied.digest != version.digest:
        raise IntegrityError(
            f"{version.ref}: copied artifact hashes to {copied.digest}, not {version.digest}"
        )
    del target
    gc.collect()  # close the index: a read-only WAL database must have no -wal/-shm files
    for leftover in ("index.db-wal", "index.db-shm"):
        if (root / leftover).exists():
            raise ConflictError(f"{root / leftover}: the registry index was not closed")


def image_labels(version: ModelVersion, ref: str, base: str) -> dict[str, str]:
    """OCI annotations (``org.opencontainers.image.*``) and the model's name, version and
    digest (``io.servekit.model.*``)."""
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "org.opencontainers.image.title": f"servekit-{version.name}",
        "org.opencontainers.image.description": version.description
        or f"KServe v2 / Triton server for {version.ref}",
        "org.opencontainers.image.version": str(version.version),
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.base.name": base,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "io.servekit.version": __version__,
        "io.servekit.model.name": version.name,
        "io.servekit.model.version": str(version.version),
        "io.servekit.model.reference": ref,
        "io.servekit.model.digest": version.digest,
        "io.servekit.model.format": version.format,
    }


DOCKERIGNORE = """# The build needs Containerfile, wheels/ and registry/ (its empty tmp/ included:
# the registry opens it). Keep what else lands here (logs, editor and VCS files) out of the context.
**/*.log
**/*.swp
**/.git
**/__pycache__
"""


def containerfile(
    version: ModelVersion, base: str, extras: tuple[str, ...], labels: dict[str, str]
) -> str:
    """The Containerfile text (plain Dockerfile syntax: podman, Buildah and docker build it)."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    want = f"({sys.version_info.major}, {sys.version_info.minor})"
    requirement = f"servekit[{','.join(('serve', *extras))}]=={__version__}"
    precompile = " ".join(
        (*PRECOMPILE, *(m for extra in extras for m in PRECOMPILE_OF_EXTRA.get(extra, ())))
    )
    label_lines = " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    health = (
        "import os, urllib.request; urllib.request.urlopen("
        "'http://127.0.0.1:%s/v2/health/ready' % os.environ.get('SERVEKIT_PORT', '8000'), "
        "timeout=2)"
    )
    return f"""\
# servekit image for {version.ref} ({version.digest}), written by servekit {__version__}.
# Build offline: podman build --network none --format docker -t TAG .
#            or: docker build --network none -t TAG .

FROM {base} AS build
COPY wheels /wheels
# The wheelhouse holds wheels for CPython {py} (repacked from the environment that wrote it).
RUN python3 -c "import sys; v = sys.version_info[:2]; sys.exit(0 if v == {want} else \\
      'servekit: error: the base image has Python %d.%d, this context needs {py}' % v)"
# No byte code at install and no tests/ directories of the packages: the build then writes
# byte code for just what the server imports (servekit.containerize.precompile).
RUN python3 -m venv {IMAGE_VENV} \\
 && {IMAGE_VENV}/bin/pip install --no-index --find-links /wheels --no-cache-dir --no-compile \\
      --disable-pip-version-check '{requirement}' \\
 && {IMAGE_VENV}/bin/pip uninstall --yes --quiet pip setuptools \\
 && find {IMAGE_VENV}/lib -depth -type d -path '*/site-packages/*/tests' -exec rm -rf {{}} + \\
 && {IMAGE_VENV}/bin/python -m servekit.containerize.precompile {precompile}
COPY registry {IMAGE_REGISTRY}
RUN chmod -R a-w,a+rX {IMAGE_REGISTRY}

FROM {base}
COPY --from=build {IMAGE_VENV} {IMAGE_VENV}
COPY --from=build {IMAGE_REGISTRY} {IMAGE_REGISTRY}
LABEL {label_lines}
ENV PATH={IMAGE_VENV}/bin:$PATH \\
    PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    SERVEKIT_HOME={IMAGE_REGISTRY} \\
    SERVEKIT_MODEL={version.name}:1 \\
    SERVEKIT_HOST=0.0.0.0 \\
    SERVEKIT_PORT={HTTP_PORT} \\
    SERVEKIT_GRPC_PORT={GRPC_PORT} \\
    SERVEKIT_EXIT_ON_ERROR=true
EXPOSE {HTTP_PORT} {GRPC_PORT}
USER {IMAGE_UID}:{IMAGE_UID}
WORKDIR /tmp
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\
  CMD ["{IMAGE_VENV}/bin/python", "-c", "{health}"]
ENTRYPOINT ["{IMAGE_VENV}/bin/servekit", "serve"]
"""
