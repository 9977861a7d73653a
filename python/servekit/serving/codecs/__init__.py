"""Wire formats <-> numpy: KServe v2 JSON and Triton's binary tensor extension."""

from servekit.serving.codecs.v2 import (
    DEFAULT_MAX_JSON_DEPTH,
    InferRequest,
    InferResponse,
    RequestedOutput,
    assemble_request,
    decode_raw_request,
    decode_request,
    encode_response,
)

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "InferRequest",
    "InferResponse",
    "RequestedOutput",
    "assemble_request",
    "decode_raw_request",
    "decode_request",
    "encode_response",
]
