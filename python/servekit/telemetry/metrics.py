"""Prometheus gauges of every monitored model version (a ``prometheus_client`` Collector).

Gauges (labels ``model`` and ``version`` on each):

- ``servekit_feature_drift{feature, statistic="psi"|"ks"|"js"}``: per monitored feature (at
  most ``MAX_MONITORED_FEATURES`` per version, so at most 768 series);
- ``servekit_prediction_drift{statistic="psi"|"ks"|"js"}``;
- ``servekit_drift_detected``: 1 when the dataset or the predictions drift;
- ``servekit_drift_window_rows``: rows in the drift window;
- ``servekit_latency_quantile_seconds{kind="request"|"queue"|"compute",
  quantile="0.5"|"0.9"|"0.99"}``;
- ``servekit_slo_violation``: 1 when request p99 is above the objective (versions with one).

Statistics are computed on scrape (:meth:`ModelTelemetry.evaluate`), which also emits alerts
on state changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from servekit.telemetry.latency import QUANTILES
from servekit.telemetry.model import ModelTelemetry, TelemetrySnapshot

_MV = ["model", "version"]
_STATISTICS = ("psi", "ks", "js")


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "feature": GaugeMetricFamily(
            "servekit_feature_drift",
            "Drift statistic of an input feature over the drift window",
            labels=[*_MV, "feature", "statistic"],
        ),
        "prediction": GaugeMetricFamily(
            "servekit_prediction_drift",
            "Drift statistic of the predictions over the drift window",
            labels=[*_MV, "statistic"],
        ),
        "detected": GaugeMetricFamily(
            "servekit_drift_detected",
            "1 when the dataset (at least half the features) or the predictions drift",
            labels=_MV,
        ),
        "rows": GaugeMetricFamily(
            "servekit_drift_window_rows", "Rows in the drift window", labels=_MV
        ),
        "latency": GaugeMetricFamily(
            "servekit_latency_quantile_seconds",
            "Latency quantile over the sliding window (relative accuracy 1%)",
            labels=[*_MV, "kind", "quantile"],
        ),
        "slo": GaugeMetricFamily(
            "servekit_slo_violation",
            "1 when request latency p99 is above the model's objective",
            labels=_MV,
        ),
    }


def _add(families: dict[str, GaugeMetricFamily], tel: ModelTelemetry, s: TelemetrySnapshot) -> None:
    mv = [tel.model, tel.version]
    if s.drift is not None:
        for f in s.drift.features:
            if f.statistics is not None:
                for stat in _STATISTICS:
                    value = getattr(f.statistics, stat)
                    families["feature"].add_metric([*mv, f.name, stat], value)
        p = s.drift.prediction
        if p is not None and p.statistics is not None:
            for stat in _STATISTICS:
                families["prediction"].add_metric([*mv, stat], getattr(p.statistics, stat))
        families["detected"].add_metric(mv, float(s.drift_detected))
        families["rows"].add_metric(mv, float(s.drift.window_rows))
    for kind, summary in s.latency.items():
        for q, value in zip(QUANTILES, (summary.p50, summary.p90, summary.p99), strict=True):
            if value is not None:
                families["latency"].add_metric([*mv, kind, str(q)], value)
    if s.slo_violated is not None:
        families["slo"].add_metric(mv, float(s.slo_violated))


class TelemetryCollector(Collector):
    """Collects the gauges of the model versions ``source()`` returns, evaluating each."""

    def __init__(self, source: Callable[[], Iterable[ModelTelemetry]]) -> None:
        self._source = source

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metric families without samples (so registering does not evaluate)."""
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample set per model version, computed now."""
        families = _families()
        for tel in self._source():
            _add(families, tel, tel.evaluate())
        yield from families.values()
