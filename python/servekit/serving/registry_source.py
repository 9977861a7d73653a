"""Serving registry models by reference (``name@alias``, ``name:version`` or ``name``).

Each artifact is verified against its digest before it loads: a tampered one is refused with a
log line and the model is not ready, while the others serve. A background task re-resolves the
references on a short interval; when an alias moves, the new version loads off the event loop
and replaces the old one in one step, and requests already running finish on the old version.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from servekit.errors import InvalidArgumentError, NotFoundError, ServekitError
from servekit.serving.export import BatchingOptions, triton_config
from servekit.serving.model import ServedModel
from servekit.serving.repository import (
    PROFILE_FILE,
    ModelEntry,
    RunnerOptions,
    close_entry,
    make_runner,
)

if TYPE_CHECKING:
    from servekit.registry import Registry
    from servekit.registry.records import ModelVersion
    from servekit.serving.dataplane import DataPlane
    from servekit.serving.signature_policy import SignaturePolicy

log = logging.getLogger("servekit.serving")


def model_name_of(ref: str) -> str:
    """The model name of a registry reference."""
    return ref.split("@", 1)[0].split(":", 1)[0]


class RegistrySource:
    """Builds repository entries from registry references and follows their aliases."""

    def __init__(
        self,
        registry: Registry,
        refs: list[str],
        runner_options: RunnerOptions,
        batching: BatchingOptions | None = None,
        signature_policy: SignaturePolicy | None = None,
    ) -> None:
        """Raises InvalidArgumentError when two references name the same model or one is
        malformed (an unknown model, version or alias is not an error yet: it may appear)."""
        self.registry = registry
        self.refs: dict[str, str] = {}
        for ref in refs:
            try:
                registry.get(ref)
            except NotFoundError:
                pass
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"--model {ref}: {exc}") from None
            name = model_name_of(ref)
            if name in self.refs:
                raise InvalidArgumentError(
                    f"--model {ref}: model '{name}' is already served as {self.refs[name]}"
                )
            self.refs[name] = ref
        self.runner_options = runner_options
        self.batching = batching or BatchingOptions()
        self.signature_policy = signature_policy
        self.serving: dict[str, int] = {}
        self._unresolved: dict[str, str] = {}  # name -> the last resolution error logged
        self._held: list[str] | None = None  # load errors held back while starting

    def build(self, name: str) -> ModelEntry:
        """Resolve and load the model's reference now (blocking). A version that cannot be
        resolved, verified or loaded is recorded as failed in the entry, with a log line (for
        a reference that does not resolve, once per distinct error)."""
        ref = self.refs[name]
        entry = ModelEntry(name)
        try:
            version = self.registry.get(ref)
        except ServekitError as exc:
            entry.reason = f"{ref}: {exc}"
            self._log_unresolved(name, exc)
            return entry
        self._unresolved.pop(name, None)
        try:
            served = self._load(version)
            entry.config = served.config
            entry.versions[version.version] = served
        except ServekitError as exc:
            entry.failed[version.version] = str(exc)
            self._report(f"{version.ref} refused: {exc}")
        return entry

    def _load(self, version: ModelVersion) -> ServedModel:
        model_file = self.registry.model_file(version.ref, verify=True)
        if self.signature_policy is not None:
            self.signature_policy.check(self.registry, version)
        config = triton_config(version, model_file, self.batching)
        runner = make_runner(model_file, config, self.runner_options)
        served = ServedModel(version.name, version.version, config, runner)
        # Packaged variants are directory artifacts holding their reference profile (covered
        # by the digest verified above).
        artifact = self.registry.artifact_path(version.ref, verify=False)
        profile = artifact / PROFILE_FILE
        served.reference_profile_path = profile if profile.is_file() else None
        return served

    def load_candidate(self, ref: str) -> ServedModel:
        """Resolve, verify and load the version ``ref`` names now (blocking), for a shadow or
        canary of a model this source serves. Raises InvalidArgumentError when the model is not
        served from the registry, and the registry's or the model's errors otherwise."""
        name = model_name_of(ref)
        if name not in self.refs:
            raise InvalidArgumentError(
                f"candidate {ref}: model '{name}' is not served from the registry (serve it "
                f"with --model {name}@ALIAS)"
            )
        return self._load(self.registry.get(ref))

    def resolve(self, name_or_ref: str) -> int:
        """The version a served model's reference (given its name), or a reference, names now
        (blocking)."""
        return self.registry.get(self.refs.get(name_or_ref, name_or_ref)).version

    def _log_unresolved(self, name: str, exc: ServekitError) -> None:
        if self._unresolved.get(name) != str(exc):
            self._report(f"model '{name}' is not available: {self.refs[name]}: {exc}")
            self._unresolved[name] = str(exc)

    def _report(self, message: str) -> None:
        if self._held is not None:
            self._held.append(message)
        else:
            log.error("%s", message)

    def release_reports(self) -> None:
        """Log the load errors held back since :meth:`load_all` (the server starts; had it
        not, the start-up error names them all on one line) and log later ones at once."""
        held, self._held = self._held or [], None
        for message in held:
            log.error("%s", message)

    async def load_all(self, plane: DataPlane) -> None:
        """Load every reference and install it in the plane's repository; load errors are
        held back until :meth:`release_reports`."""
        self._held = []
        taken = set(plane.repository.model_names())
        for name in self.refs:
            if name in taken:
                raise InvalidArgumentError(
                    f"--model {self.refs[name]}: the model repository also has a model '{name}'"
                )
            plane.repository.external[name] = self.build
            entry = await asyncio.to_thread(self.build, name)
            plane.repository.install(entry)
            self.serving[name] = _served_version(entry)

    async def follow(self, plane: DataPlane, interval_s: float) -> None:
        """Re-resolve the references every ``interval_s`` and switch models whose reference
        moved, until cancelled. A new version that fails to load is logged and the old one
        keeps serving."""
        while True:
            await asyncio.sleep(interval_s)
            for name in self.refs:
                await self.refresh(plane, name)

    async def refresh(self, plane: DataPlane, name: str) -> None:
        """Re-resolve the model's reference and switch to the version it names if it moved.
        A reference that does not resolve is logged once per distinct error."""
        try:
            wanted = await asyncio.to_thread(self.resolve, name)
        except ServekitError as exc:
            self._log_unresolved(name, exc)
            return
        self._unresolved.pop(name, None)
        if wanted == self.serving.get(name):
            return
        entry = await asyncio.to_thread(self.build, name)
        if not entry.versions and self.serving.get(name) is not None:
            log.error("%s moved to version %d, which did not load; still serving version %d",
                      self.refs[name], wanted, self.serving[name])  # fmt: skip
            self.serving[name] = wanted  # do not retry a broken version on every poll
            return
        # No await between these two: a candidate at that version goes idle and yields its
        # telemetry key as production takes it.
        plane.candidates.release(name, wanted)
        old = plane.repository.install(entry)
        self.serving[name] = wanted
        log.info("%s now serves version %d", self.refs[name], wanted)
        if old is not None:
            await close_entry(old)


def _served_version(entry: ModelEntry) -> int | None:
    if entry.versions:
        return max(entry.versions)
    if entry.failed:
        return max(entry.failed)
    return None
