"""Telemetry: reference profiles captured at packaging time, drift and latency monitoring."""

from servekit.telemetry.alerts import AlertDispatcher
from servekit.telemetry.drift import (
    MAX_MONITORED_FEATURES,
    ColumnDrift,
    DriftMonitor,
    DriftReport,
    DriftThresholds,
    StatisticValues,
    summarize_inputs,
)
from servekit.telemetry.hub import TelemetryHub
from servekit.telemetry.latency import LatencySummary, LatencyTracker
from servekit.telemetry.metrics import TelemetryCollector
from servekit.telemetry.model import ModelTelemetry, TelemetrySnapshot
from servekit.telemetry.profile import (
    FeatureProfile,
    PredictionProfile,
    ReferenceProfile,
    bin_indices,
    build_reference_profile,
)

__all__ = [
    "MAX_MONITORED_FEATURES",
    "AlertDispatcher",
    "ColumnDrift",
    "DriftMonitor",
    "DriftReport",
    "DriftThresholds",
    "FeatureProfile",
    "LatencySummary",
    "LatencyTracker",
    "ModelTelemetry",
    "PredictionProfile",
    "ReferenceProfile",
    "StatisticValues",
    "TelemetryCollector",
    "TelemetryHub",
    "TelemetrySnapshot",
    "bin_indices",
    "build_reference_profile",
    "summarize_inputs",
]
