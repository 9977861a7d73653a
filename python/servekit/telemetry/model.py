"""The telemetry of one served model version: the only object the server talks to."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from servekit.errors import ServekitError
from servekit.telemetry.alerts import AlertDispatcher
from servekit.telemetry.drift import DriftMonitor, DriftReport, DriftThresholds
from servekit.telemetry.latency import Kind, LatencySummary, LatencyTracker
from servekit.telemetry.profile import ReferenceProfile

LOGGER = logging.getLogger("servekit.telemetry")


@dataclass(frozen=True)
class TelemetrySnapshot:
    """What one evaluation found: the drift report (None without a profile), the latency
    summary, and the two alert states."""

    drift: DriftReport | None
    latency: dict[Kind, LatencySummary]
    drift_detected: bool
    slo_violated: bool | None


class ModelTelemetry:
    """Drift and latency telemetry of one served model version.

    Server integration, all of it::

        tel = ModelTelemetry("digits", "1", profile=ReferenceProfile.load(path),
                             slo_p99_ms=50.0, alerts=AlertDispatcher(webhook_url))
        hub.add(tel)                      # TelemetryHub: Prometheus gauges, periodic evaluation
        # once per request or batch, after the response is computed (a few microseconds):
        tel.observe(inputs, outputs, request_s=..., queue_s=..., compute_s=...)
        # GET /v2/models/{m}/versions/{v}/drift:
        body = tel.drift_json()           # None when the version has no reference profile

    ``inputs``: the model's input tensor (see :mod:`servekit.telemetry.drift` for the shapes
    monitored); ``outputs``: predicted labels (1-D ints) or scores (1-D or 2-D floats), or None.
    :meth:`observe` never raises for telemetry problems: a batch that does not match the profile
    is skipped, counted in ``record_errors`` and logged once. Statistics are computed only in
    :meth:`evaluate` (called on scrape, by the hub's timer and by :meth:`drift_json`), which also
    emits an alert when the drift or SLO state changes.
    """

    def __init__(
        self,
        model: str,
        version: str,
        *,
        profile: ReferenceProfile | None = None,
        drift_window_rows: int | None = 10_000,
        drift_window_seconds: float | None = None,
        thresholds: DriftThresholds | None = None,
        feature_thresholds: dict[str, DriftThresholds] | None = None,
        slo_p99_ms: float | None = None,
        latency_window_seconds: float = 60.0,
        alerts: AlertDispatcher | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.drift = (
            DriftMonitor(
                profile,
                window_rows=drift_window_rows,
                window_seconds=drift_window_seconds,
                thresholds=thresholds,
                feature_thresholds=feature_thresholds,
            )
            if profile is not None
            else None
        )
        self.latency = LatencyTracker(window_seconds=latency_window_seconds, slo_p99_ms=slo_p99_ms)
        self.alerts = alerts
        self.record_errors = 0
        self._state_lock = threading.Lock()
        self._drift_detected = False
        self._slo_violated = False

    def observe(
        self,
        inputs: np.ndarray | None = None,
        outputs: np.ndarray | None = None,
        *,
        request_s: float | None = None,
        queue_s: float | None = None,
        compute_s: float | None = None,
    ) -> None:
        """Record one request or batch: its inputs and outputs for drift, its latencies (in
        seconds) for the sketches. Returns None; never raises for telemetry problems."""
        try:
            if self.drift is not None and (inputs is not None or outputs is not None):
                self.drift.record(inputs, outputs)
            self.latency.record(request_s=request_s, queue_s=queue_s, compute_s=compute_s)
        except ServekitError as exc:
            self.record_errors += 1
            if self.record_errors == 1:
                LOGGER.warning("telemetry of %s/%s skipped a batch: %s", *self.key, exc)

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.version)

    def evaluate(self) -> TelemetrySnapshot:
        """Compute the drift statistics and latency quantiles now, and emit an alert for each
        state (drift, SLO) that changed since the last evaluation."""
        report = self.drift.report() if self.drift is not None else None
        latency = self.latency.summary()
        slo = self.latency.slo_violated(latency)
        drift_detected = bool(report and report.drift_detected)
        alerts: list[dict[str, Any]] = []
        with self._state_lock:
            if drift_detected != self._drift_detected:
                self._drift_detected = drift_detected
                assert report is not None
                alerts.append(self._drift_alert(report))
            # No data in the window (None) keeps the last SLO state.
            if slo is not None and slo != self._slo_violated:
                self._slo_violated = slo
                alerts.append(self._slo_alert(slo, latency["request"]))
        if self.alerts is not None:
            for alert in alerts:
                self.alerts.emit(alert)
        return TelemetrySnapshot(report, latency, drift_detected, slo)

    def drift_json(self) -> dict[str, Any] | None:
        """The drift route's body: model, version and the drift report's JSON form; None when
        this version has no reference profile."""
        if self.drift is None:
            return None
        snapshot = self.evaluate()
        assert snapshot.drift is not None
        return {"model_name": self.model, "model_version": self.version, **snapshot.drift.to_dict()}

    def _drift_alert(self, report: DriftReport) -> dict[str, Any]:
        prediction = report.prediction
        return {
            "event": "drift",
            "state": "drift" if report.drift_detected else "ok",
            "model": self.model,
            "version": self.version,
            "dataset_drift": report.dataset_drift,
            "drifted_features": report.drifted_features,
            "judged_features": report.judged_features,
            "prediction_drift": bool(prediction and prediction.drifted),
            "window_rows": report.window_rows,
        }

    def _slo_alert(self, violated: bool, request: LatencySummary) -> dict[str, Any]:
        return {
            "event": "slo",
            "state": "violation" if violated else "ok",
            "model": self.model,
            "version": self.version,
            "p99_ms": None if request.p99 is None else request.p99 * 1000.0,
            "objective_p99_ms": self.latency.slo_p99_ms,
            "window_requests": request.count,
        }
