"""``Registry``: the Python face of the registry held by the Rust core.

Artifacts live content-addressed under the root (``blobs/<algorithm>/<hex>`` for a file,
``trees/<algorithm>/<hex>/`` for a directory, files read-only), the index in ``index.db``
(SQLite, WAL). Every call releases the interpreter while the core works. One ``Registry`` may be
shared by threads (calls are serialised); any number of processes may open the same root.
"""

from __future__ import annotations

import getpass
import math
import os
import socket
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Any

import orjson

from servekit import _core
from servekit.errors import InvalidArgumentError, NotFoundError
from servekit.registry.records import (
    AliasEvent,
    GcReport,
    ModelVersion,
    RegisteredModel,
    event_from_row,
    model_from_row,
    version_from_row,
)
from servekit.registry.root import resolve_root
from servekit.signature import Signature

StrPath = str | os.PathLike[str]

#: Artifact formats the registry accepts (defined once, in the Rust core).
FORMATS: tuple[str, ...] = tuple(_core.REGISTRY_FORMATS)
#: Actions ``set_alias`` may record (``delete`` is recorded by ``delete_alias``).
ALIAS_ACTIONS: tuple[str, ...] = tuple(_core.REGISTRY_ALIAS_ACTIONS)
#: The action of an audit event recording a compare-and-swap move that was refused.
REFUSED_ACTION: str = _core.REGISTRY_REFUSED_ACTION


class _Unchecked:
    """The default of ``set_alias(expect=...)``: move the alias without comparing."""

    def __repr__(self) -> str:
        return "UNCHECKED"


#: ``set_alias(expect=UNCHECKED)`` (the default) moves the alias wherever it points now.
UNCHECKED: Any = _Unchecked()


