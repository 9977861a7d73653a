"""``servekit serve``: the KServe v2 / Triton HTTP server over a model repository."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

import click

from servekit.serving.codecs import DEFAULT_MAX_JSON_DEPTH
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES
from servekit.serving.export import BatchingOptions
from servekit.serving.registry_source import RegistrySource
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.rest.server import ServerOptions, bind, serve
from servekit.serving.signature_policy import SignaturePolicy
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
    "--trusted-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Public key (PEM) registry versions must be signed with (see --signature-policy).",
)
@click.option(
    "--signature-policy",
    type=click.Choice(["enforce", "warn", "off"]),
    default=None,
    help="enforce: never serve an unsigned or badly signed version; warn: serve it, log and "
    "count it; off: ignore signatures. Default: enforce with --trusted-key, else off.",
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
def serve_command(
    model_repo: Path | None,
    registry: Path | None,
    models: tuple[str, ...],
    trusted_key: Path | None,
    signature_policy: str | None,
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
    options = ServerOptions(host, port, max_body_bytes, drain_timeout)
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
            Registry(registry),
            list(models),
            runner_options,
            BatchingOptions(max_batch_size),
            _signature_policy(signature_policy, trusted_key),
        )
    elif trusted_key is not None or signature_policy not in (None, "off"):
        raise click.UsageError("--trusted-key and --signature-policy apply to --model only")
    sock = bind(host, port)
    try:
        plane = DataPlane(repository, max_json_depth=max_json_depth)
        asyncio.run(_main(plane, source, sock, options, poll_interval))
    finally:
        sock.close()


async def _main(
    plane: DataPlane,
    source: RegistrySource | None,
    sock: socket.socket,
    options: ServerOptions,
    poll_interval: float,
) -> None:
    await plane.load_all()
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
    if source is None:
        await serve(plane, sock, options)
        return
    await serve(plane, sock, options, background=lambda p: source.follow(p, poll_interval))


def _signature_policy(mode: str | None, trusted_key: Path | None) -> SignaturePolicy | None:
    policy = SignaturePolicy.from_options(mode, trusted_key)
    return None if policy.mode == "off" else policy
