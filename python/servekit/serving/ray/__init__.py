"""servekit on Ray Serve (extra ``ray``): replicas of the servekit data plane behind Ray's
proxy, serving the same KServe v2 HTTP routes. See :mod:`servekit.serving.ray.app` for the
Python API and :mod:`servekit.serving.ray.replica` for what each replica does."""

from servekit.serving.ray.app import APP_NAME, app_builder, build_app, run, serve_config
from servekit.serving.ray.spec import ReplicaSpec, ScaleOptions, parse_autoscale

__all__ = [
    "APP_NAME",
    "ReplicaSpec",
    "ScaleOptions",
    "app_builder",
    "build_app",
    "parse_autoscale",
    "run",
    "serve_config",
]
