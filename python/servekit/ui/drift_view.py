"""Drift of the served models as the Drift page shows it: the drift route's report of every
served version, each monitored feature's reference and window histograms, the predictions'
histograms, and the log of recent alerts."""

from __future__ import annotations

from typing import Any

from servekit.errors import NotFoundError
from servekit.serving.dataplane import DataPlane


def _version_drift(plane: DataPlane, name: str, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "version": version}
    try:
        out["report"] = plane.drift(name, version)
    except NotFoundError as exc:  # no profile, or telemetry off: the page says why
        return {**out, "report": None, "reason": str(exc)}
    probe = plane.model(name, version).telemetry
    monitor = probe.telemetry.drift if probe is not None else None
    histograms: dict[str, Any] = {}
    prediction = None
    if monitor is not None:
        for feature in monitor.feature_names:
            cuts, reference, window = monitor.histogram(feature)
            histograms[feature] = {
                "cuts": list(cuts),
                "reference": reference.tolist(),
                "window": window.tolist(),
            }
        found = monitor.prediction_histogram()
        if found is not None:
            bins, reference, window = found
            prediction = {**bins, "reference": reference.tolist(), "window": window.tolist()}
    return {**out, "histograms": histograms, "prediction_histogram": prediction}


def drift_view(plane: DataPlane) -> dict[str, Any]:
    """Per served version its drift report (the drift route's body, or None and the reason)
    with histograms, and the alert log (newest last)."""
    versions = [(e.name, str(v)) for e in plane.repository.entries() for v in sorted(e.versions)]
    telemetry = plane.repository.telemetry
    return {
        "telemetry": telemetry is not None,
        "models": [_version_drift(plane, n, v) for n, v in versions],
        "alerts": telemetry.alerts.recent() if telemetry is not None else [],
    }
