"""Triton's ``GRPCInferenceService`` over a :class:`DataPlane`: each RPC converts its message,
calls the data plane and converts the answer or the error (Triton's status mapping)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from servekit.errors import InvalidArgumentError, ServekitError, UnimplementedError
from servekit.serving.access import ApiGroup, RestrictedApis, grpc_api_group, header_lookup
from servekit.serving.dataplane import DataPlane
from servekit.serving.grpc import convert
from servekit.serving.grpc.status import INTERNAL_MESSAGE, grpc_status
from servekit.serving.triton_proto import service_pb2 as pb

log = logging.getLogger("servekit.serving")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]

#: Ends a stream's response queue (put by the stream itself or by the drain).
_END, _DRAIN = object(), object()
SHUTTING_DOWN = "the server is shutting down"


def _unary(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map servekit's errors to gRPC statuses; an unexpected error is INTERNAL with a generic
    message and its details in the server log."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            self.authorize(method.__name__, context)
            with self.plane.admit(grpc_api_group(method.__name__)):
                return await method(self, request, context)
        except ServekitError as exc:
            await context.abort(grpc_status(exc), str(exc))
        except Exception:
            log.exception("gRPC %s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def _unimplemented(rpc: str) -> Handler[Any, Any]:
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise UnimplementedError(f"servekit does not implement {rpc}")

    handler.__name__ = rpc
    return _unary(handler)


class InferenceService:
    """Every RPC of ``inference.GRPCInferenceService`` (the ones servekit does not implement
    answer UNIMPLEMENTED)."""

    def __init__(self, plane: DataPlane, restricted: RestrictedApis | None = None) -> None:
        self.plane = plane
        self.restricted = restricted or RestrictedApis()
        self._streams: set[asyncio.Queue[Any]] = set()

    def authorize(self, rpc: str, context: grpc.aio.ServicerContext) -> None:
        """Refuse (ForbiddenError) an RPC of a restricted group called without its metadata
        key and value (``--grpc-restricted-protocol``, checked by the shared access module)."""
        if self.restricted:
            lookup = header_lookup(context.invocation_metadata() or ())
            self.restricted.check(grpc_api_group(rpc), lookup)

    def begin_drain(self) -> None:
        """Ask every open stream to finish its in-flight requests and end with UNAVAILABLE."""
        for queue in self._streams:
            queue.put_nowait(_DRAIN)

    # -- health and metadata ----------------------------------------------------------------

    @_unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.plane.live())

    @_unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @_unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:
        return pb.ModelReadyResponse(
            ready=self.plane.model_ready(request.name, request.version or None)
        )

    @_unary
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    @_unary
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> Any:
        return convert.metadata_message(
            self.plane.model_metadata(request.name, request.version or None)
        )

    @_unary
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> Any:
        return convert.config_message(
            self.plane.model_config(request.name, request.version or None)
        )

    @_unary
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> Any:
        return convert.statistics_message(
            self.plane.statistics(request.name or None, request.version or None)
        )

    # -- repository -------------------------------------------------------------------------

    @_unary
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> Any:
        _one_repository(request.repository_name)
        return convert.index_message(self.plane.repository_index(request.ready))

    @_unary
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        _one_repository(request.repository_name)
        params = convert.parameters_dict(request.parameters)
        await self.plane.load_with_parameters(request.model_name, params)
        return pb.RepositoryModelLoadResponse()

    @_unary
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        _one_repository(request.repository_name)
        await self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference --------------------------------------------------------------------------

    @_unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:
        return await self._infer(request)

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        return await self.plane.infer_message(
            request.model_name,
            request.model_version or None,
            lambda _model: convert.decode_infer_request(request, self.plane.shared_memory),
            convert.encode_infer_response,
        )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's stream: requests run concurrently and each answers with a response or an
        ``error_message`` (a bad request fails alone; the stream goes on). At a drain, the
        requests already read finish and the stream ends with UNAVAILABLE."""
        try:
            self.authorize("ModelStreamInfer", context)
        except ServekitError as exc:
            await context.abort(grpc_status(exc), str(exc))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()
        self._streams.add(queue)
        reader = asyncio.create_task(self._read_stream(request_iterator, queue, running))
        input_done = False
        try:
            while not (input_done and queue.empty() and all(t.done() for t in running)):
                item = await queue.get()
                if item is _END:
                    input_done = True
                    if running:  # their responses land in the queue, read on the next turns
                        await asyncio.wait(set(running))
                    continue
                if item is _DRAIN:
                    reader.cancel()
                    if running:
                        await asyncio.wait(set(running))
                    while not queue.empty():
                        pending = queue.get_nowait()
                        if isinstance(pending, pb.ModelStreamInferResponse):
                            yield pending
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                yield item
        finally:
            self._streams.discard(queue)
            reader.cancel()
            for task in running:
                task.cancel()

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        queue: asyncio.Queue[Any],
        running: set[asyncio.Task[None]],
    ) -> None:
        async for request in request_iterator:
            task = asyncio.create_task(self._stream_one(request, queue))
            running.add(task)
            task.add_done_callback(running.discard)
        queue.put_nowait(_END)

    async def _stream_one(self, request: pb.ModelInferRequest, queue: asyncio.Queue[Any]) -> None:
        try:
            with self.plane.admit(ApiGroup.INFERENCE):
                response = await self._infer(request)
            queue.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
        except ServekitError as exc:
            queue.put_nowait(_stream_error(request, str(exc)))
        except Exception:
            log.exception("gRPC ModelStreamInfer request failed")
            queue.put_nowait(_stream_error(request, INTERNAL_MESSAGE))

    # -- system shared memory -----------------------------------------------------------------

    @_unary
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        self.plane.shm_register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_unary
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        return convert.shm_status_message(self.plane.shm_status(request.name or None))

    @_unary
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.plane.shm_unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    # -- not implemented --------------------------------------------------------------------

    CudaSharedMemoryRegister = _unimplemented("CudaSharedMemoryRegister")
    CudaSharedMemoryStatus = _unimplemented("CudaSharedMemoryStatus")
    CudaSharedMemoryUnregister = _unimplemented("CudaSharedMemoryUnregister")
    TraceSetting = _unimplemented("TraceSetting")
    LogSettings = _unimplemented("LogSettings")


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    # Triton echoes the request's model and id so the client can tell which request failed.
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


def _one_repository(name: str) -> None:
    if name:
        raise InvalidArgumentError(
            f"servekit serves one repository: repository_name must be empty, not '{name}'"
        )
