"""``servekit ui``: the dashboard over a registry, without serving models."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from servekit.registry import Registry
from servekit.serving.rest.app import install_error_handlers
from servekit.serving.rest.server import ExitZeroServer
from servekit.ui.routes import UiSources, mount_ui


def create_ui_app(registry: Registry) -> FastAPI:
    """A FastAPI application with only the dashboard, reading ``registry``."""
    app = FastAPI(title="servekit dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    mount_ui(app, UiSources(registry=registry))
    return app


def run_ui(registry: Registry, sock: socket.socket) -> None:
    """Serve the dashboard of ``registry`` on the bound ``sock`` until SIGTERM/SIGINT."""
    config = uvicorn.Config(
        create_ui_app(registry), log_level="warning", access_log=False, lifespan="off"
    )
    host, port = sock.getsockname()[:2]
    print(f"servekit: dashboard on http://{host}:{port}/ui/", flush=True)
    ExitZeroServer(config).run(sockets=[sock])
