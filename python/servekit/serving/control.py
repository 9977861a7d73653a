"""Model control modes, as Triton's ``--model-control-mode``: who may load and unload models.

* ``none`` (the default, as in Triton): every model of the repository loads at start-up; the
  load and unload APIs are refused.
* ``explicit``: the models named by ``--load-model`` (``*``: all) load at start-up, and the
  load and unload APIs work.
* ``poll``: every model loads at start-up; every ``--repository-poll-secs`` the repository is
  rescanned, and a model whose directory appeared or whose files changed (config.pbtxt or any
  file under a version directory: added, removed, resized or touched) is loaded again, one
  whose directory disappeared is unloaded. The load and unload APIs are refused (Triton:
  "explicit model load / unload is not allowed if polling is enabled").

A reload switches atomically: requests running on the old versions finish on them, new ones
go to the new versions. When a changed model fails to load (no version ready) the poller logs
it and keeps serving the previous load, as Triton does. Registry references (``--model
NAME@ALIAS``) follow their alias in every mode; they are not part of the repository scan.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from servekit.errors import ForbiddenError, InvalidArgumentError, ServekitError

if TYPE_CHECKING:
    from servekit.serving.dataplane import DataPlane

log = logging.getLogger("servekit.serving")

#: Seconds between repository scans by default (Triton's ``--repository-poll-secs``).
DEFAULT_POLL_SECS = 15.0


class ControlMode(StrEnum):
    """Triton's model control modes."""

    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


class ModelControlError(ForbiddenError):
    """Load or unload asked for in a control mode that does not allow it (HTTP 403; a gRPC
    front end answers UNAVAILABLE, as Triton does)."""


@dataclass(frozen=True)
class ModelControl:
    """The server's control settings: the mode, ``--load-model`` names (``*``: all) and the
    seconds between scans in ``poll`` mode."""

    mode: ControlMode = ControlMode.NONE
    load_models: tuple[str, ...] = ()
    poll_secs: float = DEFAULT_POLL_SECS

    def check(self, *, has_repository: bool, poll_secs_given: bool) -> None:
        """Refuse settings that would be ignored or cannot work: InvalidArgumentError naming
        the flag (--load-model outside explicit mode, --repository-poll-secs outside poll
        mode or not positive, poll without a repository)."""
        if self.load_models and self.mode is not ControlMode.EXPLICIT:
            raise InvalidArgumentError(
                f"--load-model needs --model-control-mode explicit (the mode is '{self.mode}', "
                "which loads every model)"
            )
        if poll_secs_given and self.mode is not ControlMode.POLL:
            raise InvalidArgumentError("--repository-poll-secs needs --model-control-mode poll")
        if self.poll_secs <= 0:
            raise InvalidArgumentError(
                f"--repository-poll-secs must be positive, got {self.poll_secs}"
            )
        if self.mode is ControlMode.POLL and not has_repository:
            raise InvalidArgumentError("--model-control-mode poll needs --model-repo")

    def startup_models(self) -> list[str] | None:
        """The repository models to load at start-up (None: all of them)."""
        if self.mode is not ControlMode.EXPLICIT or "*" in self.load_models:
            return None
        return list(dict.fromkeys(self.load_models))


def refuse_control(mode: ControlMode) -> None:
    """Return None when ``mode`` allows the load/unload APIs; raise ModelControlError, whose
    message names the mode, otherwise."""
    if mode is ControlMode.POLL:
        raise ModelControlError(
            "explicit model load / unload is not allowed if polling is enabled "
            "(model control mode 'poll')"
        )
    if mode is ControlMode.NONE:
        raise ModelControlError(
            "explicit model load / unload is not allowed in model control mode 'none' "
            "(start the server with --model-control-mode explicit)"
        )


#: A model directory's state: (relative path, size, mtime ns) of each file that matters.
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(model_dir: Path) -> Fingerprint:
    """What the poller compares between scans: config.pbtxt and every file under the numbered
    version directories (recursively; symlinks are followed, so a replaced target counts)."""
    found: list[tuple[str, int, int]] = []
    config = model_dir / "config.pbtxt"
    with_stat = [config] if config.is_file() else []
    for child in sorted(model_dir.iterdir()):
        if child.is_dir() and child.name.isdigit():
            for root, _dirs, files in os.walk(child, followlinks=False):
                with_stat += [Path(root) / f for f in files]
    for path in with_stat:
        try:
            stat = path.stat()
        except OSError:  # removed between the listing and the stat: the next scan sees it
            continue
        found.append((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


class RepositoryPoller:
    """Rescans a data plane's repository and applies what changed (``poll`` mode)."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self._seen: dict[str, Fingerprint] = {}

    def scan(self) -> dict[str, Fingerprint]:
        """The fingerprint of every model directory now (blocking: reads the disk)."""
        repository = self.plane.repository
        out = {}
        for name in repository.model_names():
            try:
                out[name] = fingerprint(repository.root / name)  # type: ignore[operator]
            except OSError as exc:
                log.error("poll: cannot read model '%s': %s", name, exc)
        return out

    async def start(self) -> None:
        """Remember the repository as loaded at start-up (the first scan's baseline)."""
        self._seen = await asyncio.to_thread(self.scan)

    async def poll_once(self) -> None:
        """Scan once; load added and changed models, unload removed ones."""
        now = await asyncio.to_thread(self.scan)
        for name in sorted(set(self._seen) - set(now)):
            log.info("poll: model '%s' was removed from the repository: unloading", name)
            await self.plane.drop(name)
        for name, print_ in sorted(now.items()):
            if self._seen.get(name) == print_:
                continue
            what = "added" if name not in self._seen else "changed"
            try:
                entry = await self.plane.switch(name, keep_on_failure=True)
            except ServekitError as exc:
                log.error("poll: model '%s' %s but does not load: %s", name, what, exc)
            else:
                log.info("poll: model '%s' %s: versions %s", name, what, sorted(entry.versions))
        self._seen = now

    async def follow(self, interval_s: float) -> None:
        """Poll every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.poll_once()
