"""uvicorn's httptools protocol with deadlines for slow clients.

uvicorn arms its keep-alive timeout only after a response, and has no deadline for reading a
request: a connection that sends nothing, or trickles its headers or body a byte at a time,
would stay open (and a request waiting for its body holds an in-flight slot) forever. Here:

* ``header_timeout``: from the connection's start, or from the first byte of each request,
  until its headers are complete;
* ``body_timeout``: from the headers until the whole body arrived;
* uvicorn's own keep-alive timeout between requests.

Past a deadline the connection is closed (there is no request to answer yet, or the answer
could not be read). A request waiting for its body then sees the disconnect and frees its slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a client has to send a request's headers by default.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Seconds a client has to send a request's body once its headers arrived, by default.
DEFAULT_BODY_TIMEOUT_S = 60.0
#: A timer firing this close before its deadline counts as on time (loops' timers are not
#: exact; re-arming for a sliver would spin).
_EARLY_S = 0.001


class _DeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with :attr:`header_timeout` and :attr:`body_timeout` (class
    attributes set by :func:`protocol_with_deadlines`)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Loop time at which the connection closes (None: no deadline running).
        self._deadline: float | None = None
        #: The one timer of the connection; it may fire before the deadline (it then re-arms
        #: itself for the rest) or after the deadline was lifted (it then stops).
        self._timer: asyncio.TimerHandle | None = None

    # Arming and lifting a deadline only set a number: the timer is created again only when
    # it fires (about once per header_timeout per connection) or must fire sooner. A timer
    # per request cost about 50 us of CPU per request at 64 connections (docs/hot-path.md).
    def _arm(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._expire)

    def _disarm(self) -> None:
        self._deadline = None

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline - self.loop.time() > _EARLY_S:  # moved later since the timer was set
            self._timer = self.loop.call_at(deadline, self._expire)
            return
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def protocol_with_deadlines(header_timeout: float, body_timeout: float) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``) with these deadlines in seconds."""
    return type(
        "DeadlineProtocol",
        (_DeadlineProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
