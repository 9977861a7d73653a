"""``servekit serve``: the KServe v2 / Triton HTTP server over a model repository."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

import click

from servekit.serving.access import GROUP_NAMES, RestrictedApis
from servekit.serving.codecs import DEFAULT_MAX_JSON_DEPTH
from servekit.serving.control import (
    DEFAULT_POLL_SECS,
    ControlMode,
    ModelControl,
    RepositoryPoller,
)
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES
from servekit.serving.export import BatchingOptions
from servekit.serving.inflight import DEFAULT_MAX_INFLIGHT
from servekit.serving.registry_source import RegistrySource
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.rest.protocol import DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S
from servekit.serving.rest.server import ServerOptions, bind, check_tls, serve
from servekit.serving.telemetry import ServingTelemetry, TelemetryOptions


@click.command("serve")
@click.option(
    "--model-repo",
    type=click.Path(path_type=Path),
    help="Triton-layout model repository: DIR/<model>/config.pbtxt and <version>/model.onnx.",
)
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry root for --model (default: $SERVEKIT_HOME, else ~/.servekit).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME@ALIAS",
    help="Registry model to serve (NAME@ALIAS, NAME:VERSION or NAME); repeatable.",
)
@click.option(
    "--poll-interval",
    default=2.0,
    show_default=True,
    help="Seconds between checks of the registry for moved aliases.",
)
@click.option(
    "--max-batch-size",
    default=64,
    show_default=True,
    help="max_batch_size (dynamic batching) of registry models with a dynamic first dim.",
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
    "--telemetry/--no-telemetry",
    default=True,
    show_default=True,
    help="Latency sketches and drift monitoring of every served version.",
)
@click.option(
    "--reference-profile",
    "reference_profiles",
    multiple=True,
    metavar="[MODEL=]FILE",
    help="Reference profile for drift: FILE for every model, MODEL=FILE for one (wins over "
    "FILE and over the model's own reference_profile.json); repeatable.",
)
@click.option(
    "--drift-window-rows",
    default=10_000,
    show_default=True,
    help="Drift window: the last N rows of each model version.",
)
@click.option(
    "--drift-window-seconds",
    type=float,
    default=None,
    help="Drift window: the rows of the last S seconds (replaces --drift-window-rows).",
)
@click.option(
    "--slo-p99-ms",
    type=float,
    default=None,
    help="Request latency p99 objective (ms) of every model: servekit_slo_violation and alerts.",
)
@click.option(
    "--alert-webhook",
    metavar="URL",
    default=None,
    help="POST each drift/SLO state change as JSON to URL (retries, never blocks requests).",
)
@click.option(
    "--telemetry-interval",
    default=10.0,
    show_default=True,
    help="Seconds between drift/SLO evaluations (alerts fire without a scrape).",
)
@click.option(
    "--drain-timeout",
    default=10.0,
    show_default=True,
    help="Seconds in-flight requests get to finish at shutdown.",
)
# -- exposure: access control and limits (issue 11) ------------------------------------------
@click.option(
    "--http-restricted-api",
    "restricted_apis",
    multiple=True,
    metavar="API[,API...]:KEY=VALUE",
    help="Serve the APIs only to requests with header KEY: VALUE (Triton's flag); repeatable. "
    f"APIs: {', '.join(GROUP_NAMES)}.",
)
@click.option(
    "--max-inflight",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_INFLIGHT,
    show_default=True,
    help="Requests in flight at once (health and metrics excepted); past it: 503 at once.",
)
@click.option(
    "--model-control-mode",
    type=click.Choice([m.value for m in ControlMode]),
    default="none",
    show_default=True,
    help="Triton's modes. none: load all, refuse load/unload; explicit: load --load-model, "
    "allow load/unload; poll: load all, rescan every --repository-poll-secs.",
)
@click.option(
    "--load-model",
    "load_models",
    multiple=True,
    metavar="NAME",
    help="Explicit mode: a repository model to load at start ('*': all); repeatable.",
)
@click.option(
    "--repository-poll-secs",
    type=float,
    default=DEFAULT_POLL_SECS,
    show_default=True,
    help="Poll mode: seconds between repository scans.",
)
@click.option(
    "--strict-readiness/--no-strict-readiness",
    default=True,
    show_default=True,
    help="Ready only while every model that should be loaded is ready (Triton's default).",
)
@click.option(
    "--ssl-certfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve HTTPS: PEM certificate (chain); needs --ssl-keyfile.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="HTTPS: PEM private key of --ssl-certfile.",
)
@click.option(
    "--http-header-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_HEADER_TIMEOUT_S,
    show_default=True,
    help="Seconds a client has to send a request's headers (then the connection closes).",
)
@click.option(
    "--http-body-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_BODY_TIMEOUT_S,
    show_default=True,
    help="Seconds a client has to send a request's body once its headers arrived.",
)
@click.option(
    "--http-keep-alive-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open between requests.",
)
def serve_command(
    model_repo: Path | None,
    registry: Path | None,
    models: tuple[str, ...],
    poll_interval: float,
    max_batch_size: int,
    host: str,
    port: int,
    device: str,
    threads: int,
    max_body_bytes: int,
    max_json_depth: int,
    telemetry: bool,
    reference_profiles: tuple[str, ...],
    drift_window_rows: int,
    drift_window_seconds: float | None,
    slo_p99_ms: float | None,
    alert_webhook: str | None,
    telemetry_interval: float,
    drain_timeout: float,
    restricted_apis: tuple[str, ...],
    max_inflight: int,
    model_control_mode: str,
    load_models: tuple[str, ...],
    repository_poll_secs: float,
    strict_readiness: bool,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
    http_header_timeout: float,
    http_body_timeout: float,
    http_keep_alive_timeout: float,
) -> None:
    """Serve a model repository and/or registry models over the KServe v2 / Triton protocol.

    Registry artifacts are verified against their digests before loading (a tampered one is
    refused and its model is not ready); when an alias moves, the new version is loaded and
    swapped in while requests in flight finish on the old one.

    Stops on SIGTERM or SIGINT after draining in-flight requests (exit status 0). Startup
    failures (port in use, unreadable repository, invalid config.pbtxt) print one line and exit
    with status 2; a model whose artifact fails to load is reported and the others serve.

    Telemetry (on by default): latency quantiles of every version, and drift monitoring of
    versions with a reference profile (a packaged registry artifact's, a reference_profile.json
    next to a repository model file, or --reference-profile) at GET
    /v2/models/NAME[/versions/V]/drift and as servekit_* gauges on /metrics.
    """
    logging.basicConfig(
        level=logging.INFO, format="servekit: %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("servekit").setLevel(logging.INFO)
    if model_repo is None and not models:
        raise click.UsageError("give --model-repo DIR, --model NAME@ALIAS, or both")
    if registry is not None and not models:
        raise click.UsageError("--registry needs at least one --model NAME@ALIAS")
    restricted = RestrictedApis.parse(restricted_apis)
    control = ModelControl(ControlMode(model_control_mode), load_models, repository_poll_secs)
    poll_source = click.get_current_context().get_parameter_source("repository_poll_secs")
    control.check(
        has_repository=model_repo is not None,
        poll_secs_given=poll_source is click.core.ParameterSource.COMMANDLINE,
    )
    options = ServerOptions(
        host,
        port,
        max_body_bytes,
        drain_timeout,
        header_timeout_s=http_header_timeout,
        body_timeout_s=http_body_timeout,
        keep_alive_timeout_s=http_keep_alive_timeout,
        ssl_certfile=None if ssl_certfile is None else str(ssl_certfile),
        ssl_keyfile=None if ssl_keyfile is None else str(ssl_keyfile),
    )
    check_tls(options)
    runner_options = RunnerOptions(device=device, threads=threads)
    tel_flags = reference_profiles or alert_webhook or slo_p99_ms or drift_window_seconds
    if not telemetry and tel_flags:
        raise click.UsageError("telemetry flags need telemetry: drop --no-telemetry")
    serving_telemetry = (
        ServingTelemetry(
            TelemetryOptions(
                reference_profiles=reference_profiles,
                alert_webhook=alert_webhook,
                slo_p99_ms=slo_p99_ms,
                drift_window_rows=drift_window_rows,
                drift_window_seconds=drift_window_seconds,
                interval_s=telemetry_interval,
            )
        )
        if telemetry
        else None
    )
    repository = ModelRepository(model_repo, runner_options, serving_telemetry)
    source = None
    if models:
        from servekit.registry import Registry

        source = RegistrySource(
            Registry(registry), list(models), runner_options, BatchingOptions(max_batch_size)
        )
    sock = bind(host, port)
    try:
        plane = DataPlane(
            repository,
            max_json_depth=max_json_depth,
            max_inflight=max_inflight,
            restricted=restricted,
            control_mode=control.mode,
            strict_readiness=strict_readiness,
        )
        asyncio.run(_main(plane, source, sock, options, poll_interval, control))
    finally:
        sock.close()


async def _main(
    plane: DataPlane,
    source: RegistrySource | None,
    sock: socket.socket,
    options: ServerOptions,
    poll_interval: float,
    control: ModelControl,
) -> None:
    poller = RepositoryPoller(plane) if control.mode is ControlMode.POLL else None
    if poller is not None:
        await poller.start()  # the baseline first: a change during loading is seen later
    await plane.load_all(control.startup_models())
    if source is not None:
        await source.load_all(plane)
    telemetry = plane.repository.telemetry
    if telemetry is not None:
        served = {e.name for e in plane.repository.entries()}
        for name in telemetry.profiled_models:
            if name not in served:
                logging.getLogger("servekit.serving").warning(
                    "--reference-profile %s=...: no model '%s' is served (yet)", name, name
                )

    async def background(p: DataPlane) -> None:
        jobs = [] if source is None else [source.follow(p, poll_interval)]
        if poller is not None:
            jobs.append(poller.follow(control.poll_secs))
        await asyncio.gather(*jobs)

    registry = source.registry if source is not None else None
    await serve(plane, sock, options, background=background, registry=registry)
