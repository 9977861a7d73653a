"""Serving: a KServe v2 / Triton protocol server over a Triton-layout model repository.

Layers (MLServer-style): ``codecs`` (wire format <-> numpy), ``config`` (Triton config.pbtxt),
``runners`` (ONNX Runtime / TorchScript), ``model`` (validation, scheduling, statistics),
``repository`` (loading by version policy), ``dataplane`` (the protocol, independent of HTTP),
``rest`` (the FastAPI adapter) and ``metrics`` (Prometheus text).
"""

from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES, http_status
from servekit.serving.model import ServedModel
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.runners import OnnxRunner, TorchScriptRunner

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DataPlane",
    "ModelRepository",
    "OnnxRunner",
    "RunnerOptions",
    "ServedModel",
    "TorchScriptRunner",
    "http_status",
]
