"""The replica directory: which replicas of the application are up, and where their own
listeners are. One small Serve deployment (no CPU reserved) next to the replicas.

Replicas register on start and then every :data:`HEARTBEAT_S` seconds; an entry not renewed
within :data:`EXPIRY_S` is dropped (a replica that died without deregistering), and a replica
that stops deregisters at once. A restarted directory is refilled by the next heartbeats.
"""

from __future__ import annotations

import time

from ray import serve

#: Seconds between a replica's registrations.
HEARTBEAT_S = 2.0
#: Seconds after which an entry that was not renewed is dropped.
EXPIRY_S = 3 * HEARTBEAT_S


@serve.deployment(name="ServekitDirectory", num_replicas=1, ray_actor_options={"num_cpus": 0})
class ReplicaDirectory:
    """Replica id -> base URL of its listener, with the time each entry was last renewed."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}

    def register(self, replica: str, url: str) -> None:
        """Add or renew ``replica`` at ``url``."""
        self._entries[replica] = (url, time.monotonic())

    def deregister(self, replica: str) -> None:
        """Forget ``replica`` (no error when it is unknown)."""
        self._entries.pop(replica, None)

    def replicas(self) -> dict[str, str]:
        """Replica id -> base URL of every replica renewed within :data:`EXPIRY_S`."""
        now = time.monotonic()
        self._entries = {r: e for r, e in self._entries.items() if now - e[1] <= EXPIRY_S}
        return {r: url for r, (url, _) in self._entries.items()}
