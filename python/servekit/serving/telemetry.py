"""Telemetry of the served models: one :class:`~servekit.telemetry.ModelTelemetry` per version.

Every served model version gets latency sketches (request, queue and compute time) and, when it
has a reference profile, drift monitoring of one input and one output. The profile of a version
is, first match wins:

1. ``--reference-profile MODEL=FILE`` naming the model;
2. ``--reference-profile FILE`` (every model not named by a ``MODEL=FILE``);
3. the model's own ``reference_profile.json``: inside a registry directory artifact (what
   ``servekit package`` registers), or next to the model file in a repository version folder
   (``DIR/<model>/<version>/reference_profile.json``).

Monitored tensors: the first input whose per-row values fit the profile's feature count (2-D
``rows x features``; inputs of more dimensions are flattened per row when the profile has one
feature per value, as ``servekit package`` writes it, or summarised per channel when it has one
feature per channel); the prediction is the first integer output for a class profile (labels;
else the first float output, reduced to its argmax) or the first float output for a score
profile. A profile that fits no input is logged and the version serves without drift
monitoring (its drift route answers 404 with the reason).

Per request the server calls :meth:`ModelProbe.observe` once, after the response is computed,
with views of the request's and response's arrays (no copy): binning in the Rust core, a few
microseconds. Statistics are computed off the request path: on scrape, on the drift route, and
every ``interval_s`` seconds on the hub's timer, which is what fires state-change alerts without
a scrape.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.registry import CollectorRegistry

from servekit.errors import InvalidArgumentError, NotFoundError, ServekitError, StorageError
from servekit.serving.repository import PROFILE_FILE
from servekit.telemetry import (
    AlertDispatcher,
    ModelTelemetry,
    ReferenceProfile,
    TelemetryHub,
)

if TYPE_CHECKING:
    from servekit.serving.model import ServedModel
    from servekit.serving.repository import ModelEntry

log = logging.getLogger("servekit.serving")
_INTEGER_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_FLOAT_TYPES = {"FP16", "FP32", "FP64"}


@dataclass(frozen=True)
class TelemetryOptions:
    """Telemetry settings of a server (the ``servekit serve`` flags).

    ``reference_profiles``: ``FILE`` or ``MODEL=FILE`` values; ``alert_webhook``: URL receiving
    each alert as a JSON POST; ``slo_p99_ms``: request p99 objective of every model;
    ``drift_window_rows`` / ``drift_window_seconds`` (the latter, when given, replaces the
    former): the drift window; ``interval_s``: seconds between evaluations on the timer;
    ``latency_window_s``: the latency sketches' sliding window.
    """

    reference_profiles: tuple[str, ...] = ()
    alert_webhook: str | None = None
    slo_p99_ms: float | None = None
    drift_window_rows: int = 10_000
    drift_window_seconds: float | None = None
    interval_s: float = 10.0
    latency_window_s: float = 60.0

    def validate(self) -> None:
        """Raises InvalidArgumentError naming the first bad setting."""
        checks = [
            ("--drift-window-rows", self.drift_window_rows, self.drift_window_rows >= 1),
            ("--telemetry-interval", self.interval_s, _positive(self.interval_s)),
            ("latency window", self.latency_window_s, _positive(self.latency_window_s)),
        ]
        if self.drift_window_seconds is not None:
            checks.append(
                (
                    "--drift-window-seconds",
                    self.drift_window_seconds,
                    _positive(self.drift_window_seconds),
                )
            )
        if self.slo_p99_ms is not None:
            checks.append(("--slo-p99-ms", self.slo_p99_ms, _positive(self.slo_p99_ms)))
        for flag, value, ok in checks:
            if not ok:
                raise InvalidArgumentError(f"{flag} must be a positive number, got {value}")


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class _Profile:
    profile: ReferenceProfile
    source: str


def load_profile(path: str | os.PathLike[str]) -> ReferenceProfile:
    """Read a reference profile file. Raises StorageError when it cannot be read and
    InvalidArgumentError when it is not a reference profile; both name the file."""
    try:
        return ReferenceProfile.load(path)
    except OSError as exc:
        raise StorageError(f"cannot read reference profile {path}: {exc.strerror}") from None
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"reference profile {path}: {exc}") from None


def parse_profile_flags(
    values: tuple[str, ...] | list[str],
) -> tuple[_Profile | None, dict[str, _Profile]]:
    """Load ``--reference-profile`` values: ``FILE`` (an existing file, for every model) or
    ``MODEL=FILE``. Returns the profile for every model (or None) and the per-model ones.
    Raises InvalidArgumentError for a second ``FILE``, a model named twice or a bad profile,
    StorageError for a missing file."""
    every: _Profile | None = None
    per_model: dict[str, _Profile] = {}
    for value in values:
        model, sep, file = value.partition("=")
        if os.path.exists(value) or not sep:
            if every is not None:
                raise InvalidArgumentError(
                    f"--reference-profile {value}: a profile for every model is already given "
                    f"({every.source}); name the model with MODEL=FILE"
                )
            every = _Profile(load_profile(value), value)
        else:
            if not model or not file:
                raise InvalidArgumentError(
                    f"--reference-profile {value!r}: expected FILE or MODEL=FILE"
                )
            if model in per_model:
                raise InvalidArgumentError(
                    f"--reference-profile: model '{model}' is given twice "
                    f"({per_model[model].source} and {file})"
                )
            per_model[model] = _Profile(load_profile(file), file)
    return every, per_model


class ModelProbe:
    """What a :class:`~servekit.serving.model.ServedModel` calls once per successful request:
    the version's telemetry and the tensors it monitors."""

    __slots__ = ("flatten", "input_name", "no_drift_reason", "output_name", "source", "telemetry")

    def __init__(
        self,
        telemetry: ModelTelemetry,
        input_name: str | None,
        output_name: str | None,
        flatten: bool,
        source: str | None,
        no_drift_reason: str,
    ) -> None:
        self.telemetry = telemetry
        self.input_name = input_name
        self.output_name = output_name
        self.flatten = flatten
        self.source = source
        self.no_drift_reason = no_drift_reason

    def observe(
        self,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        request_ns: int,
        queue_ns: int,
        compute_ns: int,
    ) -> None:
        """Record one request: the monitored input and output (views, not copies) and its
        latencies. Never raises for telemetry problems (ModelTelemetry counts and logs them)."""
        x = inputs.get(self.input_name) if self.input_name is not None else None
        if x is not None and self.flatten and x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        y = outputs.get(self.output_name) if self.output_name is not None else None
        self.telemetry.observe(
            x,
            y,
            request_s=request_ns * 1e-9,
            queue_s=queue_ns * 1e-9,
            compute_s=compute_ns * 1e-9,
        )

    def latency_json(self) -> dict[str, Any]:
        """The statistics extension's ``latency_quantiles`` field: per kind (request, queue,
        compute) the request count in the window and p50/p90/p99 in nanoseconds (null when the
        window is empty), with the window length and the sketches' relative accuracy."""
        tracker = self.telemetry.latency
        out: dict[str, Any] = {
            "window_seconds": tracker.window_seconds,
            "relative_accuracy": tracker.alpha,
        }
        for kind, s in tracker.summary().items():
            out[kind] = {
                "count": s.count,
                **{
                    f"{name}_ns": None if v is None else round(v * 1e9)
                    for name, v in (("p50", s.p50), ("p90", s.p90), ("p99", s.p99))
                },
            }
        return out


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    # Full shapes: batched models lead with -1; unbatched ones may too, or be one row.
    return tuple(shape[1:]) if len(shape) >= 2 else tuple(shape)


