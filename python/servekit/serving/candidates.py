"""Candidates: registry versions measured on live traffic next to production.

A **shadow** (``--shadow NAME@ALIAS[=FRACTION]``) receives a sampled copy of each request
production answered, off the response path and off the event loop: once production's outputs
exist, the event loop only puts the copy on the shadow's queue. The shadow's own worker thread
(on Linux's idle CPU time, like the shadow's execution threads) takes the copies that arrive
within up to :data:`GATHER_S` of the first (as many rows as the candidate's max batch size
allows), runs them on the candidate as one request, compares the answers row by row and records
the figures, so the client's answer, status and latency are production's alone, and the
shadow's failures are caught and counted. (A run of several copies that fails is retried copy
by copy, so each copy's error is its own. The candidate's statistics and telemetry count each
run as one request; its drift window gets every row.) At most ``queue_size`` copies per shadow
are outstanding (waiting or running); a sampled copy beyond that is dropped and counted, so a
hung or slow candidate costs bounded memory and never back-pressures production. Sampling: by a
stable hash of the request ``id`` when the client sends one (:func:`unit_interval`, so the
sampled requests can be recomputed offline), else at random.

A **canary** (``--canary NAME@ALIAS=FRACTION``) answers that share of the requests that name
no version (the response's ``model_version`` says which version answered); with a sticky key
(request parameter ``canary_key``, or the ``servekit-canary-key`` header) the choice is a
stable hash of the key, so one caller sees one version. Several canaries of a model split the
traffic in order; their fractions may add up to at most 1.

Candidates apply to requests that name no version or name production's version. A candidate
whose version is production's (after a promotion, say) is idle until its reference moves.
Each candidate is a :class:`ServedModel` of its own (own batcher, statistics and telemetry:
its drift window), never installed in the repository: the statistics extension and the
repository index show production only. Figures: :mod:`servekit.serving.comparison`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from servekit.errors import InvalidArgumentError, NotFoundError, ServekitError
from servekit.serving.codecs import InferRequest
from servekit.serving.comparison import Comparison
from servekit.serving.model import run_on_idle_cpu

if TYPE_CHECKING:
    from servekit.serving.model import ServedModel
    from servekit.serving.telemetry import ServingTelemetry

log = logging.getLogger("servekit.serving")

SHADOW, CANARY = "shadow", "canary"
ROLES = (SHADOW, CANARY)
#: The request parameter and HTTP header that make canary routing sticky.
STICKY_PARAMETER = "canary_key"
STICKY_HEADER = "servekit-canary-key"
DEFAULT_QUEUE_SIZE = 64
#: How long a shadow's worker lets copies gather after the first one before it runs them
#: together (at most; down to MIN_GATHER_S while each gathering fills the candidate's max
#: batch size): one candidate run and one comparison per gathering instead of per copy. What
#: a shadow costs production's event loop is per wake-up of the worker and per call, hardly
#: per row.
GATHER_S = 0.05
MIN_GATHER_S = 0.001
#: How long closing a candidate waits for its model's running batches, and then a shadow's
#: worker for its model call (a hung candidate's worker is left behind, a daemon thread).
CLOSE_WAIT_S = 5.0
WORKER_WAIT_S = 1.0
_now = time.perf_counter_ns


class CandidateSource(Protocol):
    """Where candidates come from (the server's registry source)."""

    def load_candidate(self, ref: str) -> ServedModel:
        """The version ``ref`` names now, verified and ready to infer (blocking)."""
        ...

    def resolve(self, ref: str) -> int:
        """The version number ``ref`` names now (blocking)."""
        ...


def unit_interval(key: str, salt: str) -> float:
    """A stable point in [0, 1) for ``key``: the first 8 bytes of BLAKE2b(salt, key).

    Shadow sampling uses salt ``shadow``, canary routing ``canary``."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class CandidateSpec:
    """A candidate as given on the command line or to the management API."""

    ref: str
    role: str
    fraction: float

    @property
    def model_name(self) -> str:
        return self.ref.split("@", 1)[0].split(":", 1)[0]


def parse_candidate(value: str, role: str) -> CandidateSpec:
    """Parse ``NAME@ALIAS[=FRACTION]`` (``NAME:VERSION`` works too) for ``role``.

    A shadow's fraction defaults to 1.0; a canary needs one. Raises InvalidArgumentError for a
    bad role, reference or fraction (outside (0, 1])."""
    flag = f"--{role}"
    if role not in ROLES:
        raise InvalidArgumentError(f"candidate role {role!r}: expected one of {list(ROLES)}")
    ref, sep, text = value.partition("=")
    ref = ref.strip()
    if not ref or ("@" not in ref and ":" not in ref):
        raise InvalidArgumentError(
            f"{flag} {value!r}: expected NAME@ALIAS or NAME:VERSION"
            + ("=FRACTION" if role == CANARY else "[=FRACTION]")
        )
    if not sep:
        if role == CANARY:
            raise InvalidArgumentError(f"{flag} {value!r}: a canary needs =FRACTION (0 < f <= 1)")
        return CandidateSpec(ref, role, 1.0)
    try:
        fraction = float(text)
    except ValueError:
        raise InvalidArgumentError(f"{flag} {value!r}: fraction {text!r} is not a number") from None
    return CandidateSpec(ref, role, check_fraction(fraction, f"{flag} {value}"))


def check_fraction(fraction: object, where: str) -> float:
    """``fraction`` as a float in (0, 1]; InvalidArgumentError naming ``where`` otherwise."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InvalidArgumentError(f"{where}: fraction must be a number, got {fraction!r}")
    if not 0.0 < float(fraction) <= 1.0:
        raise InvalidArgumentError(f"{where}: fraction must be in (0, 1], got {fraction}")
    return float(fraction)


class _Copy(NamedTuple):
    """A sampled request on its way to a shadow, with what production answered."""

    request: InferRequest
    production: dict[str, np.ndarray]
    production_ns: int
    figures: Comparison  # the figures of the pair it was sampled for

    def rows(self) -> int:
        return next(iter(self.request.inputs.values())).shape[0]

    def fits_with(self, other: _Copy) -> bool:
        """Whether both can run as one request: same figures, inputs and outputs but rows."""
        mine, theirs = self.request, other.request
        return (
            self.figures is other.figures
            and (mine.priority, mine.timeout_us) == (theirs.priority, theirs.timeout_us)
            and mine.datatypes == theirs.datatypes
            and mine.inputs.keys() == theirs.inputs.keys()
            and all(
                a.shape[1:] == theirs.inputs[n].shape[1:] and a.dtype == theirs.inputs[n].dtype
                for n, a in mine.inputs.items()
            )
            and self.production.keys() == other.production.keys()
            and all(
                a.shape[1:] == other.production[n].shape[1:] for n, a in self.production.items()
            )
        )


def _runs(copies: list[_Copy], max_rows: int) -> list[list[_Copy]]:
    """``copies`` in order, cut into runs of copies that fit together within ``max_rows``."""
    runs: list[list[_Copy]] = []
    rows = 0
    for copy in copies:
        n = copy.rows()
        if runs and rows + n <= max_rows and runs[-1][0].fits_with(copy):
            runs[-1].append(copy)
            rows += n
        else:
            runs.append([copy])
            rows = n
    return runs


def _joined(arrays: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {n: np.concatenate([a[n] for a in arrays]) for n in arrays[0]}


class Candidate:
    """One candidate version of a model, its role and its live figures.

    A shadow owns a worker thread and its queue (see the module docstring). Invariants:
    ``outstanding`` (copies queued or running) is ``submitted - finished``; the event loop
    alone writes ``submitted``, the worker alone ``finished``; the worker records a copy's
    outcome and counts it finished in one step under ``_settling``, under which the read-out
    reads both, so no read-out counts a copy as both outstanding and compared or failed.
    """

    def __init__(self, spec: CandidateSpec, model: ServedModel, queue_size: int) -> None:
        self.spec = spec
        self.model = model
        self.queue_size = queue_size
        self.figures = Comparison()
        #: The production version the figures compare with (None until a request came).
        self.production_version: int | None = None
        #: Whether this candidate's telemetry is exposed (its (model, version) key is taken).
        self.exposed = False
        self.submitted = 0
        self.finished = 0
        self._settling = threading.Lock()
        self._closing = False
        self._gather_s = GATHER_S
        self._copies: queue.SimpleQueue[_Copy | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        if spec.role == SHADOW:  # a copy must never take CPU time production wants
            model.run_in_background()
            self._worker = threading.Thread(
                target=self._work,
                name=f"servekit-shadow-{model.name}-{model.version}",
                daemon=True,  # a hung candidate's call must not hold up the server's exit
            )
            self._worker.start()

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def outstanding(self) -> int:
        """Copies queued or running on this shadow."""
        return self.submitted - self.finished

    def facing(self, production: int) -> None:
        """Note the production version of the next figures; a new one starts fresh figures
        (the pair changed: production's alias moved)."""
        if production != self.production_version:
            if self.production_version is not None:
                self.figures = Comparison()
            self.production_version = production

    def shadow(
        self, request: InferRequest, production: dict[str, np.ndarray], production_ns: int
    ) -> None:
        """Queue a copy of ``request`` for this shadow (or drop it when the queue is full)."""
        figures = self.figures
        figures.sampled += 1
        if self.outstanding >= self.queue_size:
            figures.dropped_one()
            return
        self.submitted += 1
        self._copies.put(_Copy(request, production, production_ns, figures))

    def _work(self) -> None:
        # The shadow's worker thread: gatherings of copies, in the order they were sampled.
        run_on_idle_cpu(f"shadow {self.spec.ref}")
        running = True
        while running:
            copies, running = self._gather()
            done = self.finished + len(copies)
            try:
                if copies and not self._closing:
                    self._run_copies(copies)
            except Exception:  # the worker outlives any copy (a candidate's error is counted)
                log.exception("shadow %s: comparing %d copies failed", self.spec.ref, len(copies))
            finally:  # copies skipped at closing, or lost to an unexpected error, end too
                with self._settling:
                    self.finished = done

    def _gather(self) -> tuple[list[_Copy], bool]:
        # The next copy and those queued while the worker sleeps after it, up to the
        # candidate's max batch size in rows (one at a time for a model without batching);
        # False once closed. The worker sleeps while copies gather instead of waiting on the
        # queue: a put then wakes nobody, so the event loop does not hand the interpreter over
        # per copy.
        first = self._copies.get()
        if first is None:
            return [], False
        limit = self.model.max_batch_size
        if limit <= 0:
            return [first], True
        copies, rows = [first], first.rows()
        if rows >= limit:
            return copies, True
        time.sleep(self._gather_s)
        while rows < limit:
            try:
                copy = self._copies.get_nowait()
            except queue.Empty:
                break
            if copy is None:
                return copies, False
            copies.append(copy)
            rows += copy.rows()
        # A full gathering sleeps half as long next time, one that was not twice (at most
        # GATHER_S): about one max batch size per gathering under heavy traffic.
        full = rows >= limit
        self._gather_s = (
            max(self._gather_s / 2, MIN_GATHER_S) if full else min(self._gather_s * 2, GATHER_S)
        )
        return copies, True

    def _run_copies(self, copies: list[_Copy]) -> None:
        if self.model.max_batch_size <= 0:
            for copy in copies:
                self._run([copy])
            return
        for run in _runs(copies, self.model.max_batch_size):
            if not self._run(run) and len(run) > 1:
                for copy in run:  # each copy's failure is its own
                    self._run([copy])

    def _run(self, copies: list[_Copy]) -> bool:
        # Run ``copies`` as one request and record the comparison, or (a single copy) the
        # failure. False when a run of several copies failed (nothing recorded).
        first = copies[0]
        start = _now()
        try:
            request = first.request
            if len(copies) > 1:
                request = InferRequest(
                    _joined([c.request.inputs for c in copies]),
                    dict(request.datatypes),
                    priority=request.priority,
                    timeout_us=request.timeout_us,
                )
            outputs = self.model.infer_blocking(request)
        except Exception as exc:  # a candidate's failure of any kind is its own, counted
            if len(copies) > 1:
                return False
            with self._settling:
                first.figures.failed(type(exc).__name__)
                self.finished += 1
            if not isinstance(exc, ServekitError):
                log.warning("shadow %s failed: %s: %s", self.spec.ref, type(exc).__name__, exc)
            return True
        production = first.production
        if len(copies) > 1:
            production = _joined([c.production for c in copies])
        with self._settling:
            first.figures.compared_batch(
                outputs, production, _now() - start, [c.production_ns for c in copies]
            )
            self.finished += len(copies)
        return True

    async def close(self) -> None:
        """Stop the candidate: queued copies are skipped, its model's queued requests fail and
        running ones are terminated; waits a bounded time (:data:`CLOSE_WAIT_S`,
        :data:`WORKER_WAIT_S`): a hung candidate must not hold up a removal or the server's
        shutdown."""
        self._closing = True
        self._copies.put(None)
        await self.model.close(timeout_s=CLOSE_WAIT_S, abort=True)
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, WORKER_WAIT_S)
            if self._worker.is_alive():
                log.warning(
                    "shadow %s: its worker is still in a model call; left to finish alone",
                    self.spec.ref,
                )

    def report(self) -> dict[str, Any]:
        """The read-out of this candidate: reference, version, role, fraction, queue state,
        the live figures and the candidate's drift summary."""
        with self._settling:
            outstanding, figures = self.outstanding, self.figures.to_dict()
        return {
            "ref": self.spec.ref,
            "version": str(self.version),
            "role": self.spec.role,
            "fraction": self.spec.fraction,
            "production_version": None
            if self.production_version is None
            else str(self.production_version),
            "queue_size": self.queue_size if self.spec.role == SHADOW else None,
            "outstanding": outstanding,
            **figures,
            "drift": _drift_summary(self.model),
        }


def _drift_summary(model: ServedModel) -> dict[str, Any] | None:
    probe = model.telemetry
    if probe is None:
        return None
    body = probe.telemetry.drift_json()
    if body is None:
        return {"monitored": False, "reason": probe.no_drift_reason}
    prediction = body.get("prediction")
    return {
        "monitored": True,
        "window_rows": body["window_rows"],
        "drift_detected": body["drift_detected"],
        "dataset_drift": body["dataset_drift"],
        "drifted_features": body["drifted_features"],
        "judged_features": body["judged_features"],
        "prediction_drifted": bool(prediction and prediction.get("drifted")),
    }


class ModelCandidates:
    """The candidates of one model, and the routing of its requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shadows: list[Candidate] = []
        self.canaries: list[Candidate] = []

    def __bool__(self) -> bool:
        return bool(self.shadows or self.canaries)

    def all(self) -> list[Candidate]:
        return [*self.shadows, *self.canaries]

    def pick_canary(
        self, production: ServedModel, request: InferRequest, key: str | None
    ) -> Candidate | None:
        """The canary that answers this request, or None for production."""
        sticky = request.parameters.get(STICKY_PARAMETER, key)
        point = unit_interval(str(sticky), CANARY) if sticky is not None else random.random()
        edge = 0.0
        for canary in self.canaries:
            edge += canary.spec.fraction
            if point < edge:
                return None if canary.version == production.version else canary
        return None

    async def infer(
        self,
        production: ServedModel,
        request: InferRequest,
        *,
        named_version: bool,
        sticky_key: str | None,
    ) -> tuple[dict[str, np.ndarray], ServedModel]:
        """Run ``request`` on production or a canary; copy it to the sampled shadows once
        production answered. Returns the outputs and the model that answered; raises what that
        model raises."""
        canary = None
        if self.canaries and not named_version:
            canary = self.pick_canary(production, request, sticky_key)
        start = _now()
        if canary is not None:
            canary.facing(production.version)
            try:
                outputs = await canary.model.infer(request)
            except ServekitError as exc:
                canary.figures.failed(type(exc).__name__)
                raise
            canary.figures.served(_now() - start)
            return outputs, canary.model
        outputs = await production.infer(request)
        elapsed = _now() - start
        for other in self.canaries:
            other.facing(production.version)
            other.figures.production_latency.add(elapsed)
        if self.shadows:
            sample = random.random() if request.id is None else None
            for shadow in self.shadows:
                if shadow.version == production.version:
                    continue
                fraction = shadow.spec.fraction
                if fraction < 1.0:
                    point = sample if sample is not None else unit_interval(request.id, SHADOW)
                    if point >= fraction:
                        continue
                shadow.facing(production.version)
                shadow.shadow(request, outputs, elapsed)
        return outputs, production


class CandidateSet:
    """Every model's candidates: added at startup or through the management API.

    ``source`` loads the version a reference names (None: candidates are refused, the server
    serves no registry); ``telemetry`` gives candidates their own drift window and latency
    sketches when on.
    """

    def __init__(
        self,
        source: CandidateSource | None = None,
        telemetry: ServingTelemetry | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if queue_size < 1:
            raise InvalidArgumentError(f"--shadow-queue-size must be >= 1, got {queue_size}")
        self.source = source
        self.telemetry = telemetry
        self.queue_size = queue_size
        self.models: dict[str, ModelCandidates] = {}
        self._lock = asyncio.Lock()

    def routing(self, name: str) -> ModelCandidates | None:
        """The candidates of model ``name`` when it has any (the data plane's hot-path test)."""
        return self.models.get(name)

    async def add(self, spec: CandidateSpec, production: ServedModel | None) -> Candidate:
        """Load ``spec``'s version and start routing to it, replacing a candidate with the same
        reference and role. Raises InvalidArgumentError when the server has no registry, the
        version is production's, or canary fractions would exceed 1; the registry's errors for
        an unknown reference; the model's errors when it does not load."""
        if self.source is None:
            raise InvalidArgumentError(
                f"candidate {spec.ref}: candidates come from the registry; serve the model with "
                "--model NAME@ALIAS"
            )
        async with self._lock:
            model = await asyncio.to_thread(self.source.load_candidate, spec.ref)
            if production is not None and model.version == production.version:
                await model.close()
                raise InvalidArgumentError(
                    f"--{spec.role} {spec.ref} is version {model.version}, which production "
                    "serves already"
                )
            group = self.models.get(spec.model_name) or ModelCandidates(spec.model_name)
            others = group.canaries if spec.role == CANARY else group.shadows
            old = next((c for c in others if c.spec.ref == spec.ref), None)
            clash = next(
                (c for c in group.all() if c is not old and c.version == model.version), None
            )
            if clash is not None:
                await model.close()
                raise InvalidArgumentError(
                    f"--{spec.role} {spec.ref}: version {model.version} is already the "
                    f"{clash.spec.role} {clash.spec.ref} of '{spec.model_name}' (one role per "
                    "version; remove it first)"
                )
            if spec.role == CANARY:
                total = spec.fraction + sum(c.spec.fraction for c in others if c is not old)
                if total > 1.0 + 1e-9:
                    await model.close()
                    raise InvalidArgumentError(
                        f"--canary {spec.ref}={spec.fraction}: the canaries of "
                        f"'{spec.model_name}' would take {total:g} of the traffic (at most 1)"
                    )
            if old is not None:  # the same (model, version) key: the new one takes it over
                self._hide(old)
            candidate = Candidate(spec, model, self.queue_size)
            self._expose(candidate)
            fresh = [c for c in others if c is not old] + [candidate]
            if spec.role == CANARY:
                group.canaries = fresh
            else:
                group.shadows = fresh
            self.models[spec.model_name] = group
        if old is not None:
            await old.close()
        log.info(
            "%s %s (version %d) of '%s' at fraction %g",
            spec.role,
            spec.ref,
            model.version,
            spec.model_name,
            spec.fraction,
        )
        return candidate

    async def remove(self, name: str, ref: str, role: str | None = None) -> list[Candidate]:
        """Stop routing to the candidates of ``name`` with reference ``ref`` (of ``role`` only,
        when given); return them. NotFoundError when there is none."""
        async with self._lock:
            group = self.models.get(name)
            gone = [
                c
                for c in (group.all() if group else [])
                if c.spec.ref == ref and role in (None, c.spec.role)
            ]
            if group is None or not gone:
                raise NotFoundError(f"model '{name}' has no candidate {ref!r}")
            group.shadows = [c for c in group.shadows if c not in gone]
            group.canaries = [c for c in group.canaries if c not in gone]
            if not group:
                del self.models[name]
        for candidate in gone:
            await self._retire(candidate)
        return gone

    def _expose(self, candidate: Candidate) -> None:
        if self.telemetry is None or candidate.exposed:
            return
        try:
            self.telemetry.attach(candidate.model)
            candidate.exposed = True
        except ServekitError as exc:
            log.error("candidate %s: telemetry off: %s", candidate.spec.ref, exc)

    def _hide(self, candidate: Candidate) -> None:
        if self.telemetry is not None and candidate.exposed:
            self.telemetry.detach(candidate.model)
            candidate.exposed = False

    def release(self, name: str, version: int) -> None:
        """Production of ``name`` is about to serve ``version``: a candidate running it goes
        idle and gives up its telemetry key (production's telemetry takes it)."""
        group = self.models.get(name)
        for candidate in group.all() if group else []:
            if candidate.version == version:
                self._hide(candidate)

    async def _retire(self, candidate: Candidate) -> None:
        self._hide(candidate)
        await candidate.close()

    async def refresh(self, production: Callable[[str], int | None]) -> None:
        """Reload the candidates whose reference names another version now (an alias moved):
        the new version starts with fresh figures (idle while it is the version
        ``production(model)`` serves now). A reference that fails to resolve or load is logged
        and its candidate keeps running."""
        if self.source is None:
            return
        for group in list(self.models.values()):
            for candidate in group.all():
                await self._refresh_one(candidate, production)

    async def _refresh_one(
        self, candidate: Candidate, production: Callable[[str], int | None]
    ) -> None:
        assert self.source is not None
        try:
            wanted = await asyncio.to_thread(self.source.resolve, candidate.spec.ref)
            if wanted == candidate.version:
                # Active again when production moved away (read after the await: now).
                if wanted != production(candidate.spec.model_name):
                    self._expose(candidate)
                return
            group = self.models.get(candidate.spec.model_name)
            if group is not None and any(c.version == wanted for c in group.all()):
                log.error(
                    "candidate %s moved to version %d, which another candidate runs; keeping "
                    "version %d",
                    candidate.spec.ref,
                    wanted,
                    candidate.version,
                )
                return
            model = await asyncio.to_thread(self.source.load_candidate, candidate.spec.ref)
        except ServekitError as exc:
            log.error("candidate %s: %s", candidate.spec.ref, exc)
            return
        fresh = Candidate(candidate.spec, model, self.queue_size)
        if model.version != production(candidate.spec.model_name):
            self._expose(fresh)
        if group is not None:
            group.shadows = [fresh if c is candidate else c for c in group.shadows]
            group.canaries = [fresh if c is candidate else c for c in group.canaries]
        log.info("candidate %s now runs version %d", candidate.spec.ref, model.version)
        await self._retire(candidate)

    def report(self, name: str, production: ServedModel | None) -> dict[str, Any]:
        """The read-out of model ``name``: production's version and each candidate's figures."""
        group = self.models.get(name)
        return {
            "model_name": name,
            "production_version": None if production is None else str(production.version),
            "candidates": [c.report() for c in group.all()] if group else [],
        }

    async def close(self) -> None:
        """Close every candidate (outstanding shadow copies are cancelled)."""
        for group in list(self.models.values()):
            for candidate in group.all():
                await self._retire(candidate)
        self.models.clear()
