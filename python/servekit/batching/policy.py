"""Queue policies of the dynamic batcher (Triton's ``ModelQueuePolicy``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TimeoutAction = Literal["REJECT", "DELAY"]


@dataclass(frozen=True)
class QueuePolicy:
    """How one priority level queues requests, with the fields and semantics of Triton's
    ``ModelQueuePolicy``.

    ``max_queue_size`` (0: no limit) bounds the requests held at the level, timed-out DELAY
    requests included; past it a request fails at once with "Exceeds maximum queue size".
    ``default_timeout_us`` (0: none) is the queue timeout of the level's requests; with
    ``allow_timeout_override`` a request's own timeout may shorten it (never lengthen it);
    where the level has no default, a request's own timeout applies. When a request's timeout
    expires before it runs, ``timeout_action`` "REJECT" fails it with "Request timeout
    expired" and "DELAY" moves it behind every request of its level that has not timed out:
    it still runs, after them and before any lower level.
    """

    max_queue_size: int = 0
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    timeout_action: TimeoutAction = "REJECT"

    def as_args(self) -> tuple[int, int, bool, str]:
        """The policy in the form the Rust batcher takes."""
        return (
            self.max_queue_size,
            self.default_timeout_us,
            self.allow_timeout_override,
            self.timeout_action,
        )
