"""``servekit serve``: the KServe v2 / Triton HTTP (and, with --grpc-port, gRPC) server over a
model repository."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from servekit.cli._grpc import grpc_flags, grpc_tls_given
from servekit.cli.serve_env import (
    REGISTRY_ENVVARS,
    check_registry_env,
    env_options,
    refuse_failed_models,
    verify_models,
)
from servekit.serving.access import GROUP_NAMES, RestrictedApis
from servekit.serving.candidates import (
    CANARY,
    DEFAULT_QUEUE_SIZE,
    SHADOW,
    CandidateSet,
    CandidateSpec,
    parse_candidate,
)
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
from servekit.serving.grpc import GrpcFrontEnd, GrpcOptions
from servekit.serving.inflight import DEFAULT_MAX_INFLIGHT
from servekit.serving.registry_source import RegistrySource
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.rest.protocol import DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S
from servekit.serving.rest.server import ServerOptions, bind, check_tls, serve
from servekit.serving.signature_policy import SignaturePolicy
from servekit.serving.startup import DEFAULT_STARTUP_GRACE_S, require_served
from servekit.serving.telemetry import ServingTelemetry, TelemetryOptions


@env_options(prefix="SERVEKIT")
@click.command("serve")
@click.option(
    "--model-repo",
    type=click.Path(path_type=Path),
    help="Triton-layout model repository: DIR/<model>/config.pbtxt and <version>/model.onnx.",
)
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=REGISTRY_ENVVARS,
    help="Registry root for --model (default: $SERVEKIT_REGISTRY or $SERVEKIT_HOME, else "
    "~/.servekit).",
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
    "--startup-grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_STARTUP_GRACE_S,
    show_default=True,
    help="Seconds --model references are retried at start when no model loaded; then exit 2.",
)
@click.option(
    "--max-batch-size",
    default=64,
    show_default=True,
    help="max_batch_size (dynamic batching) of registry models with a dynamic first dim.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="cuda: ONNX Runtime CUDAExecutionProvider (needs onnxruntime-gpu), torch on CUDA; "
    "for models whose instance_group names no kind (KIND_CPU/KIND_GPU win, as in Triton).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Intra-op threads per model instance; keep instances x threads within the cores.",
)
@click.option(
    "--max-body-bytes",
    "--http-max-input-size",
    default=DEFAULT_MAX_BODY_BYTES,
    show_default=True,
    help="Body limit (HTTP bodies before and after decompression, gRPC messages).",
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
    "--exit-on-error/--no-exit-on-error",
    default=False,
    show_default=True,
    help="Verify every --model artifact before anything starts and exit (status 2) if one "
    "is tampered or any model fails to load, as Triton's --exit-on-error.",
)
@click.option(
    "--shadow",
    "shadows",
    multiple=True,
    metavar="NAME@ALIAS[=FRACTION]",
    help="Copy FRACTION (default 1.0) of the model's requests to this registry version off the "
    "response path and compare its answers (GET /v2/models/NAME/candidates); repeatable.",
)
@click.option(
    "--canary",
    "canaries",
    multiple=True,
    metavar="NAME@ALIAS=FRACTION",
    help="Answer FRACTION of the model's requests from this registry version (sticky by the "
    "canary_key parameter or servekit-canary-key header); repeatable.",
)
@click.option(
    "--shadow-queue-size",
    default=DEFAULT_QUEUE_SIZE,
    show_default=True,
    help="Shadow copies outstanding per shadow; beyond it they are dropped and counted.",
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
@grpc_flags
# -- Ray Serve (servekit.serving.ray; extra `ray`) --------------------------------------------
@click.option("--ray", is_flag=True, help="Serve with replicas on Ray Serve behind Ray's proxy.")
@click.option("--ray-address", default=None, help="Ray cluster to use (default: a local one).")
@click.option(
    "--ray-proxy", type=click.Choice(["haproxy", "ray"]), default=None,
    help="The local cluster's HTTP ingress: Ray's HAProxy (default) or its Python proxy.",
)  # fmt: skip
@click.option("--replicas", type=int, default=None, help="With --ray: replicas (default 1).")
@click.option("--autoscale", default=None, metavar="MIN:MAX", help="With --ray: autoscale.")
@click.option(
    "--target-ongoing-requests", type=float, default=None, help="Autoscaling target (32)."
)
@click.option(
    "--max-ongoing-requests", type=int, default=None, help="Per replica (256): caps batches."
)
@click.option("--replica-cpus", type=float, default=None, help="CPUs Ray reserves per replica.")
@click.option("--print-config", is_flag=True, help="With --ray: print a Ray Serve config.")
def serve_command(
    model_repo: Path | None,
    registry: Path | None,
    models: tuple[str, ...],
    trusted_key: Path | None,
    signature_policy: str | None,
    poll_interval: float,
    startup_grace: float,
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
    exit_on_error: bool,
    shadows: tuple[str, ...],
    canaries: tuple[str, ...],
    shadow_queue_size: int,
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
    **extra: Any,
) -> None:
    """Serve a model repository and/or registry models over the KServe v2 / Triton protocol.

    Registry artifacts are verified against their digests before loading (a tampered one is
    refused and its model is not ready); when an alias moves, the new version is loaded and
    swapped in while requests in flight finish on the old one.

    Stops on SIGTERM or SIGINT after draining in-flight requests (exit status 0). Startup
    failures (port in use, unreadable repository, invalid config.pbtxt) print one line and exit
    with status 2; a model whose artifact fails to load is reported and the others serve;
    when none loads (after --startup-grace seconds of retrying --model references), exit 2.

    Telemetry (on by default): latency quantiles of every version, and drift monitoring of
    versions with a reference profile (a packaged registry artifact's, a reference_profile.json
    next to a repository model file, or --reference-profile) at GET
    /v2/models/NAME[/versions/V]/drift and as servekit_* gauges on /metrics.

    Every option may also come from an environment variable SERVEKIT_<OPTION> (SERVEKIT_PORT,
    SERVEKIT_MODEL="a@production b:2", SERVEKIT_TELEMETRY=false, ...); a flag wins.
    --grpc-port P also serves Triton's KServe v2 gRPC service (and grpc.health.v1) over the
    same models, batchers and statistics, with the same limits.
    """
    logging.basicConfig(
        level=logging.INFO, format="servekit: %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("servekit").setLevel(logging.INFO)
    if model_repo is None and not models:
        raise click.UsageError("give --model-repo DIR, --model NAME@ALIAS, or both")
    ctx = click.get_current_context()
    check_registry_env(ctx)
    if ctx.get_parameter_source("registry") is ParameterSource.COMMANDLINE and not models:
        raise click.UsageError("--registry needs at least one --model NAME@ALIAS")
    grpc = {key: value for key, value in extra.items() if key.startswith("grpc_")}
    ray_flags = {key: value for key, value in extra.items() if key not in grpc}
    if any(v not in (None, False) for v in ray_flags.values()):  # --ray and its flags
        from servekit.cli.serve_ray import RayFlags, serve_on_ray

        refuse_unsupported_on_ray(ctx, ray_flags)
        flags = RayFlags(
            address=ray_flags.pop("ray_address"), proxy=ray_flags.pop("ray_proxy"), **ray_flags
        )  # type: ignore[arg-type]
        flags.check()
        serve_on_ray(
            flags, model_repo=model_repo, registry=registry, models=models,
            poll_interval=poll_interval, max_batch_size=max_batch_size, host=host, port=port,
            device=device, threads=threads, max_body_bytes=max_body_bytes,
            max_json_depth=max_json_depth, drain_timeout=drain_timeout,
            telemetry=dict(
                reference_profiles=reference_profiles, alert_webhook=alert_webhook,
                slo_p99_ms=slo_p99_ms, drift_window_rows=drift_window_rows,
                drift_window_seconds=drift_window_seconds, interval_s=telemetry_interval,
            ) if telemetry else None,
        )  # fmt: skip
        return
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
            Registry(registry, create=False),
            list(models),
            runner_options,
            # The generated instance_group follows --device (a config's kind decides the device).
            BatchingOptions(max_batch_size, kind="KIND_GPU" if device == "cuda" else "KIND_CPU"),
            _signature_policy(signature_policy, trusted_key),
        )
        if exit_on_error:
            verify_models(source)
    elif trusted_key is not None or signature_policy not in (None, "off"):
        raise click.UsageError("--trusted-key and --signature-policy apply to --model only")
    grpc_options = _grpc_options(grpc, host, max_body_bytes)
    specs = [parse_candidate(v, SHADOW) for v in shadows]
    specs += [parse_candidate(v, CANARY) for v in canaries]
    if specs and source is None:
        raise click.UsageError("--shadow/--canary need the model served with --model NAME@ALIAS")
    candidates = CandidateSet(
        source,
        serving_telemetry,
        shadow_queue_size,
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
            candidates=candidates,
        )
        asyncio.run(
            _main(
                plane,
                source,
                sock,
                options,
                poll_interval,
                control,
                startup_grace,
                exit_on_error,
                specs,
                grpc_options,
            )
        )
    finally:
        sock.close()


async def _main(
    plane: DataPlane,
    source: RegistrySource | None,
    sock: socket.socket,
    options: ServerOptions,
    poll_interval: float,
    control: ModelControl,
    startup_grace: float,
    exit_on_error: bool,
    specs: list[CandidateSpec],
    grpc_options: GrpcOptions | None = None,
) -> None:
    front_end = None
    if grpc_options is not None:  # bound before loading, as HTTP: a port in use fails first
        front_end = GrpcFrontEnd(plane, grpc_options)
        front_end.bind()
    poller = RepositoryPoller(plane) if control.mode is ControlMode.POLL else None
    if poller is not None:
        await poller.start()  # the baseline first: a change during loading is seen later
    await plane.load_all(control.startup_models())
    if source is not None:
        await source.load_all(plane)
    if exit_on_error:
        refuse_failed_models(plane.repository)
    await require_served(plane, source, startup_grace, poll_interval)
    if source is not None:
        source.release_reports()
    try:
        for spec in specs:
            await plane.add_candidate(spec)
    except BaseException:
        await plane.close()  # what loaded closes before the error ends the process
        raise
    telemetry = plane.repository.telemetry
    if telemetry is not None:
        served = {e.name for e in plane.repository.entries()}
        for name in telemetry.profiled_models:
            if name not in served:
                logging.getLogger("servekit.serving").warning(
                    "--reference-profile %s=...: no model '%s' is served (yet)", name, name
                )

    async def background(p: DataPlane) -> None:
        jobs = [] if source is None else [_follow(p, source, poll_interval)]
        if poller is not None:
            jobs.append(poller.follow(control.poll_secs))
        await asyncio.gather(*jobs)

    registry = source.registry if source is not None else None
    await serve(
        plane,
        sock,
        options,
        background=background,
        grpc_front_end=front_end,
        registry=registry,
    )


#: The serve options the Ray Serve application honours (servekit.cli.serve_ray); the others
#: are refused with --ray rather than ignored.
RAY_OPTIONS = frozenset(
    {
        "model_repo",
        "registry",
        "models",
        "poll_interval",
        "max_batch_size",
        "host",
        "port",
        "device",
        "threads",
        "max_body_bytes",
        "max_json_depth",
        "drain_timeout",
        "telemetry",
        "reference_profiles",
        "alert_webhook",
        "slo_p99_ms",
        "drift_window_rows",
        "drift_window_seconds",
        "telemetry_interval",
    }
)


def refuse_unsupported_on_ray(ctx: click.Context, ray_flags: dict[str, object]) -> None:
    """Raise click.UsageError naming the options given (on the command line or in the
    environment) that ``--ray`` does not support."""
    allowed = RAY_OPTIONS | set(ray_flags)
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name is not None
        and param.name not in allowed
        and ctx.get_parameter_source(param.name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]
    if given:
        raise click.UsageError(f"not supported with --ray: {', '.join(given)}")


def _grpc_options(flags: dict[str, Any], host: str, max_body_bytes: int) -> GrpcOptions | None:
    """The gRPC front end's options from the --grpc-* flags; None without --grpc-port."""
    if flags["grpc_port"] is None:
        if grpc_tls_given(flags):
            raise click.UsageError("the --grpc-* flags need --grpc-port")
        return None
    if flags["grpc_use_ssl_mutual"] and not flags["grpc_use_ssl"]:
        raise click.UsageError("--grpc-use-ssl-mutual needs --grpc-use-ssl")
    tls_files = ("grpc_server_cert", "grpc_server_key", "grpc_root_cert")
    if not flags["grpc_use_ssl"] and any(flags[k] for k in tls_files):
        raise click.UsageError("TLS files given without --grpc-use-ssl")
    return GrpcOptions(
        host=host,
        port=flags["grpc_port"],
        max_message_bytes=max_body_bytes,
        use_ssl=flags["grpc_use_ssl"],
        server_cert=flags["grpc_server_cert"],
        server_key=flags["grpc_server_key"],
        root_cert=flags["grpc_root_cert"],
        use_ssl_mutual=flags["grpc_use_ssl_mutual"],
        restricted=RestrictedApis.parse(flags["grpc_restricted"], "--grpc-restricted-protocol"),
    )


async def _follow(plane: DataPlane, source: RegistrySource, interval_s: float) -> None:
    """Follow the registry: production references, then candidate references, each poll."""
    follow = asyncio.create_task(source.follow(plane, interval_s))
    try:
        while True:
            await asyncio.sleep(interval_s)
            await plane.refresh_candidates()
    finally:
        follow.cancel()


def _signature_policy(mode: str | None, trusted_key: Path | None) -> SignaturePolicy | None:
    policy = SignaturePolicy.from_options(mode, trusted_key)
    return None if policy.mode == "off" else policy