def default_actor() -> str:
    """Return ``user@host`` of this process, the actor recorded when none is given."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _str(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _path(value: object) -> str:
    try:
        return os.fspath(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgumentError(
            f"artifact path must be a str or os.PathLike, got {type(value).__name__}"
        ) from None


def _json(what: str, value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return orjson.dumps(dict(value)).decode()
    except TypeError as exc:
        raise InvalidArgumentError(f"{what} is not JSON-serialisable: {exc}") from None


def _metrics(metrics: Mapping[str, float] | None) -> list[tuple[str, float]]:
    if metrics is None:
        return []
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError(f"metrics must be a mapping, got {type(metrics).__name__}")
    out = []
    for k, v in metrics.items():
        _str("a metric name", k)
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise InvalidArgumentError(f"metric {k!r} must be a finite number, got {v!r}")
        out.append((k, float(v)))
    return out


def _tags(tags: Mapping[str, str | None] | None, *, allow_none: bool) -> list[tuple[str, Any]]:
    if tags is None:
        return []
    if not isinstance(tags, Mapping):
        raise InvalidArgumentError(f"tags must be a mapping, got {type(tags).__name__}")
    out = []
    for k, v in tags.items():
        _str("a tag name", k)
        if not (isinstance(v, str) or (allow_none and v is None)):
            raise InvalidArgumentError(f"tag {k!r} must have a string value, got {v!r}")
        out.append((k, v))
    return out


def _signature(signature: Signature | Mapping[str, Any] | None) -> str | None:
    if signature is None:
        return None
    if not isinstance(signature, Signature):
        signature = Signature.from_dict(signature)
    return orjson.dumps(signature.to_dict()).decode()


class Registry:
    """A model registry rooted at ``root`` (default: ``$SERVEKIT_HOME``, else ``~/.servekit``).

    References are ``name`` (latest version not archived), ``name:VERSION`` or
    ``name@ALIAS``. Errors: NotFoundError for an unknown model, version or alias or a missing
    path; InvalidArgumentError for malformed names, references, formats or values;
    IntegrityError for a stored artifact that does not match its digest; ConflictError for an
    operation the stored state forbids; StorageError for operating-system failures.
    """

    def __init__(self, root: StrPath | None = None, *, create: bool = True) -> None:
        """Open the registry at ``root`` (default: ``$SERVEKIT_HOME``, else ``~/.servekit``),
        creating it when ``create`` is true. Raises NotFoundError when ``create`` is false and
        the root directory does not exist, StorageError when it cannot be opened."""
        path = resolve_root(root)
        if not create and not path.is_dir():
            raise NotFoundError(
                f"{path}: no registry there (create one with 'servekit registry init {path}' "
                "or by registering a model into it)"
            )
        self._core = _core.RegistryCore(os.fspath(path))

    @property
    def root(self) -> Path:
        """The registry's root directory."""
        return Path(self._core.root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def register(
        self,
        name: str,
        path: StrPath,
        *,
        format: str,
        signature: Signature | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        variant: str | None = None,
        parent: str | None = None,
        source: Mapping[str, Any] | None = None,
        description: str | None = None,
        algorithm: str = "blake3",
    ) -> ModelVersion:
        """Store the file or directory at ``path`` and register it as the next version of
        ``name``; return the new version.

        ``format`` is one of :data:`FORMATS`; a directory of format onnx, torchscript or ort
        must contain ``model.onnx``, ``model.pt`` or ``model.ort``. ``parent`` is any reference
        and is recorded as ``name:version``. Identical content is stored once. Raises
        NotFoundError (missing path, unknown parent), InvalidArgumentError (bad name, format,
        signature, metric or tag) and StorageError; nothing is stored when it raises.
        """
        row = self._core.register(
            _str("model name", name),
            _path(path),
            _str("format", format),
            _signature(signature),
            _json("metadata", metadata),
            _metrics(metrics),
            _tags(tags, allow_none=False),
            None if variant is None else _str("variant", variant),
            None if parent is None else _str("parent", parent),
            _json("source", source),
            None if description is None else _str("description", description),
            _str("algorithm", algorithm),
        )
        return version_from_row(row)

    def get(self, ref: str) -> ModelVersion:
        """Return the version ``ref`` points at. Raises NotFoundError or InvalidArgumentError."""
        return version_from_row(self._core.get(_str("reference", ref)))

    def list_models(self) -> list[RegisteredModel]:
        """Return every registered model, sorted by name."""
        return [model_from_row(r) for r in self._core.list_models()]

    def list_versions(
        self,
        name: str,
        *,
        tags: Mapping[str, str] | None = None,
        variant: str | None = None,
        order_by: str | None = None,
    ) -> list[ModelVersion]:
        """Return the versions of model ``name`` carrying every tag in ``tags`` and the given
        ``variant``, archived ones included, ordered by ``order_by``: ``version`` (default),
        ``created_at`` or ``metrics.NAME`` (versions without that metric last), each optionally
        prefixed by ``-`` for descending. Raises NotFoundError for an unknown model,
        InvalidArgumentError for an unknown ordering."""
        args = (
            _str("model name", name),
            _tags(tags, allow_none=False),
            None if variant is None else _str("variant", variant),
            None if order_by is None else _str("order_by", order_by),
        )
        return [version_from_row(r) for r in self._core.list_versions(*args)]

    def set_alias(
        self,
        ref: str,
        alias: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        action: str = "set",
        expect: int | None = UNCHECKED,
    ) -> AliasEvent:
        """Point ``alias`` of the model at the version ``ref`` resolves to and record the move
        (``action`` one of :data:`ALIAS_ACTIONS`; ``actor`` defaults to ``user@host``).

        ``expect`` makes the move a compare-and-swap: a version number means "only if the alias
        points at this version now", None "only if the alias does not exist yet"; the check and
        the move happen in one write transaction, so of concurrent writers expecting the same
        target exactly one succeeds. A refused attempt is recorded in the audit log (action
        :data:`REFUSED_ACTION`) and raises PreconditionFailedError. Return the recorded event.
        Raises NotFoundError for an unknown version, InvalidArgumentError for a bad alias,
        action or expectation, ConflictError for an archived version."""
        check = expect is not UNCHECKED
        number = isinstance(expect, int) and not isinstance(expect, bool)
        if check and expect is not None and not number:
            raise InvalidArgumentError(
                f"expect must be a version number or None, got {type(expect).__name__}"
            )
        row = self._core.set_alias(
            _str("reference", ref),
            _str("alias", alias),
            default_actor() if actor is None else _str("actor", actor),
            None if reason is None else _str("reason", reason),
            _str("action", action),
            check,
            expect if check else None,
        )
        return event_from_row(row)

    def record_refusal(
        self, ref: str, alias: str, *, reason: str, actor: str | None = None
    ) -> AliasEvent:
        """Record in the alias audit log that moving ``alias`` to ``ref`` was refused (action
        ``refused``; the alias does not move: the event's previous and new versions are its
        current target). Return the event. Raises NotFoundError for an unknown version and
        InvalidArgumentError for a bad alias."""
        row = self._core.record_refusal(
            _str("reference", ref),
            _str("alias", alias),
            default_actor() if actor is None else _str("actor", actor),
            _str("reason", reason),
        )
        return event_from_row(row)

    def delete_alias(
        self, name: str, alias: str, *, reason: str | None = None, actor: str | None = None
    ) -> AliasEvent:
        """Remove ``alias`` from model ``name`` and record it; return the event.
        Raises NotFoundError when the model or alias does not exist."""
        row = self._core.delete_alias(
            _str("model name", name),
            _str("alias", alias),
            default_actor() if actor is None else _str("actor", actor),
            None if reason is None else _str("reason", reason),
        )
        return event_from_row(row)

    def set_tags(self, ref: str, tags: Mapping[str, str | None]) -> ModelVersion:
        """Merge ``tags`` into the version's tags (a None value removes that tag); return the
        updated version."""
        return version_from_row(
            self._core.set_tags(_str("reference", ref), _tags(tags, allow_none=True))
        )

    def log_metrics(self, ref: str, metrics: Mapping[str, float]) -> ModelVersion:
        """Merge ``metrics`` (finite numbers) into the version's metrics, replacing values of
        the same name; return the updated version."""
        return version_from_row(self._core.log_metrics(_str("reference", ref), _metrics(metrics)))

    def set_description(self, ref: str, description: str) -> ModelVersion:
        """Replace the version's description; return the updated version."""
        return version_from_row(
            self._core.set_description(_str("reference", ref), _str("description", description))
        )

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> RegisteredModel:
        """Set a registered model's description and/or merge its tags (None removes a tag);
        return the updated model. Raises NotFoundError for an unknown model."""
        row = self._core.update_model(
            _str("model name", name),
            None if description is None else _str("description", description),
            _tags(tags, allow_none=True),
        )
        return model_from_row(row)

    def archive(self, ref: str) -> ModelVersion:
        """Archive a version: a bare ``name`` no longer resolves to it and no alias may point
        at it; its artifact stays. Raises ConflictError while an alias points at it."""
        return version_from_row(self._core.archive(_str("reference", ref)))

    def history(self, name: str) -> list[AliasEvent]:
        """Return every alias move of model ``name``, oldest first."""
        name = _str("model name", name)
        return [event_from_row(r) for r in self._core.history(name)]

    def lineage(self, ref: str) -> list[ModelVersion]:
        """Return the version ``ref`` points at, then its parent, grandparent, ... ."""
        return [version_from_row(r) for r in self._core.lineage(_str("reference", ref))]

    def verify(self, ref: str | None = None) -> list[str]:
        """Re-hash the artifact of ``ref``, or of every version when None, and return one line
        per problem (``name:version: what (expected DIGEST)``); an empty list means intact."""
        return self._core.verify(None if ref is None else _str("reference", ref))

    def artifact_path(self, ref: str, verify: bool = True) -> Path:
        """Return the stored artifact of ``ref``: the file, or a directory holding the original
        relative file names. With ``verify`` it is re-hashed first. Raises IntegrityError,
        naming model, version and expected digest, when it is missing or does not match."""
        return Path(self._core.artifact_path(_str("reference", ref), bool(verify)))

    def model_file(self, ref: str, verify: bool = True) -> Path:
        """Return the main model file of ``ref``: the artifact itself for a file; for a
        directory the file its format names (onnx: ``model.onnx``, torchscript: ``model.pt``,
        ort: ``model.ort``) or its only file. Verified like :meth:`artifact_path`; raises
        InvalidArgumentError when a directory has no identifiable main file."""
        return Path(self._core.model_file(_str("reference", ref), bool(verify)))

    def gc(self) -> GcReport:
        """Remove staging files left by killed writers and artifacts no version references;
        return what was removed. Safe while other processes register."""
        removed, freed = self._core.gc()
        return GcReport([Path(p) for p in removed], freed)
