"""Streaming data and prediction drift against a reference profile.

:class:`DriftMonitor` bins every recorded value into the reference profile's bins (the rule in
:mod:`servekit.telemetry.profile`) inside the Rust core: O(log bins) per value, no allocation,
a window state of fixed size. Statistics are computed only when :meth:`DriftMonitor.report` is
called (on scrape, on a timer, for the drift route), never while recording.

Per feature, over the window:

- PSI with the reference proportions, proportions below 1e-4 raised to 1e-4;
- the Kolmogorov-Smirnov statistic between the binned distributions and its asymptotic p-value
  for the window size and the reference row count. Binning resolution: the binned statistic is
  never above the exact two-sample statistic of the same samples (``scipy.stats.ks_2samp``) and
  at most the largest reference or window bin proportion below it (0.1 + noise for the default
  10 quantile bins);
- the Jensen-Shannon distance, base 2 (in [0, 1]).

A feature drifts when its ``method`` statistic passes its threshold (defaults: PSI > 0.2, JS
distance > 0.1, KS p-value < 0.05; ``method="psi"`` by default, because the KS p-value flags
ever smaller differences as the window grows). The dataset drifts when at least
``dataset_share`` (default one half, Evidently's rule) of the judged features drift. Features
with fewer than ``min_values`` values in the window are not judged.

Inputs: a 2-D array (rows x features, feature order of the profile) is tabular. A 1-D array of
as many values as features is one row. Any array with 3 or more dimensions is summarised per
row first (:func:`summarize_inputs`: the mean over every axis after the second, i.e. the
per-channel mean of ``N x C x ...`` images or signals), and the profile must have been built
from the same summary of the reference data.

Label cardinality: at most ``max_features`` (default and cap :data:`MAX_MONITORED_FEATURES`)
features are monitored, the first ones of the profile; the rest are listed as unmonitored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from servekit._core import DriftWindow
from servekit.errors import InvalidArgumentError
from servekit.telemetry.profile import ReferenceProfile

MAX_MONITORED_FEATURES = 256
"""Cap on monitored features per model version: 256 features x 3 statistics bound the
``servekit_feature_drift`` series of one model version to 768."""

Method = Literal["psi", "js", "ks"]
_RECORDABLE = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int64))


@dataclass(frozen=True)
class DriftThresholds:
    """Thresholds of one feature (or of the predictions) and the statistic that decides."""

    psi: float = 0.2
    js: float = 0.1
    ks_pvalue: float = 0.05
    method: Method = "psi"

    def __post_init__(self) -> None:
        if self.method not in ("psi", "js", "ks"):
            raise InvalidArgumentError(
                f"unknown drift method {self.method!r}: expected 'psi', 'js' or 'ks'"
            )
        for name in ("psi", "js", "ks_pvalue"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise InvalidArgumentError(f"drift threshold {name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class StatisticValues:
    """Drift statistics of one column over the window."""

    psi: float
    ks: float
    ks_pvalue: float
    js: float

    def exceeded(self, t: DriftThresholds) -> dict[str, bool]:
        """Which statistics pass their thresholds."""
        return {"psi": self.psi > t.psi, "js": self.js > t.js, "ks": self.ks_pvalue < t.ks_pvalue}


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one feature (``name``) or of the predictions (``name`` = "prediction")."""

    name: str
    statistics: StatisticValues | None
    thresholds: DriftThresholds
    drifted: bool
    window_size: int
    reference_size: int
    judged: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping: per statistic its value, threshold and whether it passed it."""
        stats = self.statistics
        t = self.thresholds
        exceeded = stats.exceeded(t) if stats else {}
        return {
            "name": self.name,
            "drifted": self.drifted,
            "judged": self.judged,
            "method": t.method,
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "statistics": None
            if stats is None
            else {
                "psi": {"value": stats.psi, "threshold": t.psi, "exceeded": exceeded["psi"]},
                "js": {"value": stats.js, "threshold": t.js, "exceeded": exceeded["js"]},
                "ks": {
                    "value": stats.ks,
                    "pvalue": stats.ks_pvalue,
                    "threshold": t.ks_pvalue,
                    "exceeded": exceeded["ks"],
                },
            },
        }


@dataclass(frozen=True)
class DriftReport:
    """Drift of every monitored feature, of the predictions, and of the dataset."""

    window: dict[str, Any]
    window_rows: int
    total_rows: int
    reference_rows: int
    features: list[ColumnDrift]
    prediction: ColumnDrift | None
    drifted_features: list[str]
    judged_features: int
    dataset_share: float
    dataset_drift: bool
    unmonitored_features: list[str] = field(default_factory=list)

    @property
    def drift_detected(self) -> bool:
        """The model's drift state: the dataset drifts or its predictions do."""
        return self.dataset_drift or bool(self.prediction and self.prediction.drifted)

    def feature(self, name: str) -> ColumnDrift:
        """The drift of feature ``name``; InvalidArgumentError when it is not monitored."""
        for f in self.features:
            if f.name == name:
                return f
        raise InvalidArgumentError(f"feature {name!r} is not monitored")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by the drift route and written by ``servekit drift report``."""
        share = len(self.drifted_features) / self.judged_features if self.judged_features else 0.0
        return {
            "window": self.window,
            "window_rows": self.window_rows,
            "total_rows": self.total_rows,
            "reference_rows": self.reference_rows,
            "dataset_drift": self.dataset_drift,
            "drift_detected": self.drift_detected,
            "drifted_features": self.drifted_features,
            "drifted_share": share,
            "dataset_share_threshold": self.dataset_share,
            "judged_features": self.judged_features,
            "features": [f.to_dict() for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "unmonitored_features": self.unmonitored_features,
        }


def _sum_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up window states (:meth:`DriftMonitor.state`) of the same columns and bins."""
    if not states:
        raise InvalidArgumentError("no drift window state to merge")
    counts = [list(c) for c in states[0]["counts"]]
    for state in states[1:]:
        other = state["counts"]
        if len(other) != len(counts) or any(
            len(a) != len(b) for a, b in zip(other, counts, strict=True)
        ):
            raise InvalidArgumentError("drift window states of different columns or bins")
        counts = [
            [a + b for a, b in zip(x, y, strict=True)] for x, y in zip(counts, other, strict=True)
        ]
    return {
        "rows": sum(int(s["rows"]) for s in states),
        "total_rows": sum(int(s["total_rows"]) for s in states),
        "counts": counts,
    }


