"""Parity of a variant with its source: output differences, top-1 agreement, metric change.

Every variant gets at least one numeric check, so parity never passes without measuring:

- ``max_rel_diff`` is the largest absolute difference divided by the largest absolute source
  output (a scale-relative error, stable where outputs cross zero);
- ``spread_err`` scales the error to the spread (standard deviation) of the source's outputs
  on the sample rows: for a regressor the *largest* absolute error, for a classifier the
  *mean* absolute error of its probabilities or logits (rows near a decision boundary may
  legitimately flip, so one row's error says little there, while agreement bounds the flips);
- ``top1_agreement`` (classifiers) and, with labels, the metric (accuracy or R^2).

``parity.json`` lists each check that ran as ``{"name", "value", "threshold", "passed"}``.
A variant for which no check could run is ``not-verified``, never ``passed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError


@dataclass(frozen=True)
class Tolerance:
    """Limits a variant must stay within; None means not checked.

    ``max_metric_drop`` is in metric units (0.005 = half an accuracy point).
    """

    max_abs: float | None = None
    max_rel: float | None = None
    min_agreement: float | None = None
    max_metric_drop: float | None = None
    max_spread_err: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """The JSON-ready mapping."""
        return asdict(self)


#: Default tolerance of each variant kind. Exact conversions get tight output bounds; lossy
#: variants (quantized, pruned, distilled) are judged on agreement, the metric (with labels)
#: and an error bound scaled to the spread of the source's outputs, which always runs.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-3, min_agreement=0.99, max_spread_err=1e-3),
    "torchscript": Tolerance(max_rel=1e-4, min_agreement=0.999, max_spread_err=1e-3),
    "fp16": Tolerance(max_rel=2e-2, min_agreement=0.98, max_metric_drop=0.01, max_spread_err=0.05),
    "int8-dynamic": Tolerance(min_agreement=0.95, max_metric_drop=0.02, max_spread_err=0.25),
    "int8-static": Tolerance(min_agreement=0.93, max_metric_drop=0.03, max_spread_err=0.3),
    "pruned": Tolerance(min_agreement=0.85, max_metric_drop=0.05, max_spread_err=0.5),
    "distilled": Tolerance(min_agreement=0.8, max_metric_drop=0.08, max_spread_err=1.0),
}


@dataclass(frozen=True)
class Check:
    """One check that ran: its measured value, its threshold and the verdict.

    ``upper`` True: the value must not exceed the threshold (errors, drops); False: it must
    reach it (agreement)."""

    name: str
    value: float
    threshold: float
    upper: bool = True

    @property
    def passed(self) -> bool:
        """True when the value is finite and on the right side of the threshold."""
        if not np.isfinite(self.value):
            return False
        return self.value <= self.threshold if self.upper else self.value >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The JSON form listed in ``parity.json``."""
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def tolerances(overrides: Mapping[str, Tolerance] | None) -> dict[str, Tolerance]:
    """DEFAULT_TOLERANCES updated with ``overrides``; InvalidArgumentError for an unknown kind."""
    merged = dict(DEFAULT_TOLERANCES)
    for kind, tol in (overrides or {}).items():
        if kind not in merged:
            raise InvalidArgumentError(
                f"no tolerance for variant kind {kind!r}: expected one of {', '.join(merged)}"
            )
        if not isinstance(tol, Tolerance):
            raise InvalidArgumentError(f"tolerance for {kind!r} must be a Tolerance, got {tol!r}")
        merged[kind] = tol
    return merged


@dataclass(frozen=True)
class ParityResult:
    """How a variant's outputs compare with its source's on the held-out rows."""

    kind: str
    output: str
    rows: int
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float | None
    metric: str | None
    source_metric: float | None
    variant_metric: float | None
    tolerance: Tolerance
    spread: float = 0.0
    spread_err: float = 0.0
    checks: list[Check] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True when at least one check ran."""
        return bool(self.checks)

    @property
    def passed(self) -> bool:
        """True when at least one check ran and every one held."""
        return self.verified and not self.failures

    @property
    def status(self) -> str:
        """``passed``, ``failed`` or ``not-verified`` (no check could run)."""
        if self.failures:
            return "failed"
        return "passed" if self.checks else "not-verified"

    @property
    def metric_change(self) -> float | None:
        """variant metric - source metric (negative: the variant is worse)."""
        if self.source_metric is None or self.variant_metric is None:
            return None
        return self.variant_metric - self.source_metric

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored as ``parity.json`` next to the artifact."""
        data = asdict(self)
        data["tolerance"] = self.tolerance.to_dict()
        data["checks"] = [c.to_dict() for c in self.checks]
        data["metric_change"] = self.metric_change
        data["passed"] = self.passed
        data["status"] = self.status
        return data


