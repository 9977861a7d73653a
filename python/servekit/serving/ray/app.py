"""The Ray Serve application: building it for ``serve.run``, for a Serve config file, and
running it from ``servekit serve --ray``.

Python::

    from ray import serve
    from servekit.serving.ray import ReplicaSpec, ScaleOptions, build_app

    serve.run(build_app(ReplicaSpec(model_repo="model_repo"), ScaleOptions(replicas=2)))

A Serve config file names :func:`app_builder` as its ``import_path`` with the two specs as
``args`` (:func:`serve_config` writes one); ``serve deploy config.yaml`` deploys it on a cluster
where servekit is installed on every node.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import yaml
from ray import serve
from ray.serve import Application

from servekit.errors import InvalidArgumentError, UnavailableError
from servekit.serving.ray.directory import ReplicaDirectory
from servekit.serving.ray.ingress import DEFAULT_INGRESS, ingress_environment
from servekit.serving.ray.replica import ReplicaDeployment
from servekit.serving.ray.spec import ReplicaSpec, ScaleOptions

#: The application name ``servekit serve --ray`` deploys under.
APP_NAME = "servekit"
IMPORT_PATH = "servekit.serving.ray:app_builder"
#: Seconds a local Ray node gets to start (``RAY_raylet_start_wait_time_s`` when unset).
RAYLET_START_WAIT_S = 120


def build_app(replica: ReplicaSpec, scale: ScaleOptions | None = None) -> Application:
    """The application: the replica deployment with ``scale``'s options, bound to the replica
    directory. Raises InvalidArgumentError for bad settings."""
    replica.validate()
    scale = scale or ScaleOptions()
    deployment = ReplicaDeployment.options(
        **scale.deployment_options(),
        graceful_shutdown_timeout_s=replica.drain_timeout_s,
        # servekit's statistics and metrics already count every request: Ray's access log
        # would write a second record per request on the hot path.
        logging_config={"enable_access_log": False},
    )
    return deployment.bind(replica.to_dict(), ReplicaDirectory.bind())


def app_builder(args: dict[str, Any]) -> Application:
    """The application a Serve config's ``args`` describe: ``{"replica": ReplicaSpec fields,
    "scale": ScaleOptions fields}``. Raises InvalidArgumentError for unknown or bad fields."""
    unknown = sorted(set(args) - {"replica", "scale"})
    if unknown:
        raise InvalidArgumentError(f"unknown args {unknown}: expected 'replica' and 'scale'")
    replica = ReplicaSpec.from_dict(args.get("replica", {}))
    scale = ScaleOptions.from_dict(args["scale"]) if "scale" in args else ScaleOptions()
    return build_app(replica, scale)


def serve_config(replica: ReplicaSpec, scale: ScaleOptions, host: str, port: int) -> str:
    """A Ray Serve config file (YAML) deploying the application with ``serve deploy``: the
    proxy on ``host:port``, the application at route ``/``. Raises InvalidArgumentError for
    bad settings."""
    replica.validate()
    scale.validate()
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"replica": replica.to_dict(), "scale": scale.to_dict()},
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def run(
    replica: ReplicaSpec,
    scale: ScaleOptions,
    *,
    host: str,
    port: int,
    address: str | None = None,
    proxy: str | None = None,
) -> None:
    """Serve the application until SIGTERM/SIGINT, like ``serve run``: connect to the Ray
    cluster at ``address`` (None: start a local one with this machine's CPUs and ``proxy`` as
    its HTTP ingress, :mod:`servekit.serving.ray.ingress`), put the proxy on ``host:port``,
    deploy, print ``servekit: serving on http://HOST:PORT``, and on the signal delete the
    application (and stop the local cluster). Raises InvalidArgumentError for bad settings and
    UnavailableError for a missing ingress (before anything starts)."""
    import ray

    if port == 0:
        raise InvalidArgumentError("--ray needs a fixed --port: Ray's proxy cannot pick one")
    local = address is None
    if not local and proxy is not None:
        raise InvalidArgumentError(
            "--ray-proxy applies to a local cluster: a cluster at --ray-address uses the proxy "
            "its `ray start` environment chose (RAY_SERVE_ENABLE_HA_PROXY=1 for HAProxy)"
        )
    application = build_app(replica, scale)
    stop = threading.Event()
    if local:
        os.environ.update(ingress_environment(proxy or DEFAULT_INGRESS))
        # Ray gives its node 30 s to start, which a busy machine can exceed.
        os.environ.setdefault("RAY_raylet_start_wait_time_s", str(RAYLET_START_WAIT_S))
    try:
        if local:
            ray.init(
                address="local",  # a new cluster, never one found on this machine
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
            )
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # Ray raises a bare Exception when its node does not start
        where = "a local Ray cluster" if local else f"the Ray cluster at {address}"
        raise UnavailableError(f"cannot start or reach {where}: {exc}") from None
    # After ray.init, which installs a SIGTERM handler that aborts the process.
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application, name=APP_NAME, route_prefix="/")
        print(f"servekit: serving on http://{host}:{port}", flush=True)
        stop.wait()
    finally:
        try:
            serve.delete(APP_NAME)
            if local:
                serve.shutdown()
        finally:
            ray.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print("servekit: stopped", file=sys.stderr, flush=True)