def summarize_inputs(inputs: np.ndarray) -> np.ndarray:
    """Per-row summary of an input with 3 or more dimensions: the mean over every axis after
    the second, as float64 of shape (rows, axis-1 length) (the per-channel mean of N x C x H x W
    images). Raises InvalidArgumentError for fewer than 3 dimensions."""
    x = np.asarray(inputs)
    if x.ndim < 3:
        raise InvalidArgumentError(f"summaries are for inputs of 3+ dimensions, got {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2, dtype=np.float64)


def _recordable(x: np.ndarray) -> np.ndarray:
    """``x`` itself when the core reads its dtype in place, else a float64 copy."""
    if x.dtype in _RECORDABLE:
        return x
    try:
        return x.astype(np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"cannot monitor values of dtype {x.dtype}") from None


class DriftMonitor:
    """Sliding-window drift of a model's inputs (and predictions) against a reference profile.

    ``window_rows`` (default 10,000) keeps the last rows; ``window_seconds``, when given,
    replaces it and keeps the rows of the last seconds in ``buckets`` time buckets; both None
    keeps every row (offline reports). ``feature_thresholds`` overrides ``thresholds`` per
    feature name; ``prediction_thresholds`` applies to the predictions. Thread-safe: servers may
    record from several threads. Raises InvalidArgumentError for a bad configuration.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        *,
        window_rows: int | None = 10_000,
        window_seconds: float | None = None,
        buckets: int = 12,
        thresholds: DriftThresholds | None = None,
        feature_thresholds: Mapping[str, DriftThresholds] | None = None,
        prediction_thresholds: DriftThresholds | None = None,
        dataset_share: float = 0.5,
        min_values: int = 100,
        max_features: int = MAX_MONITORED_FEATURES,
    ) -> None:
        if not profile.features:
            raise InvalidArgumentError("the reference profile has no features")
        if not 1 <= max_features <= MAX_MONITORED_FEATURES:
            raise InvalidArgumentError(
                f"max_features must be in 1..{MAX_MONITORED_FEATURES}, got {max_features}"
            )
        if not 0 < dataset_share <= 1:
            raise InvalidArgumentError(f"dataset_share must be in (0, 1], got {dataset_share}")
        if window_seconds is not None:
            window_rows = None
        unknown = set(feature_thresholds or {}) - set(profile.feature_names)
        if unknown:
            raise InvalidArgumentError(f"thresholds for unknown features: {sorted(unknown)}")
        self.profile = profile
        self._n_features = len(profile.features)
        monitored = profile.features[:max_features]
        self.feature_names = [f.name for f in monitored]
        self.unmonitored_features = [f.name for f in profile.features[max_features:]]
        default = thresholds or DriftThresholds()
        self._thresholds = [(feature_thresholds or {}).get(n, default) for n in self.feature_names]
        self._prediction_thresholds = prediction_thresholds or default
        self.dataset_share = dataset_share
        self.min_values = min_values
        self.window = (
            {"kind": "rows", "rows": window_rows}
            if window_rows is not None
            else {"kind": "time", "seconds": window_seconds, "buckets": buckets}
            if window_seconds is not None
            else {"kind": "cumulative"}
        )
        spec = {"rows": window_rows, "seconds": window_seconds, "buckets": buckets}
        self._inputs = DriftWindow(
            [("cuts", f.cuts) for f in monitored],
            [f.frequencies for f in monitored],
            profile.rows,
            **spec,
        )
        pred = profile.prediction
        self._predictions: DriftWindow | None = None
        if pred is not None:
            if pred.kind == "classes":
                column = ("labels", [float(v) for v in pred.labels or []])
                reference = [*pred.frequencies, 0.0]  # the extra bin of unseen labels
            else:
                column = ("cuts", list(pred.cuts or []))
                reference = list(pred.frequencies)
            self._predictions = DriftWindow([column], [reference], profile.rows, **spec)

    def _tabular(self, inputs: np.ndarray) -> np.ndarray:
        x = inputs if isinstance(inputs, np.ndarray) else np.asarray(inputs)
        if x.ndim >= 3:
            x = summarize_inputs(x)
        elif x.ndim == 1 and x.shape[0] == self._n_features:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self._n_features:
            raise InvalidArgumentError(
                f"inputs of shape {x.shape} do not match the profile's {self._n_features} "
                "features (expected rows x features)"
            )
        if len(self.unmonitored_features):
            x = x[:, : len(self.feature_names)]
        return _recordable(x)

    def _prediction_column(self, predictions: np.ndarray) -> np.ndarray:
        p = predictions if isinstance(predictions, np.ndarray) else np.asarray(predictions)
        kind = self.profile.prediction.kind if self.profile.prediction else None
        if p.ndim == 2 and p.shape[1] > 1:
            # Class scores reduce to their argmax (the label when labels are 0..K-1); score
            # outputs to their row maximum, as the profile builder does.
            p = p.argmax(axis=1) if kind == "classes" else p.max(axis=1)
        if p.ndim > 2 or (p.ndim == 2 and p.shape[1] != 1):
            raise InvalidArgumentError(f"predictions of shape {p.shape}: expected (rows,)")
        return _recordable(p.reshape(-1, 1))

    def record(
        self,
        inputs: np.ndarray | None,
        predictions: np.ndarray | None = None,
        *,
        now_ns: int | None = None,
    ) -> None:
        """Count a batch of inputs (see the module docstring for accepted shapes) and, when the
        profile has a prediction reference, its predictions. float64, float32 and int64 arrays
        are read in place; other dtypes are converted first. ``now_ns`` (tests) overrides the
        monotonic clock of time windows. Raises InvalidArgumentError for a shape that does not
        match the profile."""
        if inputs is not None:
            self._inputs.record(self._tabular(inputs), now_ns)
        if predictions is not None and self._predictions is not None:
            self._predictions.record(self._prediction_column(predictions), now_ns)

    def report(self, *, now_ns: int | None = None) -> DriftReport:
        """Statistics of the current window against the reference (O(features x bins))."""
        rows, total, stats = self._inputs.statistics(now_ns)
        prediction = None
        if self._predictions is not None:
            _, _, (prediction,) = self._predictions.statistics(now_ns)
        return self._report(rows, total, stats, prediction)

    def state(self, *, now_ns: int | None = None) -> dict[str, Any]:
        """The window's binned state, JSON-ready: ``{"inputs": {"rows", "total_rows",
        "counts"}, "predictions": the same or None}`` (``counts``: per column its bin counts).
        States of monitors built from the same profile and settings add up
        (:meth:`merged_report`)."""

        def one(window: DriftWindow) -> dict[str, Any]:
            rows, total, counts = window.state(now_ns)
            return {"rows": rows, "total_rows": total, "counts": counts}

        return {
            "inputs": one(self._inputs),
            "predictions": None if self._predictions is None else one(self._predictions),
        }

    def merged_report(self, states: list[dict[str, Any]]) -> DriftReport:
        """The report of the rows of several windows together (e.g. one per server replica):
        their :meth:`state` bin counts added, judged with this monitor's profile and
        thresholds. Exactly the report one monitor holding all those rows would give. Raises
        InvalidArgumentError for a state of another shape (other profile or columns)."""
        try:
            inputs = _sum_states([s["inputs"] for s in states])
            predictions = (
                _sum_states([s["predictions"] for s in states])
                if self._predictions is not None
                else None
            )
            stats = self._inputs.statistics_of(inputs["counts"])
            prediction = None
            if self._predictions is not None and predictions is not None:
                (prediction,) = self._predictions.statistics_of(predictions["counts"])
        except InvalidArgumentError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"not a drift window state: {exc!r}") from None
        return self._report(inputs["rows"], inputs["total_rows"], stats, prediction)

    def _report(
        self,
        rows: int,
        total: int,
        stats: list[tuple[int, float, float, float, float] | None],
        prediction_stats: tuple[int, float, float, float, float] | None,
    ) -> DriftReport:
        features = [
            self._column(name, s, t)
            for name, s, t in zip(self.feature_names, stats, self._thresholds, strict=True)
        ]
        prediction = None
        if self._predictions is not None:
            prediction = self._column("prediction", prediction_stats, self._prediction_thresholds)
        judged = [f for f in features if f.judged]
        drifted = [f.name for f in judged if f.drifted]
        return DriftReport(
            window=dict(self.window),
            window_rows=rows,
            total_rows=total,
            reference_rows=self.profile.rows,
            features=features,
            prediction=prediction,
            drifted_features=drifted,
            judged_features=len(judged),
            dataset_share=self.dataset_share,
            dataset_drift=bool(judged) and len(drifted) >= self.dataset_share * len(judged),
            unmonitored_features=list(self.unmonitored_features),
        )

    def _column(
        self, name: str, raw: tuple[int, float, float, float, float] | None, t: DriftThresholds
    ) -> ColumnDrift:
        if raw is None:
            return ColumnDrift(name, None, t, False, 0, self.profile.rows, False)
        n, psi, ks, ks_p, js = raw
        stats = StatisticValues(psi, ks, ks_p, js)
        judged = n >= self.min_values
        drifted = judged and stats.exceeded(t)[t.method]
        return ColumnDrift(name, stats, t, drifted, n, self.profile.rows, judged)

    def histogram(self, feature: str) -> tuple[list[float], np.ndarray, np.ndarray]:
        """``(cuts, reference proportions, window proportions)`` of a monitored feature.
        Raises InvalidArgumentError for an unknown or unmonitored feature."""
        if feature not in self.feature_names:
            raise InvalidArgumentError(f"feature {feature!r} is not monitored")
        j = self.feature_names.index(feature)
        counts = np.asarray(self._inputs.counts(j), dtype=np.float64)
        total = counts.sum()
        f = self.profile.features[j]
        return f.cuts, np.asarray(f.frequencies), counts / total if total else counts

    def prediction_histogram(self) -> tuple[dict[str, Any], np.ndarray, np.ndarray] | None:
        """``(bins, reference proportions, window proportions)`` of the predictions, or None
        without a prediction reference. ``bins`` is ``{"labels": [...]}`` (plus one last bin
        of unseen labels) for classes, ``{"cuts": [...]}`` for scores."""
        pred = self.profile.prediction
        if self._predictions is None or pred is None:
            return None
        counts = np.asarray(self._predictions.counts(0), dtype=np.float64)
        total = counts.sum()
        if pred.kind == "classes":
            bins: dict[str, Any] = {"labels": list(pred.labels or [])}
            reference = np.asarray([*pred.frequencies, 0.0])
        else:
            bins = {"cuts": list(pred.cuts or [])}
            reference = np.asarray(pred.frequencies)
        return bins, reference, counts / total if total else counts

    def clear(self) -> None:
        """Forget every recorded row (e.g. after retraining on the drifted data)."""
        self._inputs.clear()
        if self._predictions is not None:
            self._predictions.clear()

    @property
    def state_bytes(self) -> int:
        """Bytes of window state (inputs and predictions): fixed when the monitor is created."""
        pred = self._predictions.state_bytes if self._predictions is not None else 0
        return self._inputs.state_bytes + pred
