"""The data plane: everything the KServe v2 / Triton protocol does, independent of HTTP.

The REST adapter (``servekit.serving.rest``) and the gRPC adapter (``servekit.serving.grpc``)
only convert messages and status codes; every decision is here. Errors are servekit's typed
exceptions; :func:`servekit.serving.errors.http_status` gives their HTTP status code and
``servekit.serving.grpc.status`` their gRPC one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from servekit import __version__
from servekit.errors import InvalidArgumentError, NotFoundError, ServekitError, UnavailableError
from servekit.serving import candidate_metrics, metrics
from servekit.serving.access import ApiGroup, HeaderLookup, RestrictedApis
from servekit.serving.candidates import CandidateSet, CandidateSpec
from servekit.serving.codecs import (
    DEFAULT_MAX_JSON_DEPTH,
    InferRequest,
    InferResponse,
    decode_raw_request,
    decode_request,
    encode_response,
)
from servekit.serving.codecs.tensor import to_binary
from servekit.serving.config import config_to_dict, parse_json_config, validate_config
from servekit.serving.control import ControlMode, refuse_control
from servekit.serving.inflight import DEFAULT_MAX_INFLIGHT, InflightLimit
from servekit.serving.model import ServedModel
from servekit.serving.repository import UNLOADED, ModelEntry, ModelRepository, close_entry
from servekit.serving.shm import SharedMemoryRegistry

T = TypeVar("T")

log = logging.getLogger("servekit.serving")

#: Protocol extensions implemented (listed by ``GET /v2``).
EXTENSIONS = [
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "statistics",
    "parameters",
    "system_shared_memory",
]


class DataPlane:
    """Serves the models of a repository: metadata, readiness, inference, repository control
    and statistics."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        max_inflight: int | None = DEFAULT_MAX_INFLIGHT,
        restricted: RestrictedApis | None = None,
        control_mode: ControlMode = ControlMode.NONE,
        strict_readiness: bool = True,
        candidates: CandidateSet | None = None,
    ) -> None:
        self.repository = repository
        self.control_mode = control_mode
        self.strict_readiness = strict_readiness
        #: Shadow and canary versions of the models (servekit.serving.candidates).
        self.candidates = candidates or CandidateSet()
        self.max_json_depth = max_json_depth
        self.draining = False
        self.inflight = InflightLimit(max_inflight)
        self.restricted = restricted or RestrictedApis()
        self.shared_memory = SharedMemoryRegistry()
        self._load_lock = asyncio.Lock()

    # -- admission: every front end calls these before serving a request --------------------

    def authorize(self, group: ApiGroup | None, lookup: HeaderLookup) -> None:
        """Allow a request of API ``group`` whose headers (or gRPC metadata) ``lookup`` reads.

        Raises ForbiddenError when the group is restricted and the header is missing or wrong.
        """
        self.restricted.check(group, lookup)

    def admit(self, group: ApiGroup | None) -> contextlib.AbstractContextManager[None]:
        """A context holding one of the server's in-flight slots while the request runs.

        Health and metrics requests hold none (probes and scrapes must answer on a saturated
        server). Entering raises QueueFullError ("Exceeds maximum queue size") when every slot
        is taken.
        """
        if group in (ApiGroup.HEALTH, ApiGroup.METRICS):
            return contextlib.nullcontext()
        return self.inflight.slot()

    # -- health and metadata ----------------------------------------------------------------

    def live(self) -> bool:
        """True while the process serves (HTTP and gRPC)."""
        return True

    def ready(self) -> bool:
        """Whether the server is ready: False once shutdown begins; with strict readiness
        (Triton's default) also False while a model that should be loaded (every loaded one
        not unloaded since) has a version that failed to load or none ready."""
        if self.draining:
            return False
        if not self.strict_readiness:
            return True
        return all(
            entry.versions and not entry.failed
            for entry in self.repository.entries()
            if entry.reason != UNLOADED
        )

    def server_metadata(self) -> dict[str, Any]:
        """KServe v2 server metadata with the extensions implemented."""
        return {"name": "servekit", "version": __version__, "extensions": EXTENSIONS}

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model version; NotFoundError / UnavailableError as the repository says."""
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """KServe v2 model metadata; every ready version is listed when none is asked for."""
        model = self.repository.get(name, version)
        meta = model.metadata()
        if not version:
            entry = next(e for e in self.repository.entries() if e.name == name)
            meta["versions"] = [str(v) for v in sorted(entry.versions)]
        return meta

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model (version) can serve; NotFoundError for an unknown one."""
        try:
            self.repository.get(name, version)
        except UnavailableError:
            return False
        return True

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The model's completed configuration in Triton's JSON form."""
        return config_to_dict(self.repository.get(name, version).config)

    # -- repository control -----------------------------------------------------------------

    def repository_index(self, ready: object = False) -> list[dict[str, str]]:
        """Every model in the repository with its state (Triton's repository index); only the
        READY rows when ``ready`` is true. InvalidArgumentError when ``ready`` is not a bool."""
        if not isinstance(ready, bool):
            raise InvalidArgumentError("repository index field 'ready' must be a boolean")
        rows = self.repository.index()
        return [r for r in rows if r["state"] == "READY"] if ready else rows

    async def load_with_parameters(self, name: str, parameters: object) -> ModelEntry:
        """Load a model with Triton's load parameters (``config``: a JSON configuration
        override). InvalidArgumentError for parameters that are not an object, a ``config``
        that is not a string, ``file:`` overrides (not supported) or any other key; the rest
        as :meth:`load`."""
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise InvalidArgumentError("load 'parameters' must be a JSON object")
        if any(key.startswith("file:") for key in parameters):
            raise InvalidArgumentError("loading a model from file overrides is not supported")
        unknown = sorted(set(parameters) - {"config"})
        if unknown:
            raise InvalidArgumentError(f"unknown load parameter(s) {unknown}: only 'config'")
        config = parameters.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgumentError("load parameter 'config' must be a JSON string")
        return await self.load(name, config)

    async def load_all(self, names: list[str] | None = None) -> list[ModelEntry]:
        """Load the model directories ``names`` (None: every one) at startup; return the
        entries.

        Raises NotFoundError for a name with no model directory, InvalidArgumentError naming
        the model if a config.pbtxt is invalid (startup must fail); models whose artifacts fail
        to load are recorded as unavailable.
        """
        known = self.repository.model_names()
        if names is None:
            names = known
        for name in names:
            if name not in known:
                raise NotFoundError(
                    f"--load-model {name}: no model directory '{name}' in {self.repository.root}"
                )
        for name in names:  # every configuration first: a bad one fails before any loading
            config = self.repository.read_config(name)
            if config is not None:
                validate_config(config)
        entries = []
        for name in names:
            entry = await asyncio.to_thread(self.repository.build, name)
            self.repository.install(entry)
            entries.append(entry)
        return entries

    async def load(self, name: str, config_json: str | None = None) -> ModelEntry:
        """The load API: load or reload a model, switching atomically to the new versions.

        Raises ModelControlError unless the control mode is ``explicit``; otherwise as
        :meth:`switch`, and InvalidArgumentError ("failed to load", Triton's status) when a
        version failed to load (what did load is served, the rest is reported in the index).
        """
        refuse_control(self.control_mode)
        override = parse_json_config(config_json) if config_json is not None else None
        entry = await self.switch(name, override)
        if entry.failed or not entry.versions:
            failures = [f"version {v}: {why}" for v, why in sorted(entry.failed.items())]
            raise InvalidArgumentError(
                f"failed to load '{name}': {'; '.join(failures) or entry.reason}"
            )
        return entry

    async def unload(self, name: str) -> None:
        """The unload API; ModelControlError unless the control mode is ``explicit``,
        otherwise as :meth:`drop`."""
        refuse_control(self.control_mode)
        await self.drop(name)

    async def switch(
        self, name: str, override: Any = None, *, keep_on_failure: bool = False
    ) -> ModelEntry:
        """Load or reload a model whatever the control mode (the poller's and the load API's
        common step); return the new entry.

        Requests running on the old versions finish on them. With ``keep_on_failure``, a new
        load with no ready version leaves a model that had one as it was (the returned entry
        is then the one still served). Raises NotFoundError for an unknown model directory,
        InvalidArgumentError for an invalid configuration (the model keeps its current state).
        """
        async with self._load_lock:
            entry = await asyncio.to_thread(self.repository.build, name, override)
            current = next((e for e in self.repository.entries() if e.name == name), None)
            if keep_on_failure and not entry.versions and current and current.versions:
                reason = entry.reason or "; ".join(entry.failed.values())
                log.error(
                    "model '%s' did not reload (%s): still serving it as loaded", name, reason
                )
                await close_entry(entry)
                return current
            old = self.repository.install(entry)
        if old is not None:
            await close_entry(old)
        log.info(
            "model '%s' loaded: versions %s ready, %d failed",
            name,
            sorted(entry.versions),
            len(entry.failed),
        )
        return entry

    async def drop(self, name: str) -> None:
        """Stop serving a model after its in-flight requests whatever the control mode;
        NotFoundError if it is not loaded."""
        async with self._load_lock:
            old = self.repository.remove(name)
        await close_entry(old)

    async def close(self) -> None:
        """Close every model, letting in-flight requests finish."""
        self.draining = True
        await self.candidates.close()
        await asyncio.gather(*(close_entry(e) for e in self.repository.entries()))

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics response for one model (version) or, without a name, all."""
        if name:
            if version:
                models = [self.repository.get(name, version)]
            else:
                entry = next((e for e in self.repository.entries() if e.name == name), None)
                if entry is None:
                    raise NotFoundError(f"Request for unknown model: '{name}' is not found")
                models = [entry.versions[v] for v in sorted(entry.versions)]
        else:
            models = [e.versions[v] for e in self.repository.entries() for v in sorted(e.versions)]
        return {"model_stats": [_model_stats(m) for m in models]}

    def metrics_text(self, registries: Iterable[Any]) -> bytes:
        """Prometheus text of every served version's counters followed by ``registries`` and
        the shadow/canary series."""
        models = [m for e in self.repository.entries() for m in e.versions.values()]
        text = metrics.render(models, registries, inflight=self.inflight.in_flight)
        return text + b"\n" + candidate_metrics.render(self.candidates)

    # -- telemetry ----------------------------------------------------------------------------

    def drift(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The drift report of a served version (the latest ready one without ``version``).

        Raises NotFoundError for an unknown model or version, or one without a reference
        profile (the message says how to give one); UnavailableError for a version that is not
        ready; InvalidArgumentError for a version that is not an integer.
        """
        model = self.repository.get(name, version)
        telemetry = self.repository.telemetry
        if telemetry is None:
            raise NotFoundError("telemetry is off on this server (started with --no-telemetry)")
        return telemetry.drift(model)

    # -- candidates (shadow and canary) -------------------------------------------------------

    def _production(self, name: str) -> ServedModel | None:
        try:
            return self.repository.get(name)
        except UnavailableError:
            return None

    def candidates_report(self, name: str) -> dict[str, Any]:
        """The live figures of the model's candidates; NotFoundError for an unknown model."""
        return self.candidates.report(name, self._production(name))

    async def add_candidate(self, spec: CandidateSpec) -> dict[str, Any]:
        """Start a shadow or canary of a served model; return its read-out. Raises
        NotFoundError for a model not served, InvalidArgumentError (see CandidateSet.add) and
        the registry's errors for a reference that does not resolve."""
        production = self._production(spec.model_name)
        return (await self.candidates.add(spec, production)).report()

    async def refresh_candidates(self) -> None:
        """Follow the candidates' references (see CandidateSet.refresh)."""

        def production(name: str) -> int | None:
            try:
                model = self._production(name)
            except NotFoundError:
                return None
            return None if model is None else model.version

        await self.candidates.refresh(production)

    async def remove_candidate(self, name: str, ref: str, role: str | None = None) -> None:
        """Stop a model's candidate(s) of reference ``ref``; NotFoundError when none runs."""
        await self.candidates.remove(name, ref, role)

    # -- inference ----------------------------------------------------------------------------

    def decode(self, model: ServedModel, body: bytes, header_length: int | None) -> InferRequest:
        """Decode a request body for ``model`` (header length 0: raw binary single input)."""
        if header_length == 0:
            inputs = model.config.input
            if len(inputs) != 1:
                raise InvalidArgumentError(
                    f"a raw binary request needs a model with one input; '{model.name}' has "
                    f"{len(inputs)}"
                )
            spec = model.signature.inputs[0]
            batched = model.max_batch_size > 0
            dims = spec.shape[1:] if batched else spec.shape
            return decode_raw_request(body, spec.name, spec.datatype, dims, batched)
        return decode_request(
            body, header_length, max_json_depth=self.max_json_depth, shm=self.shared_memory
        )

    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        model: ServedModel | None,
        *,
        sticky_key: str | None = None,
    ) -> InferResponse:
        """Run a decoded request; return the response with the requested outputs (those
        asked in shared memory written to their regions, which are looked up before the model
        runs: a region unregistered meanwhile still receives its output).

        A request naming no version may be answered by a canary (the response's version says
        which; ``sticky_key`` makes the choice stable); shadows get a copy after production
        answered. Raises what the answering model raises."""
        model = model or self.repository.get(name, version)
        targets = {
            o.name: (self.shared_memory.get(o.shm[0]), o.shm[1], o.shm[2])
            for o in request.outputs or ()
            if o.shm is not None
        }
        routing = self.candidates.routing(name)
        if routing is None:
            outputs = await model.infer(request)
        else:
            outputs, model = await routing.infer(
                model, request, named_version=bool(version), sticky_key=sticky_key
            )
        default = request.binary_output
        if request.outputs is None:
            chosen = [(n, outputs[n], default) for n in model.output_names]
        else:
            chosen = [
                (o.name, outputs[o.name], default if o.binary is None else o.binary)
                for o in request.outputs
            ]
        response = InferResponse(model.name, str(model.version), chosen, request.id)
        for out_name, (region, offset, size) in targets.items():
            data = to_binary(outputs[out_name])
            region.write(offset, size, data, f"output '{out_name}'")
            params: dict[str, Any] = {
                "shared_memory_region": region.name,
                "shared_memory_byte_size": len(data),
            }
            if offset:
                params["shared_memory_offset"] = offset
            response.shared[out_name] = params
        return response

    # -- system shared memory -----------------------------------------------------------------

    def shm_register(self, name: str, key: object, offset: object, byte_size: object) -> None:
        """Register a system shared memory region (Triton's extension); InvalidArgumentError
        as :meth:`SharedMemoryRegistry.register` says."""
        self.shared_memory.register(name, key, offset, byte_size)

    def shm_status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every region's status, or region ``name``'s (NotFoundError if unregistered)."""
        return self.shared_memory.status(name)

    def shm_unregister(self, name: str | None = None) -> None:
        """Unregister region ``name`` (None: all); requests using it finish with it."""
        self.shared_memory.unregister(name)

    async def infer_message(
        self,
        name: str,
        version: str | None,
        decode: Callable[[ServedModel], InferRequest],
        encode: Callable[[InferResponse], T],
        *,
        sticky_key: str | None = None,
    ) -> T:
        """Decode, run and encode one request with an adapter's ``decode`` (given the model)
        and ``encode``; record the decode and encode times. A decode failure is counted as a
        failed request. ``sticky_key`` keeps a caller on one canary or production version.
        Raises servekit's typed errors."""
        model = self.repository.get(name, version)
        start = time.perf_counter_ns()
        try:
            request = decode(model)
        except ServekitError as exc:
            model.stats.record_failure(time.perf_counter_ns() - start, "OTHER")
            raise exc from None
        decoded = time.perf_counter_ns()
        response = await self.infer(name, version, request, model, sticky_key=sticky_key)
        encode_start = time.perf_counter_ns()
        encoded = encode(response)
        if response.model_version == str(model.version):  # a canary's answer is not production's
            model.stats.record_io(decoded - start, time.perf_counter_ns() - encode_start)
        return encoded

    async def infer_body(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: int | None,
        *,
        sticky_key: str | None = None,
    ) -> tuple[bytes, int | None]:
        """Decode, run and encode one HTTP request body; return the response body and the
        length of its JSON header (None when the body is all JSON). Raises servekit's typed
        errors."""
        return await self.infer_message(
            name,
            version,
            lambda model: self.decode(model, body, header_length),
            encode_response,
            sticky_key=sticky_key,
        )


def _model_stats(model: ServedModel) -> dict[str, Any]:
    """Triton's statistics entry of a version, plus servekit's ``latency_quantiles`` field when
    telemetry is on (Triton's fields are unchanged, so Triton clients still parse it)."""
    stats = model.stats.to_triton(model.name, str(model.version))
    if model.telemetry is not None:
        stats["latency_quantiles"] = model.telemetry.latency_json()
    return stats
