"""The data plane: everything the KServe v2 / Triton protocol does, independent of HTTP.

The REST adapter (``servekit.serving.rest``) only moves bytes and status codes; every decision
is here. Errors are servekit's typed exceptions; :func:`servekit.serving.errors.http_status`
gives their status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from servekit import __version__
from servekit.errors import InvalidArgumentError, NotFoundError, ServekitError, UnavailableError
from servekit.serving.access import ApiGroup, HeaderLookup, RestrictedApis
from servekit.serving.codecs import (
    DEFAULT_MAX_JSON_DEPTH,
    InferRequest,
    InferResponse,
    decode_raw_request,
    decode_request,
    encode_response,
)
from servekit.serving.config import config_to_dict, parse_json_config, validate_config
from servekit.serving.control import ControlMode, refuse_control
from servekit.serving.inflight import DEFAULT_MAX_INFLIGHT, InflightLimit
from servekit.serving.model import ServedModel
from servekit.serving.repository import UNLOADED, ModelEntry, ModelRepository, close_entry

log = logging.getLogger("servekit.serving")

#: Protocol extensions implemented (listed by ``GET /v2``).
EXTENSIONS = [
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "statistics",
    "parameters",
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
    ) -> None:
        self.repository = repository
        self.control_mode = control_mode
        self.strict_readiness = strict_readiness
        self.max_json_depth = max_json_depth
        self.draining = False
        self.inflight = InflightLimit(max_inflight)
        self.restricted = restricted or RestrictedApis()
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
        """True while the process serves HTTP."""
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

    def repository_index(self) -> list[dict[str, str]]:
        """Every model in the repository with its state (Triton's repository index)."""
        return self.repository.index()

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
        return decode_request(body, header_length, max_json_depth=self.max_json_depth)

    async def infer(
        self, name: str, version: str | None, request: InferRequest, model: ServedModel | None
    ) -> InferResponse:
        """Run a decoded request; return the response with the requested outputs."""
        model = model or self.repository.get(name, version)
        outputs = await model.infer(request)
        default = request.binary_output
        if request.outputs is None:
            chosen = [(n, outputs[n], default) for n in model.output_names]
        else:
            chosen = [
                (o.name, outputs[o.name], default if o.binary is None else o.binary)
                for o in request.outputs
            ]
        return InferResponse(model.name, str(model.version), chosen, request.id)

    async def infer_body(
        self, name: str, version: str | None, body: bytes, header_length: int | None
    ) -> tuple[bytes, int | None]:
        """Decode, run and encode one request; return the response body and the length of its
        JSON header (None when the body is all JSON). Raises servekit's typed errors."""
        model = self.repository.get(name, version)
        start = time.perf_counter_ns()
        try:
            request = self.decode(model, body, header_length)
        except ServekitError as exc:
            model.stats.record_failure(time.perf_counter_ns() - start, "OTHER")
            raise exc from None
        decoded = time.perf_counter_ns()
        response = await self.infer(name, version, request, model)
        encode_start = time.perf_counter_ns()
        encoded = encode_response(response)
        model.stats.record_io(decoded - start, time.perf_counter_ns() - encode_start)
        return encoded


def _model_stats(model: ServedModel) -> dict[str, Any]:
    """Triton's statistics entry of a version, plus servekit's ``latency_quantiles`` field when
    telemetry is on (Triton's fields are unchanged, so Triton clients still parse it)."""
    stats = model.stats.to_triton(model.name, str(model.version))
    if model.telemetry is not None:
        stats["latency_quantiles"] = model.telemetry.latency_json()
    return stats