def _fit(shape: tuple[int, ...], features: int) -> bool | None:
    """How an input of full shape ``shape`` is monitored against ``features`` features:
    flattened per row (True), as is (False: 2-D, or per-channel summary), or not at all
    (None)."""
    row = _row_shape(shape)
    if len(row) >= 2 and row[0] == features and math.prod(row) != features:
        return False  # N x C x ...: DriftMonitor summarises each channel
    if any(d < 0 for d in row):
        return len(row) > 1
    if math.prod(row) == features:
        return len(row) > 1
    return None


def choose_tensors(model: ServedModel, profile: ReferenceProfile) -> tuple[str, bool, str | None]:
    """The input monitored (name, flattened per row or not) and the prediction output (or None)
    of ``model`` against ``profile``. Raises InvalidArgumentError when no input fits."""
    features = len(profile.features)
    chosen: tuple[str, bool] | None = None
    for spec in model.signature.inputs:
        if spec.datatype == "BYTES":
            continue
        flatten = _fit(tuple(spec.shape), features)
        if flatten is not None:
            chosen = (spec.name, flatten)
            break
    if chosen is None:
        shapes = ", ".join(f"'{t.name}' {list(t.shape)}" for t in model.signature.inputs)
        raise InvalidArgumentError(
            f"the profile has {features} features, but no numeric input has {features} values "
            f"or channels per row (inputs: {shapes})"
        )
    output = None
    prediction = profile.prediction
    if prediction is not None:
        outputs = model.signature.outputs
        integers = [t.name for t in outputs if t.datatype in _INTEGER_TYPES]
        floats = [t.name for t in outputs if t.datatype in _FLOAT_TYPES]
        candidates = (integers + floats) if prediction.kind == "classes" else floats
        output = candidates[0] if candidates else None
    return chosen[0], chosen[1], output


