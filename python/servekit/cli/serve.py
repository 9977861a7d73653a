"""``servekit serve``: the KServe v2 / Triton HTTP server over a model repository."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from servekit.serving.codecs import DEFAULT_MAX_JSON_DEPTH
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.rest.server import ServerOptions, bind, serve


@click.command("serve")
@click.option(
    "--model-repo",
    type=click.Path(path_type=Path),
    required=True,
    help="Triton-layout model repository: DIR/<model>/config.pbtxt and <version>/model.onnx.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port (0: any free port).")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="cuda: ONNX Runtime CUDAExecutionProvider (needs onnxruntime-gpu), torch on CUDA.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    help="Intra-op threads per model instance; keep instances x threads within the cores.",
)
@click.option(
    "--max-body-bytes", default=DEFAULT_MAX_BODY_BYTES, show_default=True, help="Body limit."
)
@click.option(
    "--max-json-depth", default=DEFAULT_MAX_JSON_DEPTH, show_default=True, help="JSON nesting."
)
@click.option(
    "--drain-timeout",
    default=10.0,
    show_default=True,
    help="Seconds in-flight requests get to finish at shutdown.",
)
def serve_command(
    model_repo: Path,
    host: str,
    port: int,
    device: str,
    threads: int,
    max_body_bytes: int,
    max_json_depth: int,
    drain_timeout: float,
) -> None:
    """Serve a model repository over the KServe v2 / Triton HTTP protocol.

    Stops on SIGTERM or SIGINT after draining in-flight requests (exit status 0). Startup
    failures (port in use, unreadable repository, invalid config.pbtxt) print one line and exit
    with status 2; a model whose artifact fails to load is reported and the others serve.
    """
    logging.basicConfig(
        level=logging.INFO, format="servekit: %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("servekit").setLevel(logging.INFO)
    options = ServerOptions(host, port, max_body_bytes, drain_timeout)
    sock = bind(host, port)
    try:
        repository = ModelRepository(model_repo, RunnerOptions(device=device, threads=threads))
        asyncio.run(_main(DataPlane(repository, max_json_depth=max_json_depth), sock, options))
    finally:
        sock.close()


async def _main(plane: DataPlane, sock: object, options: ServerOptions) -> None:
    await plane.load_all()
    await serve(plane, sock, options)  # type: ignore[arg-type]
