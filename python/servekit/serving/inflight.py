"""The server-wide limit on requests in flight (``--max-inflight``), shared by every front end.

A request takes a slot when its front end starts reading it and gives it back when its answer
is sent; past the limit it is refused at once with :class:`~servekit.errors.QueueFullError`
("Exceeds maximum queue size", Triton's wording, HTTP 503 / gRPC UNAVAILABLE) instead of
waiting: a queue that grows under a burst is what exhausts memory. The count is guarded by a
lock so front ends on other threads (a gRPC server) share it with the event loop.

Which requests count is the data plane's decision (:meth:`DataPlane.admit`): health and
metrics do not, so probes and scrapes still answer on an overloaded server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from servekit.errors import InvalidArgumentError, QueueFullError

#: Requests in flight by default. On a small machine a few hundred requests are already tens
#: to hundreds of milliseconds of work; more in flight only adds latency and memory.
DEFAULT_MAX_INFLIGHT = 256


class InflightLimit:
    """A counter of requests in flight with a hard ceiling (None: unlimited)."""

    def __init__(self, limit: int | None = DEFAULT_MAX_INFLIGHT) -> None:
        if limit is not None and limit < 1:
            raise InvalidArgumentError(f"--max-inflight must be at least 1, got {limit}")
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now."""
        return self._count

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of the ``with`` block.

        Raises QueueFullError at entry when every slot is taken (nothing is held then).
        """
        with self._lock:
            if self.limit is not None and self._count >= self.limit:
                raise QueueFullError(
                    f"Exceeds maximum queue size: {self.limit} requests in flight "
                    "(the server's --max-inflight)"
                )
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