class ServingTelemetry:
    """The telemetry of every served model version: a :class:`TelemetryHub` (Prometheus
    gauges in :attr:`registry`, evaluation on a timer) and one alert dispatcher.

    The model repository calls :meth:`replace` whenever it installs or removes a model, so the
    hub follows loads, unloads and registry alias moves. Raises InvalidArgumentError or
    StorageError (naming the flag or file) for bad options or profiles.
    """

    def __init__(self, options: TelemetryOptions | None = None) -> None:
        self.options = options or TelemetryOptions()
        self.options.validate()
        self._every, self._per_model = parse_profile_flags(self.options.reference_profiles)
        self.alerts = AlertDispatcher(self.options.alert_webhook)
        self.hub = TelemetryHub()
        self.registry = CollectorRegistry(auto_describe=False)
        self.hub.register(self.registry)

    @property
    def profiled_models(self) -> list[str]:
        """Model names given a profile with ``MODEL=FILE``."""
        return sorted(self._per_model)

    def _profile_for(self, model: ServedModel) -> tuple[ReferenceProfile | None, str | None]:
        given = self._per_model.get(model.name) or self._every
        if given is not None:
            return given.profile, given.source
        path = model.reference_profile_path
        if path is None:
            return None, None
        try:
            return load_profile(path), str(path)
        except ServekitError as exc:
            log.error("model '%s' version %d: %s", model.name, model.version, exc)
            return None, None

    def attach(self, model: ServedModel) -> ModelProbe:
        """Create the telemetry of a served version, expose it and set ``model.telemetry``.
        Returns the probe. A profile that does not fit the model is logged and left out."""
        profile, source = self._profile_for(model)
        reason = (
            f"model '{model.name}' version {model.version} has no reference profile (package "
            f"it with servekit package, put {PROFILE_FILE} next to its model file, or start the "
            "server with --reference-profile)"
        )
        input_name = output_name = None
        flatten = False
        if profile is not None:
            try:
                input_name, flatten, output_name = choose_tensors(model, profile)
            except InvalidArgumentError as exc:
                reason = f"model '{model.name}' reference profile {source} does not fit: {exc}"
                log.error("%s; serving without drift monitoring", reason)
                profile = None
        o = self.options
        kwargs: dict[str, Any] = dict(
            drift_window_rows=o.drift_window_rows,
            drift_window_seconds=o.drift_window_seconds,
            slo_p99_ms=o.slo_p99_ms,
            latency_window_seconds=o.latency_window_s,
            alerts=self.alerts,
        )
        try:
            telemetry = ModelTelemetry(model.name, str(model.version), profile=profile, **kwargs)
        except InvalidArgumentError as exc:
            reason = f"model '{model.name}' reference profile {source} is unusable: {exc}"
            log.error("%s; serving without drift monitoring", reason)
            profile = input_name = output_name = None
            telemetry = ModelTelemetry(model.name, str(model.version), profile=None, **kwargs)
        if profile is not None:
            log.info(
                "model '%s' version %d: drift monitoring of input '%s'%s against %s",
                model.name,
                model.version,
                input_name,
                f" and output '{output_name}'" if output_name else "",
                source,
            )
        probe = ModelProbe(telemetry, input_name, output_name, flatten, source, reason)
        self.hub.add(telemetry)
        model.telemetry = probe
        return probe

    def detach(self, model: ServedModel) -> None:
        """Stop exposing a version's telemetry (requests still in flight on it may record)."""
        with contextlib.suppress(NotFoundError):
            self.hub.remove(model.name, str(model.version))

    def replace(self, old: ModelEntry | None, new: ModelEntry | None) -> None:
        """Follow a repository change: detach the versions of ``old``, attach those of
        ``new`` (either may be None)."""
        if old is not None:
            for model in old.versions.values():
                self.detach(model)
        if new is not None:
            for model in new.versions.values():
                self.attach(model)

    def drift(self, model: ServedModel) -> dict[str, Any]:
        """The drift route's body for a served version: model, version, profile source,
        monitored tensors and the drift report. Raises NotFoundError (with the reason) when the
        version has no drift monitoring."""
        probe = model.telemetry
        if probe is None:
            raise NotFoundError(
                f"model '{model.name}' version {model.version} has no telemetry attached"
            )
        body = probe.telemetry.drift_json()
        if body is None:
            raise NotFoundError(probe.no_drift_reason)
        return {
            **body,
            "reference_profile": probe.source,
            "monitored_input": probe.input_name,
            "monitored_output": probe.output_name,
        }

    def start(self) -> None:
        """Start evaluating every version on the timer (alerts fire without scrapes)."""
        self.hub.start(self.options.interval_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the timer and the alert dispatcher (queued alerts get one last attempt within
        ``timeout_s``). Blocking: call it off the event loop."""
        self.hub.stop(timeout_s)
        self.alerts.close(timeout_s)
