"""Telemetry: reference profiles captured at packaging time, drift and latency monitoring."""

from servekit.telemetry.profile import (
    FeatureProfile,
    PredictionProfile,
    ReferenceProfile,
    bin_indices,
    build_reference_profile,
)

__all__ = [
    "FeatureProfile",
    "PredictionProfile",
    "ReferenceProfile",
    "bin_indices",
    "build_reference_profile",
]
