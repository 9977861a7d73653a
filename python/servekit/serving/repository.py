"""Triton-layout model repository: ``ROOT/<model>/config.pbtxt`` and ``<version>/model.*``.

Each model directory holds an optional ``config.pbtxt`` and numbered version directories with
``model.onnx`` (ONNX Runtime) or ``model.pt`` (TorchScript). The versions served follow the
configuration's ``version_policy``. A model whose artifact fails to load is recorded as
unavailable with the reason, and the others keep serving; a ``config.pbtxt`` that does not
parse is a configuration error raised to the caller (at startup: the server refuses to start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from servekit.errors import (
    InvalidArgumentError,
    NotFoundError,
    ServekitError,
    StorageError,
    UnavailableError,
)
from servekit.serving.config import (
    PLATFORMS,
    ModelConfig,
    complete_config,
    read_config,
    select_versions,
    validate_config,
)
from servekit.serving.model import ServedModel
from servekit.serving.paths import contained, plain_component
from servekit.serving.runners import OnnxRunner, Runner, TorchScriptRunner
from servekit.signature import onnx_signature

if TYPE_CHECKING:
    from servekit.serving.telemetry import ServingTelemetry

log = logging.getLogger("servekit.serving")

#: A version's own reference profile, next to its model file.
PROFILE_FILE = "reference_profile.json"
READY, UNAVAILABLE = "READY", "UNAVAILABLE"
#: The reason of a model unloaded on purpose (it no longer counts for strict readiness).
UNLOADED = "unloaded"


@dataclass
class RunnerOptions:
    """How runners are created: the device and intra-op threads per model instance."""

    device: str = "cpu"
    threads: int = 1


@dataclass
class ModelEntry:
    """A model as the repository knows it: its served versions and the failed ones."""

    name: str
    config: ModelConfig | None = None
    versions: dict[int, ServedModel] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    reason: str = ""

    def latest_ready(self) -> ServedModel | None:
        return self.versions[max(self.versions)] if self.versions else None


def make_runner(model_file: Path, config: ModelConfig, options: RunnerOptions) -> Runner:
    """Create the runner the configuration's platform or backend names (ONNX Runtime or
    TorchScript). Raises InvalidArgumentError for another platform or a file that does not
    load, UnavailableError when the device is not available."""
    kind = config.backend or config.platform
    if kind in ("onnxruntime", "onnxruntime_onnx"):
        return OnnxRunner(model_file, device=options.device, threads=options.threads)
    if kind in ("pytorch", "pytorch_libtorch"):
        return TorchScriptRunner(
            model_file,
            input_names=[t.name for t in config.input],
            output_names=[t.name for t in config.output],
            device=options.device,
            threads=options.threads,
        )
    raise InvalidArgumentError(
        f"model '{config.name}': platform/backend {kind!r} is not served "
        "(expected onnxruntime_onnx or pytorch_libtorch)"
    )


def find_model_file(version_dir: Path, config: ModelConfig | None, root: Path) -> Path:
    """The model file of a version directory; NotFoundError when it has none,
    InvalidArgumentError when ``default_model_filename`` is not a plain file name or the file
    (symlinks followed) lies outside the repository ``root``."""
    names = [config.default_model_filename] if config and config.default_model_filename else []
    if names:
        plain_component(names[0], "default_model_filename")
    names += list(PLATFORMS)
    for filename in names:
        candidate = version_dir / filename
        if candidate.is_file():
            contained(candidate, root, f"version {version_dir.name} model file")
            return candidate
    raise NotFoundError(f"{version_dir} holds no model file (expected one of {names})")


class ModelRepository:
    """Loads, serves and unloads the models of one repository directory."""

    def __init__(
        self,
        root: Path | None,
        options: RunnerOptions | None = None,
        telemetry: ServingTelemetry | None = None,
    ) -> None:
        """Open ``root`` (None: no directory, models come only from :attr:`external`);
        raises StorageError when it is not a readable directory. With ``telemetry``, every
        version installed gets its telemetry attached, and removed ones are detached."""
        self.root = Path(root) if root is not None else None
        self.options = options or RunnerOptions()
        self.telemetry = telemetry
        #: Models built elsewhere (registry references): name -> builder of its entry.
        self.external: dict[str, Callable[[str], ModelEntry]] = {}
        self._entries: dict[str, ModelEntry] = {}
        if self.root is not None and not self.root.is_dir():
            raise StorageError(f"model repository {self.root} is not a directory")
        try:
            self.model_names()
        except OSError as exc:
            raise StorageError(f"cannot read model repository {self.root}: {exc}") from None

    def model_names(self) -> list[str]:
        """Names of the model directories in the repository, sorted."""
        if self.root is None:
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _visible(p.name))

    def read_config(self, name: str) -> ModelConfig | None:
        """The model's ``config.pbtxt`` if it has one; InvalidArgumentError if it is invalid."""
        if self.root is None:
            return None
        path = self.root / name / "config.pbtxt"
        return read_config(path) if path.exists() else None

    def build(self, name: str, override: ModelConfig | None = None) -> ModelEntry:
        """Load every version of a model the policy selects (blocking: creates sessions).

        Returns the entry, with failed versions recorded in it. Raises NotFoundError for an
        unknown model directory and InvalidArgumentError for an invalid configuration.
        """
        builder = self.external.get(name)
        if builder is not None:
            if override is not None:
                raise InvalidArgumentError(f"model '{name}' comes from the registry: no config")
            return builder(name)
        plain_component(name, "model name")
        if self.root is None or not _visible(name) or not (self.root / name).is_dir():
            raise NotFoundError(f"no model directory '{name}' in {self.root}")
        model_dir = self.root / name
        contained(model_dir, self.root, f"model '{name}' directory")
        config = override if override is not None else self.read_config(name)
        if config is not None:
            validate_config(config)
        entry = ModelEntry(name)
        available = sorted(
            int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()
        )
        if not available:
            entry.reason = f"{model_dir} has no numbered version directory"
            log.error("model '%s' is not available: %s", name, entry.reason)
            return entry
        try:
            config = self._complete(name, config, model_dir / str(available[-1]))
            versions = select_versions(config, available)
        except ServekitError as exc:
            entry.reason = str(exc)
            log.error("model '%s' is not available: %s", name, exc)
            return entry
        entry.config = config
        for version in versions:
            try:
                model_file = find_model_file(model_dir / str(version), config, self.root)
                runner = make_runner(model_file, config, self.options)
                served = ServedModel(name, version, config, runner)
                profile = model_file.parent / PROFILE_FILE
                if profile.is_file():
                    contained(profile, self.root, f"version {version} {PROFILE_FILE}")
                served.reference_profile_path = profile if profile.is_file() else None
                entry.versions[version] = served
            except ServekitError as exc:
                entry.failed[version] = str(exc)
                log.error("model '%s' version %d is not available: %s", name, version, exc)
        return entry

    def _complete(self, name: str, config: ModelConfig | None, version_dir: Path) -> ModelConfig:
        model_file = find_model_file(version_dir, config, self.root)  # type: ignore[arg-type]
        needs_signature = config is None or not config.input or not config.output
        signature = (
            onnx_signature(model_file) if needs_signature and model_file.suffix == ".onnx" else None
        )
        return complete_config(config or ModelConfig(), name, model_file, signature)

    def install(self, entry: ModelEntry) -> ModelEntry | None:
        """Serve ``entry`` in place of the model's current entry; return the replaced one.

        New requests go to the new entry at once; the caller closes the old one, which lets the
        requests already running on it finish.
        """
        old = self._entries.get(entry.name)
        if self.telemetry is not None:
            self.telemetry.replace(old, entry)
        self._entries[entry.name] = entry
        return old

    def remove(self, name: str) -> ModelEntry:
        """Stop serving a model; return its entry for the caller to close. NotFoundError if the
        model is not loaded."""
        entry = self._entries.get(name)
        if entry is None or not (entry.versions or entry.failed or entry.reason):
            raise NotFoundError(f"model '{name}' is not loaded")
        if self.telemetry is not None:
            self.telemetry.replace(entry, None)
        self._entries[name] = ModelEntry(name, reason=UNLOADED)
        return entry

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served model version (the latest ready one when ``version`` is empty).

        Raises NotFoundError for an unknown model or version, UnavailableError for one that is
        known but not ready.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        if not version:
            model = entry.latest_ready()
            if model is None:
                reason = entry.reason or "; ".join(entry.failed.values()) or "not loaded"
                raise UnavailableError(f"model '{name}' is not ready: {reason}")
            return model
        try:
            number = int(version)
        except ValueError:
            raise InvalidArgumentError(f"model version {version!r} is not an integer") from None
        model = entry.versions.get(number)
        if model is not None:
            return model
        if number in entry.failed:
            raise UnavailableError(
                f"model '{name}' version {number} is not ready: {entry.failed[number]}"
            )
        raise NotFoundError(f"Request for unknown model: '{name}' version {number} is not found")

    def entries(self) -> list[ModelEntry]:
        """The loaded entries (including unavailable ones), sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]

    def index(self) -> list[dict[str, str]]:
        """Triton's repository index: every model directory and loaded version with its state."""
        rows: list[dict[str, str]] = []
        names = sorted(set(self.model_names()) | set(self._entries))
        for name in names:
            entry = self._entries.get(name)
            if entry is None:
                rows.append({"name": name, "state": UNAVAILABLE, "reason": "not loaded"})
                continue
            for version in sorted({*entry.versions, *entry.failed}):
                if version in entry.versions:
                    rows.append({"name": name, "version": str(version), "state": READY})
                else:
                    rows.append(
                        {
                            "name": name,
                            "version": str(version),
                            "state": UNAVAILABLE,
                            "reason": entry.failed[version],
                        }
                    )
            if not entry.versions and not entry.failed:
                rows.append({"name": name, "state": UNAVAILABLE, "reason": entry.reason})
        return rows


async def close_entry(entry: ModelEntry) -> None:
    """Close every version of an entry, letting in-flight requests finish."""
    await asyncio.gather(*(model.close() for model in entry.versions.values()))


def _visible(name: str) -> bool:
    return not name.startswith(".")
