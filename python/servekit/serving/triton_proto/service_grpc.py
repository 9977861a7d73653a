"""Registering a ``GRPCInferenceService`` servicer with a gRPC server, from the service's
descriptor (what protoc's generated ``service_pb2_grpc`` spells out method by method)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory

from servekit.serving.triton_proto import service_pb2

#: The service of ``grpc_service.proto``.
SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]

#: (client streaming, server streaming) -> the gRPC handler factory of that RPC kind.
_HANDLERS: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """One handler per RPC of the service, calling the servicer's method of the RPC's name.

    Raises AttributeError when the servicer lacks one (it must answer every RPC, if only with
    UNIMPLEMENTED)."""
    handlers = {}
    for method in SERVICE.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return handlers


def add_servicer_to_server(servicer: Any, server: grpc.Server | grpc.aio.Server) -> None:
    """Serve ``inference.GRPCInferenceService`` with ``servicer`` on ``server``, as
    ``add_GRPCInferenceServiceServicer_to_server`` does. Raises what :func:`method_handlers`
    raises."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
