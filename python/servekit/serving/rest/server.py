"""Running the HTTP server: bind first (a port in use fails before any model loads), load the
models, serve with uvicorn, and on SIGTERM/SIGINT drain and return normally (exit status 0)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from servekit.errors import InvalidArgumentError, UnavailableError
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES
from servekit.serving.rest.app import create_app
from servekit.serving.rest.protocol import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    protocol_with_deadlines,
)

if TYPE_CHECKING:
    from servekit.registry import Registry
    from servekit.serving.grpc import GrpcFrontEnd

log = logging.getLogger("servekit.serving")


@dataclass
class ServerOptions:
    """Where and how the HTTP server listens."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Seconds granted to in-flight requests and queued work at shutdown.
    drain_timeout_s: float = 10.0
    #: Slow clients: seconds to send the headers, then the body; idle seconds between requests.
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_timeout_s: float = 5.0
    #: TLS (uvicorn's): a PEM certificate chain and its private key; both or neither.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.ssl_certfile else "http"


def check_tls(options: ServerOptions) -> None:
    """Load the TLS certificate and key now, so a bad pair fails before any model loads.

    Returns None without TLS or when they load; raises InvalidArgumentError naming the files
    when only one is given or they do not load.
    """
    cert, key = options.ssl_certfile, options.ssl_keyfile
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise InvalidArgumentError("--ssl-certfile and --ssl-keyfile go together: give both")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgumentError(
            f"cannot load TLS certificate {cert} / key {key}: {exc}"
        ) from None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises UnavailableError with one clear line when the address cannot be used.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP (proto 0 would leave Nagle on: 40 ms delayed-ACK stalls).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise UnavailableError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


#: How long the event loop may hold the interpreter while a model instance thread waits for
#: it (CPython's default is 5 ms). Instance threads need it briefly between batches to build
#: inputs and hand back outputs; with the default, a busy loop left the model idle for up to
#: 5 ms per batch.
SWITCH_INTERVAL_S = 0.0005


class ExitZeroServer(uvicorn.Server):
    """uvicorn, except that a handled SIGTERM/SIGINT ends the server normally: uvicorn would
    re-raise the signal after shutdown, and the process would not exit with status 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Server(ExitZeroServer):
    """An :class:`ExitZeroServer` whose SIGTERM/SIGINT also marks the data plane not ready at
    once (and stops the gRPC front end through ``on_exit``)."""

    def __init__(
        self, config: uvicorn.Config, plane: DataPlane, on_exit: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._plane = plane
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._plane.draining = True
        if self._on_exit is not None:
            self._on_exit()
        super().handle_exit(sig, frame)


async def serve(
    plane: DataPlane,
    sock: socket.socket,
    options: ServerOptions,
    *,
    background: Callable[[DataPlane], Awaitable[None]] | None = None,
    grpc_front_end: GrpcFrontEnd | None = None,
    registry: Registry | None = None,
) -> None:
    """Serve ``plane`` on the bound ``sock`` until SIGTERM/SIGINT, then drain within
    ``options.drain_timeout_s``. ``background`` runs alongside (e.g. registry polling) and is
    cancelled at shutdown. ``grpc_front_end`` (bound) serves the same plane in this loop and
    drains at the same time as HTTP; the dashboard reads ``registry`` when given. The
    repository's telemetry, if any, is evaluated on its timer while serving and stopped (timer
    and alert dispatcher) after the drain."""
    app = create_app(plane, max_body_bytes=options.max_body_bytes, registry=registry)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(options.drain_timeout_s)),
        http=protocol_with_deadlines(options.header_timeout_s, options.body_timeout_s),
        timeout_keep_alive=options.keep_alive_timeout_s,  # type: ignore[arg-type]
        ssl_certfile=options.ssl_certfile,
        ssl_keyfile=options.ssl_keyfile,
    )
    grpc_stop: list[asyncio.Task[None]] = []

    def stop_grpc() -> None:
        # In the signal handler, on the loop's thread: the gRPC drain runs next to uvicorn's.
        if grpc_front_end is not None and not grpc_stop:
            grpc_stop.append(asyncio.ensure_future(_drain_grpc(grpc_front_end, options)))

    server = _Server(config, plane, stop_grpc)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    telemetry = plane.repository.telemetry
    if telemetry is not None:
        telemetry.start()
    task = asyncio.create_task(background(plane)) if background is not None else None
    if grpc_front_end is not None:
        await grpc_front_end.start()
    host, port = sock.getsockname()[:2]
    print(f"servekit: serving on {options.scheme}://{host}:{port}", flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        plane.draining = True
        stop_grpc()
        for stopping in grpc_stop:
            await stopping
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await asyncio.wait_for(plane.close(), options.drain_timeout_s)
        except TimeoutError:
            log.error("shutdown: models did not drain within %ss", options.drain_timeout_s)
        if telemetry is not None:
            await asyncio.to_thread(telemetry.close)
        print("servekit: stopped", file=sys.stderr, flush=True)


async def _drain_grpc(front_end: GrpcFrontEnd, options: ServerOptions) -> None:
    await front_end.begin_drain()
    await front_end.stop(options.drain_timeout_s)
