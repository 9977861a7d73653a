"""``servekit ui``: browse a registry in the web dashboard without serving models."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("ui")
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry root (default: $SERVEKIT_HOME, else ~/.servekit).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port (0: any free port).")
def ui_command(registry: Path | None, host: str, port: int) -> None:
    """Serve the dashboard's Models and Compare pages for a registry at http://HOST:PORT/ui/.

    Live and Drift need served models: they are on the dashboard of ``servekit serve``.
    Stops on SIGTERM or SIGINT.
    """
    from servekit.errors import NotFoundError
    from servekit.registry import Registry
    from servekit.registry.root import resolve_root
    from servekit.serving.rest.server import bind
    from servekit.ui.standalone import run_ui

    root = resolve_root(registry)
    if not root.is_dir():  # browsing must not create an empty registry by mistake
        raise NotFoundError(f"no registry at {root} (give --registry DIR)")
    reg = Registry(root)
    sock = bind(host, port)
    try:
        run_ui(reg, sock)
    finally:
        sock.close()
