"""``servekit serve``'s gRPC flags (Triton's names and meanings) and the options they give."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def grpc_flags(command: F) -> F:
    """Add the ``--grpc-*`` options to a click command (they arrive as keyword arguments)."""
    flags = [
        click.option(
            "--grpc-port",
            type=int,
            default=None,
            help="Also serve KServe v2 gRPC on this port (0: any free port; default: off).",
        ),
        click.option(
            "--grpc-restricted-protocol",
            "grpc_restricted",
            multiple=True,
            metavar="API[,API...]:KEY=VALUE",
            help="Serve the gRPC APIs only to calls with metadata KEY: VALUE (Triton's flag; "
            "the APIs of --http-restricted-api); repeatable.",
        ),
        click.option(
            "--grpc-use-ssl", is_flag=True, help="gRPC over TLS (needs cert and key files)."
        ),
        click.option("--grpc-server-cert", type=_FILE, help="PEM certificate chain for TLS."),
        click.option("--grpc-server-key", type=_FILE, help="PEM private key for TLS."),
        click.option("--grpc-root-cert", type=_FILE, help="PEM root certificates of clients."),
        click.option(
            "--grpc-use-ssl-mutual",
            is_flag=True,
            help="Require client certificates signed by --grpc-root-cert.",
        ),
    ]
    for flag in reversed(flags):
        command = flag(command)
    return command


def grpc_tls_given(flags: dict[str, Any]) -> bool:
    """Whether any TLS or restriction flag was given (they all need --grpc-port)."""
    return any(
        flags.get(k)
        for k in (
            "grpc_use_ssl",
            "grpc_server_cert",
            "grpc_server_key",
            "grpc_root_cert",
            "grpc_use_ssl_mutual",
            "grpc_restricted",
        )
    )
