"""The HTTP adapter: KServe v2 routes and Triton's extensions over a :class:`DataPlane`.

The infer and metrics routes are plain Starlette routes (raw body in, bytes out): FastAPI's
request validation and response serialisation stay off the hot path. Every error is a JSON
``{"error": "..."}`` with Triton's status mapping.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.routing import Route

from servekit.errors import InvalidArgumentError, ServekitError
from servekit.serving import metrics
from servekit.serving.dataplane import DataPlane
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES, http_status

log = logging.getLogger("servekit.serving")

_JSON = "application/json"
_BINARY = "application/octet-stream"
_HEADER_LENGTH = "inference-header-content-length"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=_JSON)


def error_response(exc: BaseException) -> Response:
    """``{"error": message}`` with the status of the error (500 for an unexpected one)."""
    if isinstance(exc, ServekitError):
        return _json({"error": str(exc)}, http_status(exc))
    log.exception("internal error", exc_info=exc)
    return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; InvalidArgumentError when it is larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidArgumentError(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise InvalidArgumentError(
                f"request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidArgumentError(
                f"request body of more than {size} bytes exceeds the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _header_length(request: Request) -> int | None:
    value = request.headers.get(_HEADER_LENGTH)
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidArgumentError(f"Inference-Header-Content-Length {value!r} is not an integer")
    return int(value)


def create_app(plane: DataPlane, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """Build the FastAPI application serving ``plane``."""
    app = FastAPI(title="servekit", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ServekitError)
    async def on_servekit_error(_request: Request, exc: ServekitError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def on_error(_request: Request, exc: Exception) -> Response:
        return error_response(exc)

    async def infer(request: Request) -> Response:
        params = request.path_params
        try:
            body = await read_body(request, max_body_bytes)
            content, header_length = await plane.infer_body(
                params["model"], params.get("version"), body, _header_length(request)
            )
        except Exception as exc:  # every failure becomes a JSON error response
            return error_response(exc)
        if header_length is None:
            return Response(content, media_type=_JSON)
        return Response(
            content,
            media_type=_BINARY,
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    async def prometheus(_request: Request) -> Response:
        models = [m for e in plane.repository.entries() for m in e.versions.values()]
        return Response(metrics.render(models), media_type=metrics.CONTENT_TYPE)

    app.router.routes.extend(
        [
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
    )

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

    @app.get("/v2/models/{model}/config")
    async def model_config(model: str) -> Response:
        return _json(plane.model_config(model))

    @app.get("/v2/models/{model}/versions/{version}/config")
    async def version_config(model: str, version: str) -> Response:
        return _json(plane.model_config(model, version))

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> Response:
        options = await _json_body(request, max_body_bytes)
        rows = plane.repository_index()
        if options.get("ready") is True:
            rows = [r for r in rows if r["state"] == "READY"]
        return _json(rows)

    @app.post("/v2/repository/models/{model}/load")
    async def load(model: str, request: Request) -> Response:
        options = await _json_body(request, max_body_bytes)
        parameters = options.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidArgumentError("load 'parameters' must be a JSON object")
        if any(key.startswith("file:") for key in parameters):
            raise InvalidArgumentError("loading a model from file overrides is not supported")
        config = parameters.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgumentError("load parameter 'config' must be a JSON string")
        await plane.load(model, config)
        return Response(status_code=200)

    @app.post("/v2/repository/models/{model}/unload")
    async def unload(model: str, request: Request) -> Response:
        await _json_body(request, max_body_bytes)
        await plane.unload(model)
        return Response(status_code=200)

    return app


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    return value
