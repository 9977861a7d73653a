"""HTTP routes of shadows and canaries: the read-out and the management API.

- ``GET /v2/models/{model}/candidates``: the live figures of the model's candidates;
- ``POST /v2/repository/models/{model}/candidates`` with ``{"ref": "NAME@ALIAS", "role":
  "shadow" | "canary", "fraction": F}`` starts (or replaces) a candidate and answers its
  read-out; a shadow's fraction defaults to 1.0;
- ``POST /v2/repository/models/{model}/candidates/remove`` with ``{"ref": ..., "role": ...}``
  (role optional: every role of the reference) stops it.

The management routes live under ``/v2/repository/``, next to load and unload, so they belong
to Triton's ``model-repository`` API group and are restricted with it. Decisions are the data
plane's; this module converts JSON and status codes only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from servekit.errors import InvalidArgumentError
from servekit.serving.candidates import ROLES, SHADOW, CandidateSpec, check_fraction
from servekit.serving.dataplane import DataPlane

BodyReader = Callable[[Request], Awaitable[dict[str, Any]]]


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _text(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def spec_from_body(model: str, body: dict[str, Any]) -> CandidateSpec:
    """The candidate a management request describes. Raises InvalidArgumentError for a missing
    or bad field, an unknown field, or a reference to another model."""
    unknown = sorted(set(body) - {"ref", "role", "fraction"})
    if unknown:
        raise InvalidArgumentError(f"unknown field(s) {unknown}: expected ref, role, fraction")
    ref = _text(body, "ref", required=True)
    role = _text(body, "role", required=True)
    assert ref is not None and role is not None
    if role not in ROLES:
        raise InvalidArgumentError(f"'role' must be one of {list(ROLES)}, got {role!r}")
    fraction = body.get("fraction")
    if fraction is None:
        if role != SHADOW:
            raise InvalidArgumentError("a canary needs 'fraction' (0 < f <= 1)")
        fraction = 1.0
    spec = CandidateSpec(ref, role, check_fraction(fraction, f"candidate {ref}"))
    if spec.model_name != model:
        raise InvalidArgumentError(f"candidate {ref} is not a version of model '{model}'")
    if "@" not in ref and ":" not in ref:
        raise InvalidArgumentError(f"'ref' {ref!r}: expected NAME@ALIAS or NAME:VERSION")
    return spec


def add_candidate_routes(app: FastAPI, plane: DataPlane, read_json: BodyReader) -> None:
    """Add the read-out and management routes to ``app`` (``read_json`` reads a request's
    JSON object body within the server's body limit)."""

    @app.get("/v2/models/{model}/candidates")
    async def candidates(model: str) -> Response:
        return _json(plane.candidates_report(model))

    @app.post("/v2/repository/models/{model}/candidates")
    async def add(model: str, request: Request) -> Response:
        spec = spec_from_body(model, await read_json(request))
        return _json(await plane.add_candidate(spec))

    @app.post("/v2/repository/models/{model}/candidates/remove")
    async def remove(model: str, request: Request) -> Response:
        body = await read_json(request)
        unknown = sorted(set(body) - {"ref", "role"})
        if unknown:
            raise InvalidArgumentError(f"unknown field(s) {unknown}: expected ref, role")
        ref = _text(body, "ref", required=True)
        role = _text(body, "role", required=False)
        if role is not None and role not in ROLES:
            raise InvalidArgumentError(f"'role' must be one of {list(ROLES)}, got {role!r}")
        assert ref is not None
        await plane.remove_candidate(model, ref, role)
        return Response(status_code=200)
