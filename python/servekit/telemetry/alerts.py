"""Alerts on state changes: one structured log line each, and an optional webhook.

:meth:`AlertDispatcher.emit` never blocks and never does I/O besides the log line: the webhook
POST happens on one background thread fed by a bounded queue. When the queue is full the alert
is dropped (and counted) rather than making the caller wait. Each delivery tries up to
``1 + retries`` times, each attempt bounded by ``timeout_s``, with ``backoff_s * 2**attempt``
between attempts; a 2xx answer is a success.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from servekit.errors import InvalidArgumentError

LOGGER = logging.getLogger("servekit.alerts")
_STOP = object()
#: Alerts kept in memory for :meth:`AlertDispatcher.recent` (the dashboard's alert log).
RECENT_ALERTS = 200


class AlertDispatcher:
    """Log and deliver alerts. ``webhook_url``: an http(s) URL that receives each alert as a
    JSON POST, or None for log lines only. Raises InvalidArgumentError for a bad URL or
    setting."""

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        timeout_s: float = 2.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        queue_size: int = 1000,
        logger: logging.Logger = LOGGER,
    ) -> None:
        if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
            raise InvalidArgumentError(f"alert webhook must be an http(s) URL, got {webhook_url!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or queue_size < 1:
            raise InvalidArgumentError(
                "alert webhook settings: timeout_s > 0, retries >= 0, backoff_s >= 0 and "
                f"queue_size >= 1, got {timeout_s}, {retries}, {backoff_s}, {queue_size}"
            )
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.logger = logger
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.attempts = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        self._stopping = threading.Event()
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if webhook_url is not None:
            self._thread = threading.Thread(
                target=self._deliver_forever, name="servekit-alerts", daemon=True
            )
            self._thread.start()

    def emit(self, alert: dict[str, Any]) -> None:
        """Log ``alert`` (a JSON-ready mapping) as one line and queue it for the webhook.
        Returns at once; an alert that finds the queue full is dropped and counted."""
        event = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **alert}
        line = json.dumps(event, sort_keys=True, default=str)
        self.logger.warning("servekit alert %s", line)
        self._recent.append(json.loads(line))
        if self._thread is None or self._stopping.is_set():
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1

    def recent(self) -> list[dict[str, Any]]:
        """The last :data:`RECENT_ALERTS` alerts emitted, oldest first, as logged."""
        return list(self._recent)

    def _deliver_forever(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._deliver(item)
            finally:
                self._queue.task_done()

    def _deliver(self, body: str) -> None:
        assert self.webhook_url is not None
        data = body.encode()
        for attempt in range(self.retries + 1):
            if attempt and self._stopping.wait(self.backoff_s * 2 ** (attempt - 1)):
                break
            self.attempts += 1
            request = urllib.request.Request(
                self.webhook_url,
                data=data,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = exc
            else:
                last = RuntimeError(f"HTTP {response.status}")
            self.logger.debug("alert webhook attempt %d failed: %s", attempt + 1, last)
        self.failed += 1
        self.logger.error("alert webhook %s failed: %s", self.webhook_url, last)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for queued alerts to be delivered or given up; True when
        the queue drained. For tests and shutdown; never called on the request path."""
        if self._thread is None:
            return True
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the delivery thread: pending retries stop waiting, queued alerts still get one
        attempt each, up to ``timeout_s`` in all."""
        if self._thread is None:
            return
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)
