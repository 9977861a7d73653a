"""Triton's ``grpc_service.proto`` (package ``inference``): the KServe v2 request and response
messages (``ModelInferRequest``...) as tritonclient.grpc.service_pb2 names them."""

from servekit.serving.triton_proto import model_config_pb2  # noqa: F401 (its file goes first)
from servekit.serving.triton_proto._build import populate
from servekit.serving.triton_proto._descriptors import GRPC_SERVICE_PROTO

DESCRIPTOR = populate(GRPC_SERVICE_PROTO, globals())