def metric_value(metric: str, predicted: np.ndarray, labels: np.ndarray) -> float:
    """accuracy (share of equal values) or r2 (coefficient of determination)."""
    if metric == "accuracy":
        return float(np.mean(predicted == labels))
    y = labels.astype(np.float64)
    residual = float(np.sum((y - predicted.reshape(-1).astype(np.float64)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - residual / total if total > 0 else 0.0


def compare(
    kind: str,
    output: str,
    source: np.ndarray,
    variant: np.ndarray,
    tolerance: Tolerance,
    *,
    classes: np.ndarray | None,
    labels: np.ndarray | None,
) -> ParityResult:
    """Compare variant scores with source scores (same shape) and check ``tolerance``.

    Classifier scores (``classes`` given) also get top-1 agreement and, with labels, accuracy;
    regressors get R^2 with labels. Every limit of ``tolerance`` that applies becomes a Check
    (see the module docs). Raises InvalidArgumentError when the shapes differ.
    """
    src = np.asarray(source, dtype=np.float64)
    var = np.asarray(variant, dtype=np.float64).reshape(src.shape[0], -1)
    src = src.reshape(src.shape[0], -1)
    if src.shape != var.shape:
        raise InvalidArgumentError(
            f"{kind}: variant output {output!r} has shape {var.shape}, source {src.shape}"
        )
    diff = np.abs(src - var)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(src).max()) if src.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    # The spread of the source's outputs; a constant source falls back to its magnitude.
    spread = float(src.std()) if src.size else 0.0
    spread = spread if spread > 0 else (scale if scale > 0 else 1.0)
    error = (float(diff.mean()) if classes is not None else max_abs) if diff.size else 0.0
    agreement = metric = src_metric = var_metric = None
    if classes is not None:
        src_top, var_top = src.argmax(axis=1), var.argmax(axis=1)
        agreement = float(np.mean(src_top == var_top))
        if labels is not None:
            metric = "accuracy"
            src_metric = metric_value(metric, classes[src_top], labels)
            var_metric = metric_value(metric, classes[var_top], labels)
    elif labels is not None:
        metric = "r2"
        src_metric = metric_value(metric, src[:, 0], labels)
        var_metric = metric_value(metric, var[:, 0], labels)
    result = ParityResult(
        kind,
        output,
        int(src.shape[0]),
        max_abs,
        max_rel,
        agreement,
        metric,
        src_metric,
        var_metric,
        tolerance,
        spread,
        error / spread,
    )
    checks = _checks(result, tolerance)
    failures = [_failure(c) for c in checks if not c.passed]
    if not np.isfinite(max_abs):
        failures.insert(0, "variant outputs hold NaN or infinite values")
    return replace(result, checks=checks, failures=failures)


def _checks(r: ParityResult, tol: Tolerance) -> list[Check]:
    out = []
    if tol.max_abs is not None:
        out.append(Check("max_abs_diff", r.max_abs_diff, tol.max_abs))
    if tol.max_rel is not None:
        out.append(Check("max_rel_diff", r.max_rel_diff, tol.max_rel))
    if tol.max_spread_err is not None:
        # Classifiers: mean error of the scores; regressors: largest error (module docs).
        name = "mean_score_err/spread" if r.top1_agreement is not None else "max_abs_err/spread"
        out.append(Check(name, r.spread_err, tol.max_spread_err))
    if tol.min_agreement is not None and r.top1_agreement is not None:
        out.append(Check("top1_agreement", r.top1_agreement, tol.min_agreement, upper=False))
    change = r.metric_change
    if tol.max_metric_drop is not None and change is not None:
        out.append(Check(f"{r.metric}_drop", -change, tol.max_metric_drop))
    return out


def _failure(c: Check) -> str:
    side = ">" if c.upper else "<"
    return f"{c.name} {c.value:.4g} {side} {c.threshold:.4g}"
