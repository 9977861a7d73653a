"""The HTTP adapter: KServe v2 routes and Triton's extensions over a :class:`DataPlane`.

The infer route is a plain ASGI handler in front of the FastAPI application (raw body in,
bytes out): FastAPI's routing, request validation and response serialisation stay off the hot
path (measured: about a third of the server's time per request on the tiny model). The other
routes are ordinary FastAPI routes. Every error is a JSON ``{"error": "..."}`` with Triton's
status mapping.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import REGISTRY
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from servekit.errors import InvalidArgumentError, ServekitError, UnimplementedError
from servekit.serving import metrics
from servekit.serving.access import header_lookup, http_api_group
from servekit.serving.candidates import STICKY_HEADER
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES, http_status, internal_error_message
from servekit.serving.rest import encoding
from servekit.serving.rest.candidates import add_candidate_routes
from servekit.serving.rest.openapi import openapi_document
from servekit.ui import UiSources, mount_ui

if TYPE_CHECKING:
    from servekit.registry import Registry

log = logging.getLogger("servekit.serving")

_JSON = "application/json"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=_JSON)


def error_response(exc: BaseException) -> Response:
    """``{"error": message}`` with the status of the error (500 for an unexpected one)."""
    if isinstance(exc, ServekitError):
        return _json({"error": str(exc)}, http_status(exc))
    return _json({"error": internal_error_message(exc)}, 500)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed per its Content-Encoding; InvalidArgumentError when it
    is larger than ``limit`` bytes (before or after decompression) or does not decompress."""
    declared = request.headers.get("content-length")
    body = await _receive_body(
        request.receive, None if declared is None else declared.encode(), limit
    )
    coding = request.headers.get("content-encoding")
    return encoding.decode_body(body, None if coding is None else coding.encode(), limit)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_STICKY_HEADER = STICKY_HEADER.encode()
