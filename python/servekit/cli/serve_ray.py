"""``servekit serve --ray``: the same flags, served by replicas on Ray Serve
(:mod:`servekit.serving.ray`), or written out as a Ray Serve config (``--print-config``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from servekit.errors import InvalidArgumentError
from servekit.registry.root import resolve_root


@dataclass
class RayFlags:
    """The ``--ray`` block of ``servekit serve``."""

    ray: bool
    address: str | None
    proxy: str | None
    replicas: int | None
    autoscale: str | None
    target_ongoing_requests: float | None
    max_ongoing_requests: int | None
    replica_cpus: float | None
    print_config: bool

    def check(self) -> None:
        """Raises click.UsageError for Ray flags given without ``--ray`` or that conflict."""
        given = [
            name
            for name, value in (
                ("--ray-address", self.address),
                ("--ray-proxy", self.proxy),
                ("--replicas", self.replicas),
                ("--autoscale", self.autoscale),
                ("--target-ongoing-requests", self.target_ongoing_requests),
                ("--max-ongoing-requests", self.max_ongoing_requests),
                ("--replica-cpus", self.replica_cpus),
                ("--print-config", self.print_config or None),
            )
            if value is not None
        ]
        if given and not self.ray:
            verb = "needs" if len(given) == 1 else "need"
            raise click.UsageError(f"{', '.join(given)} {verb} --ray")
        if self.proxy is not None and (self.address is not None or self.print_config):
            raise click.UsageError(
                "--ray-proxy applies to the local cluster --ray starts: a cluster at "
                "--ray-address or one a --print-config file is deployed on uses the proxy its "
                "`ray start` environment chose (RAY_SERVE_ENABLE_HA_PROXY=1 for HAProxy)"
            )
        if self.replicas is not None and self.autoscale is not None:
            raise click.UsageError("give --replicas N or --autoscale MIN:MAX, not both")
        if self.target_ongoing_requests is not None and self.autoscale is None:
            raise click.UsageError("--target-ongoing-requests needs --autoscale MIN:MAX")


def _absolute(path: Path | str | None) -> str | None:
    # Replicas run in Ray worker processes with another working directory.
    return None if path is None else os.path.abspath(path)


def _profile_flag(value: str) -> str:
    model, sep, file = value.partition("=")
    if os.path.exists(value) or not sep:
        return os.path.abspath(value)
    return f"{model}={os.path.abspath(file)}"


def serve_on_ray(
    flags: RayFlags,
    *,
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
    telemetry: dict[str, object] | None,
    drain_timeout: float,
) -> None:
    """Serve on Ray until SIGTERM/SIGINT, or print the Serve config with ``--print-config``.
    Raises InvalidArgumentError for bad settings."""
    from servekit.serving.ray import ReplicaSpec, ScaleOptions, parse_autoscale, run, serve_config
    from servekit.serving.ray.spec import (
        DEFAULT_MAX_ONGOING_REQUESTS,
        DEFAULT_TARGET_ONGOING_REQUESTS,
    )
    from servekit.serving.telemetry import TelemetryOptions, parse_profile_flags

    if telemetry is not None:
        # Bad telemetry settings or profiles fail here, before Ray starts.
        options = TelemetryOptions(**telemetry)  # type: ignore[arg-type]
        options.validate()
        parse_profile_flags(options.reference_profiles)
        profiles = [_profile_flag(p) for p in options.reference_profiles]
        telemetry = {**telemetry, "reference_profiles": profiles}
    spec = ReplicaSpec(
        model_repo=_absolute(model_repo),
        registry=str(resolve_root(registry)) if models else None,
        models=list(models),
        poll_interval=poll_interval,
        max_batch_size=max_batch_size,
        device=device,
        threads=threads,
        max_body_bytes=max_body_bytes,
        max_json_depth=max_json_depth,
        telemetry=telemetry,
        drain_timeout_s=drain_timeout,
    )
    autoscale = parse_autoscale(flags.autoscale) if flags.autoscale is not None else None
    scale = ScaleOptions(
        replicas=None if autoscale is not None else (flags.replicas or 1),
        autoscale=autoscale,
        target_ongoing_requests=flags.target_ongoing_requests or DEFAULT_TARGET_ONGOING_REQUESTS,
        max_ongoing_requests=flags.max_ongoing_requests or DEFAULT_MAX_ONGOING_REQUESTS,
        replica_cpus=flags.replica_cpus if flags.replica_cpus is not None else 1.0,
    )
    if flags.print_config:
        click.echo(serve_config(spec, scale, host, port), nl=False)
        return
    for flag, path in (("--model-repo", spec.model_repo), ("--registry", spec.registry)):
        if path is not None and not os.path.isdir(path):
            # Checked here: a replica that cannot start is retried by Ray over and over.
            raise InvalidArgumentError(f"{flag} {path}: no such directory")
    run(spec, scale, host=host, port=port, address=flags.address, proxy=flags.proxy)
