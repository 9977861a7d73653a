"""``servekit ui``: the dashboard over a registry, without serving models."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from servekit.errors import ServekitError
from servekit.registry import Registry
from servekit.serving.rest.app import error_response
from servekit.ui.routes import UiSources, mount_ui


def create_ui_app(registry: Registry) -> FastAPI:
    """A FastAPI application with only the dashboard, reading ``registry``."""
    app = FastAPI(title="servekit dashboard", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ServekitError)
    async def on_servekit_error(_request: Request, exc: ServekitError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def on_error(_request: Request, exc: Exception) -> Response:
        return error_response(exc)

    mount_ui(app, UiSources(registry=registry))
    return app


class _Server(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT end ``serve`` normally (exit status 0) instead of
    being re-raised after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_ui(registry: Registry, sock: socket.socket) -> None:
    """Serve the dashboard of ``registry`` on the bound ``sock`` until SIGTERM/SIGINT."""
    config = uvicorn.Config(
        create_ui_app(registry), log_level="warning", access_log=False, lifespan="off"
    )
    host, port = sock.getsockname()[:2]
    print(f"servekit: dashboard on http://{host}:{port}/ui/", flush=True)
    _Server(config).run(sockets=[sock])
