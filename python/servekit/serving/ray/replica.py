"""One Ray Serve replica: a whole servekit data plane (its models, Rust batchers, telemetry)
behind the REST adapter's ASGI app, which Ray's proxy calls directly (one hop: proxy ->
replica; no ingress deployment in between).

Each replica also listens on its own port (:attr:`ServekitReplica.url`, registered in the
:mod:`~servekit.serving.ray.directory`): the same routes for that replica alone, with its
statistics and metrics labelled ``replica``, plus ``GET /servekit/replica/drift-state/...``
(its drift windows' bin counts). Through the proxy, the routes that describe the whole
application gather every replica's answer from those listeners:

- ``GET /metrics``: every replica's metrics, merged (:mod:`~servekit.serving.ray.gather`);
- ``GET /v2/models[/NAME[/versions/V]]/stats``: every replica's entries, each with its
  ``replica`` (Triton's fields unchanged);
- ``GET /v2/models/NAME[/versions/V]/drift``: the drift of all replicas' rows, from their
  summed bin counts (exactly one monitor's report over the same rows), with the replicas merged;
- ``GET /servekit/replicas``: replica id -> listener URL.

A replica that is listed but does not answer (it died; its entry expires within seconds) is
left out and named: ``unreachable_replicas`` in the JSON answers, a comment in the metrics.

Everything else (inference, metadata, readiness, repository control) is the answering
replica's own data plane. Registry references are followed by every replica on its own
``poll_interval``: an alias move rolls over the replicas one by one, each switching atomically
while its requests in flight finish on the old version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn
from ray import serve
from ray.serve.handle import DeploymentHandle

from servekit.errors import NotFoundError, ServekitError, UnavailableError
from servekit.serving.dataplane import DataPlane
from servekit.serving.export import BatchingOptions
from servekit.serving.ray.directory import HEARTBEAT_S
from servekit.serving.ray.gather import (
    PeerResponse,
    asgi_get,
    get_from_peers,
    label_metrics,
    merge_metrics,
)
from servekit.serving.ray.spec import ReplicaSpec
from servekit.serving.registry_source import RegistrySource
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.rest.app import Receive, Scope, Send, create_app, error_response
from servekit.serving.rest.server import SWITCH_INTERVAL_S, bind
from servekit.serving.telemetry import ServingTelemetry, TelemetryOptions

log = logging.getLogger("servekit.serving")

_STATS = re.compile(r"^/v2/models(?:/[^/]+(?:/versions/[^/]+)?)?/stats$")
_DRIFT = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/drift$")
_DRIFT_STATE = re.compile(r"^/servekit/replica/drift-state/([^/]+)/versions/([^/]+)$")
_JSON = [(b"content-type", b"application/json")]


def build_plane(spec: ReplicaSpec) -> tuple[DataPlane, RegistrySource | None]:
    """The data plane ``spec`` describes (models not loaded yet) and its registry source.
    Raises InvalidArgumentError or StorageError for bad settings or profiles."""
    spec.validate()
    runner_options = RunnerOptions(device=spec.device, threads=spec.threads)
    telemetry = (
        ServingTelemetry(TelemetryOptions(**_telemetry_fields(spec.telemetry)))
        if spec.telemetry is not None
        else None
    )
    repository = ModelRepository(spec.model_repo, runner_options, telemetry)
    source = None
    if spec.models:
        from servekit.registry import Registry

        registry = Registry(spec.registry)
        batching = BatchingOptions(spec.max_batch_size)
        source = RegistrySource(registry, list(spec.models), runner_options, batching)
    return DataPlane(repository, max_json_depth=spec.max_json_depth), source


def _telemetry_fields(fields: dict[str, Any]) -> dict[str, Any]:
    data = dict(fields)
    if "reference_profiles" in data:
        data["reference_profiles"] = tuple(data["reference_profiles"])
    return data


def _json(status: int, data: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, list(_JSON), orjson.dumps(data)


class ReplicaApp:
    """ASGI app of a replica: the REST adapter's app, with the routes of the module docstring.
    ``directory`` None: the replica's own listener (its answers only); else the proxy-facing
    app, gathering from the replicas the directory lists."""

    def __init__(
        self,
        inner: Any,
        plane: DataPlane,
        replica: str,
        directory: DeploymentHandle | None,
    ) -> None:
        self.inner = inner
        self.plane = plane
        self.replica = replica
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            handled = await self._route(scope["path"])
            if handled is not None:
                status, headers, body = handled
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.inner(scope, receive, send)

    async def _route(self, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        try:
            if self.directory is None:
                return await self._local(path)
            return await self._gathered(path)
        except Exception as exc:  # every failure becomes a JSON error response
            response = error_response(exc)
            return response.status_code, list(_JSON), bytes(response.body)

    # -- this replica's own answers -----------------------------------------------------------

    async def _local(self, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        if path == "/metrics":
            response = await asgi_get(self.inner, path)
            text = label_metrics(response.body.decode(), self.replica)
            return response.status, response.headers, text.encode()
        if _STATS.match(path):
            response = await asgi_get(self.inner, path)
            if response.status != 200:
                return response.status, response.headers, response.body
            data = orjson.loads(response.body)
            for entry in data["model_stats"]:
                entry["replica"] = self.replica
            return _json(200, data)
        match = _DRIFT_STATE.match(path)
        if match is not None:
            return _json(200, self._drift_state(match[1], match[2]))
        return None

    def _monitor(self, name: str, version: str | None) -> Any:
        model = self.plane.model(name, version)
        probe = model.telemetry
        monitor = probe.telemetry.drift if probe is not None else None
        if monitor is None:
            self.plane.drift(name, version)  # raises NotFoundError with the reason
            raise NotFoundError(f"model '{name}' has no drift monitoring")
        return model, monitor

    def _drift_state(self, name: str, version: str) -> dict[str, Any]:
        model, monitor = self._monitor(name, version)
        return {
            "replica": self.replica,
            "model_name": model.name,
            "model_version": str(model.version),
            "state": monitor.state(),
        }

    # -- the whole application, gathered ------------------------------------------------------

    async def _peers(self) -> dict[str, str]:
        assert self.directory is not None
        return await self.directory.replicas.remote()

    async def _gathered(self, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        if path == "/servekit/replicas":
            return _json(200, {"replicas": await self._peers()})
        if path == "/metrics":
            answers = await get_from_peers(await self._peers(), path)
            texts = [a.body.decode() for a in answers if a.status == 200]
            missing = [f"# replica {a.replica} did not answer" for a in answers if a.status != 200]
            text = "\n".join([*missing, merge_metrics(texts)])
            return 200, [(b"content-type", b"text/plain; version=0.0.4")], text.encode()
        if _STATS.match(path):
            return await self._stats(path)
        match = _DRIFT.match(path)
        if match is not None:
            return _json(200, await self._drift(match[1], match[2]))
        return None

    async def _stats(self, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        answers = await get_from_peers(await self._peers(), path)
        ok = [a for a in answers if a.status == 200]
        if not ok:  # no replica serves it: the first error as that replica answered it
            failed = next((a for a in answers if a.status >= 400), None)
            if failed is None:
                raise UnavailableError("no replica answered (all unreachable)")
            return failed.status, list(_JSON), failed.body
        entries = [e for a in ok for e in orjson.loads(a.body)["model_stats"]]
        return _json(200, {"model_stats": entries, **_unreachable(answers)})

    async def _drift(self, name: str, version: str | None) -> dict[str, Any]:
        body = self.plane.drift(name, version)  # this replica's answer: errors, metadata
        model, monitor = self._monitor(name, version)
        path = f"/servekit/replica/drift-state/{model.name}/versions/{model.version}"
        answers = await get_from_peers(await self._peers(), path)
        states = [orjson.loads(a.body) for a in answers if a.status == 200]
        if not any(s["replica"] == self.replica for s in states):
            states.append(self._drift_state(model.name, str(model.version)))
        report = monitor.merged_report([s["state"] for s in states])
        body.update(report.to_dict())
        body["replicas"] = sorted(s["replica"] for s in states)
        body.update(_unreachable(answers))
        return body


def _unreachable(answers: list[PeerResponse]) -> dict[str, list[str]]:
    """``{"unreachable_replicas": [...]}`` when some listed replica could not be reached (it
    died and its directory entry has not expired yet), else nothing."""
    missing = sorted(a.replica for a in answers if a.status == 0)
    return {"unreachable_replicas": missing} if missing else {}


class ServekitReplica:
    """The Serve deployment class (see the module docstring). ``replica``: a
    :meth:`ReplicaSpec.to_dict` mapping; ``directory``: the directory deployment's handle."""

    async def __init__(self, replica: dict[str, Any], directory: DeploymentHandle) -> None:
        spec = ReplicaSpec.from_dict(replica)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.directory = directory
        self._drain_s = spec.drain_timeout_s
        self.plane, self.source = build_plane(spec)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        await self.plane.load_all()
        if self.source is not None:
            await self.source.load_all(self.plane)
        telemetry = self.plane.repository.telemetry
        if telemetry is not None:
            telemetry.start()
        inner = create_app(self.plane, max_body_bytes=spec.max_body_bytes)
        host = spec.replica_host or _node_ip()
        sock = bind(host, 0)
        port = sock.getsockname()[1]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            ReplicaApp(inner, self.plane, self.replica_id, None),
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = _ListenerServer(config)
        self._listener = asyncio.create_task(self._server.serve(sockets=[sock]))
        await self.directory.register.remote(self.replica_id, self.url)
        self._tasks = [asyncio.create_task(self._heartbeat())]
        if self.source is not None:
            self._tasks.append(
                asyncio.create_task(self.source.follow(self.plane, spec.poll_interval))
            )
        self._app = ReplicaApp(inner, self.plane, self.replica_id, directory)
        log.info("replica %s serving; its own listener: %s", self.replica_id, self.url)

    def __serve_build_asgi_app__(self) -> ReplicaApp:
        """The proxy-facing ASGI app (Ray Serve calls this once, after ``__init__``)."""
        return self._app

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.directory.register.remote(self.replica_id, self.url)
            except Exception as exc:  # the directory restarts: the next beat refills it
                log.warning("replica %s: directory registration failed: %s", self.replica_id, exc)

    def check_health(self) -> None:
        """Ray Serve's health check: raises when the replica's listener or its registry
        follower stopped (Ray then replaces the replica)."""
        for task in (self._listener, *self._tasks):
            if task.done():
                raise UnavailableError(f"replica {self.replica_id}: a background task stopped")

    async def __del__(self) -> None:
        """Deregister, stop the listener and the background tasks, and drain the models."""
        with contextlib.suppress(Exception):
            await self.directory.deregister.remote(self.replica_id)
        for task in self._tasks:
            task.cancel()
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._listener, 5)
        self.plane.draining = True
        try:
            await asyncio.wait_for(self.plane.close(), self._drain_s)
        except (TimeoutError, ServekitError) as exc:
            log.error("replica %s: models did not drain: %s", self.replica_id, exc)
        telemetry = self.plane.repository.telemetry
        if telemetry is not None:
            await asyncio.to_thread(telemetry.close)


class _ListenerServer(uvicorn.Server):
    """uvicorn without signal handlers: the replica's process belongs to Ray."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


#: The deployment (see :func:`servekit.serving.ray.app.build_app` for its options).
ReplicaDeployment = serve.deployment(name="ServekitReplica")(serve.ingress()(ServekitReplica))
