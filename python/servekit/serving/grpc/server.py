"""Running the gRPC front end in the HTTP server's event loop: bind before the models load,
serve the inference and health services, drain on shutdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from servekit.errors import InvalidArgumentError, UnavailableError
from servekit.serving.access import RestrictedApis
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES
from servekit.serving.grpc.service import InferenceService
from servekit.serving.triton_proto.service_grpc import add_servicer_to_server

#: The service names the health service reports on ("" is the whole server).
HEALTH_SERVICES = ("", "inference.GRPCInferenceService")


@dataclass
class GrpcOptions:
    """Where and how the gRPC server listens (Triton's ``--grpc-*`` flags)."""

    host: str = "127.0.0.1"
    port: int = 8001
    #: The largest request message accepted (the HTTP body limit).
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES
    use_ssl: bool = False
    server_cert: Path | None = None
    server_key: Path | None = None
    root_cert: Path | None = None
    #: Require and check client certificates against ``root_cert``.
    use_ssl_mutual: bool = False
    #: ``--grpc-restricted-protocol`` restrictions (metadata keys instead of headers).
    restricted: RestrictedApis = field(default_factory=RestrictedApis)


class GrpcFrontEnd:
    """A ``grpc.aio`` server over ``plane``: :meth:`bind`, then :meth:`start` once the models
    are loaded, :meth:`begin_drain` when shutdown begins and :meth:`stop` to finish."""

    def __init__(self, plane: DataPlane, options: GrpcOptions) -> None:
        self.plane = plane
        self.options = options
        self.port: int | None = None
        self.service = InferenceService(plane, options.restricted)
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    def bind(self) -> int:
        """Create the server and bind its port (0: any free port); return the port.

        Raises UnavailableError when the address cannot be used, InvalidArgumentError for
        TLS options that do not fit together or files that cannot be read. Must run in the
        event loop that will serve.
        """
        opts = self.options
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", opts.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"[{opts.host}]:{opts.port}" if ":" in opts.host else f"{opts.host}:{opts.port}"
        try:
            if opts.use_ssl:
                port = server.add_secure_port(address, _credentials(opts))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise UnavailableError(f"cannot listen for gRPC on {address}: address not available")
        self._server = server
        self.port = port
        return port

    async def start(self) -> None:
        """Start serving and mark the health service SERVING; print the address."""
        assert self._server is not None, "bind() first"
        await self._server.start()
        for name in HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        scheme = "grpcs" if self.options.use_ssl else "grpc"
        print(f"servekit: serving gRPC on {scheme}://{self.options.host}:{self.port}", flush=True)

    async def begin_drain(self) -> None:
        """Report NOT_SERVING and ask open streams to finish and end with UNAVAILABLE."""
        for name in HEALTH_SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.begin_drain()

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give in-flight ones ``grace_s`` seconds, then cancel the rest."""
        if self._server is not None:
            await self._server.stop(grace_s)


def _credentials(opts: GrpcOptions) -> grpc.ServerCredentials:
    if opts.server_cert is None or opts.server_key is None:
        raise InvalidArgumentError("--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key")
    if opts.use_ssl_mutual and opts.root_cert is None:
        raise InvalidArgumentError("--grpc-use-ssl-mutual needs --grpc-root-cert")
    try:
        cert = opts.server_cert.read_bytes()
        key = opts.server_key.read_bytes()
        root = opts.root_cert.read_bytes() if opts.root_cert is not None else None
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read a gRPC TLS file: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=root, require_client_auth=opts.use_ssl_mutual
    )
