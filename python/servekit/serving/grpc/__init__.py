"""The gRPC adapter: Triton's KServe v2 ``GRPCInferenceService`` and ``grpc.health.v1.Health``
over the same :class:`~servekit.serving.dataplane.DataPlane` as HTTP, in the same event loop."""

from servekit.serving.grpc.server import GrpcFrontEnd, GrpcOptions

__all__ = ["GrpcFrontEnd", "GrpcOptions"]
