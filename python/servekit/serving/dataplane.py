"""The data plane: everything the KServe v2 / Triton protocol does, independent of HTTP.

The REST adapter (``servekit.serving.rest``) only moves bytes and status codes; every decision
is here. Errors are servekit's typed exceptions; :func:`servekit.serving.errors.http_status`
gives their status code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from servekit import __version__
from servekit.errors import InvalidArgumentError, NotFoundError, ServekitError, UnavailableError
from servekit.serving.candidates import CandidateSet, CandidateSpec
from servekit.serving.codecs import (
    DEFAULT_MAX_JSON_DEPTH,
    InferRequest,
    InferResponse,
    decode_raw_request,
    decode_request,
    encode_response,
)
from servekit.serving.config import config_to_dict, parse_json_config, validate_config
from servekit.serving.model import ServedModel
from servekit.serving.repository import ModelEntry, ModelRepository, close_entry

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
        candidates: CandidateSet | None = None,
    ) -> None:
        self.repository = repository
        #: Shadow and canary versions of the models (servekit.serving.candidates).
        self.candidates = candidates or CandidateSet()
        self.max_json_depth = max_json_depth
        self.draining = False
        self._load_lock = asyncio.Lock()

    # -- health and metadata ----------------------------------------------------------------

    def live(self) -> bool:
        """True while the process serves HTTP."""
        return True

    def ready(self) -> bool:
        """True until shutdown begins (a broken model does not make the server unready)."""
        return not self.draining

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

    async def load_all(self) -> list[ModelEntry]:
        """Load every model directory (at startup); return the entries.

        Raises InvalidArgumentError naming the model if a config.pbtxt is invalid (startup
        must fail); models whose artifacts fail to load are recorded as unavailable.
        """
        names = self.repository.model_names()
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
        """Load or reload a model, switching atomically to the new versions.

        Requests running on the old versions finish on them. Raises NotFoundError for an
        unknown model directory, InvalidArgumentError for an invalid configuration (the model
        keeps its current state in both cases).
        """
        override = parse_json_config(config_json) if config_json is not None else None
        async with self._load_lock:
            entry = await asyncio.to_thread(self.repository.build, name, override)
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

    async def unload(self, name: str) -> None:
        """Stop serving a model after its in-flight requests; NotFoundError if not loaded."""
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
        return decode_request(body, header_length, max_json_depth=self.max_json_depth)

    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        model: ServedModel | None,
        *,
        sticky_key: str | None = None,
    ) -> InferResponse:
        """Run a decoded request; return the response with the requested outputs.

        A request naming no version may be answered by a canary (the response's version says
        which; ``sticky_key`` makes the choice stable); shadows get a copy after production
        answered. Raises what the answering model raises."""
        model = model or self.repository.get(name, version)
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
        return InferResponse(model.name, str(model.version), chosen, request.id)

    async def infer_body(
        self,
        name: str,
        version: str | None,
        body: bytes,
        header_length: int | None,
        *,
        sticky_key: str | None = None,
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
        response = await self.infer(name, version, request, model, sticky_key=sticky_key)
        encode_start = time.perf_counter_ns()
        encoded = encode_response(response)
        if response.model_version == str(model.version):  # a canary's answer is not production's
            model.stats.record_io(decoded - start, time.perf_counter_ns() - encode_start)
        return encoded


def _model_stats(model: ServedModel) -> dict[str, Any]:
    """Triton's statistics entry of a version, plus servekit's ``latency_quantiles`` field when
    telemetry is on (Triton's fields are unchanged, so Triton clients still parse it)."""
    stats = model.stats.to_triton(model.name, str(model.version))
    if model.telemetry is not None:
        stats["latency_quantiles"] = model.telemetry.latency_json()
    return stats
