"""The start-up rule of ``servekit serve``: refuse to run when nothing asked for can serve.

A server that was asked for models (a repository holding model directories, or ``--model``
references) and loaded none of them would answer 404/503 to every request while looking
healthy to a process supervisor. So after the first load:

- if at least one model version serves, the server starts (the others are reported
  unavailable, as on Triton);
- if none does and registry references were given, they are re-resolved every
  ``poll_s`` seconds for ``grace_s`` seconds (an alias may be set right after the server
  starts, e.g. by a deployment script);
- if still none serves, :class:`~servekit.errors.UnavailableError` names each model and why,
  which the CLI prints as one line with exit status 2.

An empty repository with no ``--model`` starts, as Triton does: models can be added through
the repository API.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from servekit.errors import UnavailableError

if TYPE_CHECKING:
    from servekit.serving.dataplane import DataPlane
    from servekit.serving.registry_source import RegistrySource

#: Default seconds ``serve`` keeps re-resolving registry references when none loaded.
DEFAULT_STARTUP_GRACE_S = 30.0


def _serving(plane: DataPlane) -> bool:
    return any(entry.versions for entry in plane.repository.entries())


def _reasons(plane: DataPlane) -> str:
    parts = []
    for entry in plane.repository.entries():
        why = entry.reason or "; ".join(f"version {v}: {r}" for v, r in entry.failed.items())
        parts.append(f"{entry.name} ({why or 'no version to load'})")
    return ", ".join(parts)


async def require_served(
    plane: DataPlane, source: RegistrySource | None, grace_s: float, poll_s: float
) -> None:
    """Return once some model version serves; raise UnavailableError when none does (after
    ``grace_s`` seconds of re-resolving ``source``'s references, if any). Returns at once when
    nothing was asked for (an empty repository and no references)."""
    if _serving(plane) or not plane.repository.entries():
        return
    if source is not None:
        deadline = time.monotonic() + grace_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(poll_s, left))
            for name in source.refs:
                await source.refresh(plane, name)
            if _serving(plane):
                return
    waited = f" (registry references retried for {grace_s:g} s)" if source is not None else ""
    raise UnavailableError(f"nothing to serve: no model could be loaded{waited}: {_reasons(plane)}")
