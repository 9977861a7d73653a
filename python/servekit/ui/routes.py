"""The dashboard's routes: the pages under ``/ui`` and their JSON under ``/v2/ui/...``.

JSON routes (all ``GET``; errors are ``{"error": ...}`` with servekit's status mapping):

- ``/v2/ui/info``: what this server can show (a registry, served models, restricted groups);
- ``/v2/ui/models``: registered models (versions, aliases and their history, lineage) and the
  served models with their configs;
- ``/v2/ui/compare``: the names of the registered models;
- ``/v2/ui/compare/{model}``: the model's lineages with every variant's bench figures, the
  Pareto chart data and the last promotion's gates;
- ``/v2/ui/live``: per served version, totals, errors by reason and status, batch sizes,
  latency quantiles and a sampled history;
- ``/v2/ui/drift``: per served version, the drift report with histograms, and the alert log;
- ``/v2/ui/openapi.json``: the OpenAPI document of these routes.

Routes that would re-hash artifacts or read the registry run on worker threads; those reading
the data plane run on the event loop, where the data plane's state changes.

Restricted APIs (``--http-restricted-api``): each route shows the data of Triton API groups
(:data:`ROUTE_GROUPS`) and is refused with the data plane's 403 unless the request carries the
header of every restricted group among them; the page asks for the header's value and sends
it. ``/v2/ui/info`` names, per page, the restricted groups and their header names (never a
value): what the 403 message would say anyway.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from servekit.errors import NotFoundError
from servekit.serving.access import ApiGroup, header_lookup
from servekit.ui.drift_view import drift_view
from servekit.ui.live import LiveSampler
from servekit.ui.registry_view import compare_view, models_view
from servekit.ui.served_view import served_view

if TYPE_CHECKING:
    from servekit.registry import Registry
    from servekit.serving.dataplane import DataPlane

STATIC = Path(__file__).parent / "static"
PAGES = ("models", "compare", "live", "drift")
#: The API groups whose data each JSON route shows: registry and served model metadata (with
#: served configs) on Models, registry metadata on Compare, statistics on Live and Drift (the
#: drift route is a statistic too).
ROUTE_GROUPS: dict[str, tuple[ApiGroup, ...]] = {
    "models": (ApiGroup.METADATA, ApiGroup.MODEL_CONFIG),
    "compare": (ApiGroup.METADATA,),
    "live": (ApiGroup.STATISTICS,),
    "drift": (ApiGroup.STATISTICS,),
}


@dataclass
class UiSources:
    """What the dashboard reads: a data plane (``servekit serve``) and/or a registry."""

    plane: DataPlane | None = None
    registry: Registry | None = None


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def ui_router(sources: UiSources) -> APIRouter:
    """The JSON routes over ``sources``."""
    router = APIRouter(prefix="/v2/ui", tags=["dashboard"])
    sampler = LiveSampler(sources.plane) if sources.plane is not None else None

    def plane() -> DataPlane:
        if sources.plane is None:
            raise NotFoundError(
                "this dashboard serves no models (servekit ui): the Live and Drift pages need "
                "servekit serve"
            )
        return sources.plane

    def authorize(route: str, request: Request) -> None:
        # The data plane decides (ForbiddenError, 403); a dashboard without one restricts none.
        if sources.plane is not None:
            lookup = header_lookup(request.scope["headers"])
            for group in ROUTE_GROUPS[route]:
                sources.plane.authorize(group, lookup)

    def locks() -> dict[str, list[dict[str, str]]]:
        restricted = sources.plane.restricted if sources.plane is not None else None
        out: dict[str, list[dict[str, str]]] = {}
        for route, groups in ROUTE_GROUPS.items():
            found = [(g, restricted.restriction(g)) for g in groups] if restricted else []
            out[route] = [{"group": g.value, "header": r.key} for g, r in found if r]
        return out

    def registry() -> Registry:
        if sources.registry is None:
            raise NotFoundError(
                "this server has no registry: serve registry models (--model NAME@ALIAS) or "
                "run servekit ui --registry DIR"
            )
        return sources.registry

    @router.get("/info")
    async def info() -> Response:
        """Whether a registry is read and models are served, the pages available, and per page
        the restricted API groups it reads with the header each expects (never a value)."""
        has_plane, has_registry = sources.plane is not None, sources.registry is not None
        return _json(
            {
                "registry": has_registry,
                "serving": has_plane,
                "pages": [
                    p
                    for p in PAGES
                    if (p in ("live", "drift") and has_plane)
                    or (p == "compare" and has_registry)
                    or p == "models"
                ],
                "restricted": locks(),
            }
        )

    @router.get("/models")
    async def models(request: Request) -> Response:
        """``registry_root`` and ``registry``: every registered model with versions (digest,
        verification, signature, metrics, tags, aliases), alias history and lineage graph
        (null without a registry);
        ``served``: every served model with its versions' states and its config (null when
        no models are served)."""
        authorize("models", request)
        registered = (
            await asyncio.to_thread(models_view, sources.registry)
            if sources.registry is not None
            else None
        )
        served = served_view(sources.plane) if sources.plane is not None else None
        root = str(sources.registry.root) if sources.registry is not None else None
        return _json({"registry_root": root, "registry": registered, "served": served})

    @router.get("/compare")
    async def compare_index(request: Request) -> Response:
        """``models``: the names of the registered models, for choosing one to compare."""
        authorize("compare", request)
        reg = registry()
        names = await asyncio.to_thread(lambda: [m.name for m in reg.list_models()])
        return _json({"models": names})

    @router.get("/compare/{model}")
    async def compare(model: str, request: Request) -> Response:
        """The model's lineages: every variant's size, load time, per-batch-size latency
        p50/p90/p99 and throughput, quality and agreement, as logged by servekit bench; the
        Pareto chart points; the last promotion with its gates. 404 for an unknown model."""
        authorize("compare", request)
        return _json(await asyncio.to_thread(compare_view, registry(), model))

    @router.get("/live")
    async def live(request: Request) -> Response:
        """Per served version: request, error and batch figures, latency quantiles (ms) and
        the sampled series (one sample per second at most, taken when this route is read)."""
        plane()
        authorize("live", request)
        assert sampler is not None  # created with the plane
        return _json({"models": sampler.view()})

    @router.get("/drift")
    async def drift(request: Request) -> Response:
        """Per served version: the drift report (the drift route's body) or why there is none,
        per feature the reference and window histograms, the predictions' histograms; the
        alert log."""
        served = plane()
        authorize("drift", request)
        return _json(drift_view(served))

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        return _json(
            get_openapi(
                title="servekit dashboard API",
                version="1",
                description=__doc__ or "",
                routes=router.routes,
            )
        )

    return router


def mount_ui(app: FastAPI, sources: UiSources) -> None:
    """Add the dashboard to ``app``: the pages at ``/ui/`` (static files shipped in the
    package, nothing fetched from elsewhere) and the JSON routes at ``/v2/ui/...``."""
    app.include_router(ui_router(sources))

    @app.get("/ui", include_in_schema=False)
    async def ui_redirect() -> Response:
        return RedirectResponse("/ui/")

    @app.get("/ui/", include_in_schema=False)
    async def ui_index() -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