_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class InferFastPath:
    """ASGI application: admission first (restricted APIs, the in-flight limit: the data
    plane decides both, for every route), then ``POST .../infer`` handled directly and
    everything else by ``app``."""

    def __init__(self, app: FastAPI, plane: DataPlane, max_body_bytes: int) -> None:
        self.app = app
        self.plane = plane
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        group = http_api_group(scope["method"], scope["path"])
        with contextlib.ExitStack() as admitted:
            try:
                self.plane.authorize(group, header_lookup(scope["headers"]))
                admitted.enter_context(self.plane.admit(group))
            except ServekitError as exc:
                response = error_response(exc)
                await _send(send, response.status_code, bytes(response.body), [_JSON_TYPE])
                return
            if scope["method"] == "POST":
                match = _INFER_PATH.match(scope["path"])
                if match is not None:
                    await self._infer(match[1], match[2], scope, receive, send)
                    return
            await self.app(scope, receive, send)

    async def _infer(
        self, model: str, version: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        declared = header_length = coding = accept = sticky = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"inference-header-content-length":
                header_length = value
            elif key == b"content-encoding":
                coding = value
            elif key == b"accept-encoding":
                accept = value
            elif key == _STICKY_HEADER:
                sticky = value.decode(errors="replace")
        headers: list[tuple[bytes, bytes]]
        try:
            body = await _receive_body(receive, declared, self.max_body_bytes)
            body = encoding.decode_body(body, coding, self.max_body_bytes)
            if header_length is not None and not header_length.isdigit():
                raise InvalidArgumentError(
                    f"Inference-Header-Content-Length {header_length.decode(errors='replace')!r}"
                    " is not an integer"
                )
            content, json_length = await self.plane.infer_body(
                model,
                version,
                body,
                None if header_length is None else int(header_length),
                sticky_key=sticky,
            )
            status = 200
            if json_length is None:
                headers = [_JSON_TYPE]
            else:
                headers = [
                    (b"content-type", b"application/octet-stream"),
                    (b"inference-header-content-length", str(json_length).encode()),
                ]
            reply = encoding.response_coding(accept)
            if reply is not None and len(content) >= encoding.MIN_COMPRESS_BYTES:
                content = encoding.encode_body(content, reply)
                headers.append((b"content-encoding", reply.encode()))
        except Exception as exc:  # every failure becomes a JSON error response
            response = error_response(exc)
            status, content = response.status_code, bytes(response.body)
            headers = [_JSON_TYPE]
        await _send(send, status, content, headers)


_JSON_TYPE = (b"content-type", b"application/json")


async def _send(
    send: Send, status: int, content: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Send a whole response (``headers`` gains its content-length)."""
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _receive_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """Read an ASGI request body, refusing more than ``limit`` bytes (declared or received)."""
    if declared is not None:
        if not declared.isdigit():
            raise InvalidArgumentError(
                f"invalid Content-Length {declared.decode(errors='replace')!r}"
            )
        if int(declared) > limit:
            raise encoding.too_large(int(declared), limit)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidArgumentError("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise encoding.too_large(f"more than {size - 1}", limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every ServekitError and unexpected exception of ``app``'s routes with the KServe
    ``{"error": ...}`` body (a generic 500 with a request id for the unexpected)."""

    @app.exception_handler(ServekitError)
    async def on_servekit_error(_request: Request, exc: ServekitError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def on_error(_request: Request, exc: Exception) -> Response:
        return error_response(exc)


def create_app(
    plane: DataPlane,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    registry: Registry | None = None,
) -> InferFastPath:
    """Build the ASGI application serving ``plane``: the infer fast path in front of a
    FastAPI application with every other route, the dashboard (reading ``registry`` too when
    given) among them."""
    app = FastAPI(title="servekit", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    # Routing errors (unknown route 404, wrong method 405) and FastAPI's parameter validation
    # keep the KServe error body instead of FastAPI's {"detail": ...}, as Triton answers.
    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        return _json({"error": f"invalid request: {exc.errors()}"}, 400)

    registries = [REGISTRY]
    if plane.repository.telemetry is not None:
        registries.append(plane.repository.telemetry.registry)

    async def prometheus(_request: Request) -> Response:
        return Response(plane.metrics_text(registries), media_type=metrics.CONTENT_TYPE)

    app.router.routes.append(Route("/metrics", prometheus, methods=["GET"]))

    @app.get("/v2/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return _json(openapi_document(app, [e.name for e in plane.repository.entries()]))

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200 if plane.live() else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if plane.ready() else 503)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json(plane.server_metadata())

    # Statistics first: "/v2/models/stats" must not match "/v2/models/{model}".
    @app.get("/v2/models/stats")
    async def all_stats() -> Response:
        return _json(plane.statistics())

    @app.get("/v2/models/{model}/stats")
    async def model_stats(model: str) -> Response:
        return _json(plane.statistics(model))

    @app.get("/v2/models/{model}/versions/{version}/stats")
    async def version_stats(model: str, version: str) -> Response:
        return _json(plane.statistics(model, version))

    @app.get("/v2/models/{model}")
    async def model_metadata(model: str) -> Response:
        return _json(plane.model_metadata(model))

    @app.get("/v2/models/{model}/versions/{version}")
    async def version_metadata(model: str, version: str) -> Response:
        return _json(plane.model_metadata(model, version))

    @app.get("/v2/models/{model}/ready")
    async def model_ready(model: str) -> Response:
        return Response(status_code=200 if plane.model_ready(model) else 503)

    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def version_ready(model: str, version: str) -> Response:
        return Response(status_code=200 if plane.model_ready(model, version) else 503)

    @app.get("/v2/models/{model}/drift")
    async def model_drift(model: str) -> Response:
        return _json(plane.drift(model))

    @app.get("/v2/models/{model}/versions/{version}/drift")
    async def version_drift(model: str, version: str) -> Response:
        return _json(plane.drift(model, version))

    @app.get("/v2/models/{model}/config")
    async def model_config(model: str) -> Response:
        return _json(plane.model_config(model))

    @app.get("/v2/models/{model}/versions/{version}/config")
    async def version_config(model: str, version: str) -> Response:
        return _json(plane.model_config(model, version))

    @app.get("/v2/systemsharedmemory/status")
    async def shm_status() -> Response:
        return _json(plane.shm_status())

    @app.get("/v2/systemsharedmemory/region/{name}/status")
    async def shm_region_status(name: str) -> Response:
        return _json(plane.shm_status(name))

    @app.post("/v2/systemsharedmemory/region/{name}/register")
    async def shm_register(name: str, request: Request) -> Response:
        options = await _json_body(request, max_body_bytes)
        plane.shm_register(
            name, options.get("key"), options.get("offset", 0), options.get("byte_size")
        )
        return Response(status_code=200)

    @app.post("/v2/systemsharedmemory/unregister")
    async def shm_unregister_all(request: Request) -> Response:
        await _json_body(request, max_body_bytes)
        plane.shm_unregister()
        return Response(status_code=200)

    @app.post("/v2/systemsharedmemory/region/{name}/unregister")
    async def shm_unregister(name: str, request: Request) -> Response:
        await _json_body(request, max_body_bytes)
        plane.shm_unregister(name)
        return Response(status_code=200)

    @app.api_route("/v2/cudasharedmemory/{rest:path}", methods=["GET", "POST"])
    async def cuda_shm(rest: str) -> Response:
        raise UnimplementedError("servekit does not implement CUDA shared memory")

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> Response:
        options = await _json_body(request, max_body_bytes)
        return _json(plane.repository_index(options.get("ready", False)))

    @app.post("/v2/repository/models/{model}/load")
    async def load(model: str, request: Request) -> Response:
        options = await _json_body(request, max_body_bytes)
        await plane.load_with_parameters(model, options.get("parameters"))
        return Response(status_code=200)

    @app.post("/v2/repository/models/{model}/unload")
    async def unload(model: str, request: Request) -> Response:
        await _json_body(request, max_body_bytes)
        await plane.unload(model)
        return Response(status_code=200)

    add_candidate_routes(app, plane, lambda request: _json_body(request, max_body_bytes))
    mount_ui(app, UiSources(plane, registry))
    return InferFastPath(app, plane, max_body_bytes)


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"failed to parse the request JSON buffer: {exc.msg} at {exc.pos}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    return value
