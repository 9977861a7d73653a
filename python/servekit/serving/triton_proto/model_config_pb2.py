"""Triton's ``model_config.proto`` (package ``inference``): ``ModelConfig``, ``DataType``
(``TYPE_FP32``...), ``ModelInstanceGroup``... as tritonclient.grpc.model_config_pb2 names them."""

from servekit.serving.triton_proto._build import populate
from servekit.serving.triton_proto._descriptors import MODEL_CONFIG_PROTO

DESCRIPTOR = populate(MODEL_CONFIG_PROTO, globals())
