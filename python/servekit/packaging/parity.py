"""Parity of a variant with its source: output differences, top-1 agreement, metric change.

``max_rel_diff`` is the largest absolute difference divided by the largest absolute source
output (a scale-relative error, stable where outputs cross zero).
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

    def to_dict(self) -> dict[str, float | None]:
        """The JSON-ready mapping."""
        return asdict(self)


#: Default tolerance of each variant kind. Exact conversions get tight output bounds; lossy
#: variants (quantized, pruned, distilled) are judged on agreement and the metric.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel=1e-3, min_agreement=0.99),
    "torchscript": Tolerance(max_rel=1e-4, min_agreement=0.999),
    "fp16": Tolerance(max_rel=2e-2, min_agreement=0.98, max_metric_drop=0.01),
    "int8-dynamic": Tolerance(min_agreement=0.95, max_metric_drop=0.02),
    "int8-static": Tolerance(min_agreement=0.93, max_metric_drop=0.03),
    "pruned": Tolerance(min_agreement=0.85, max_metric_drop=0.05),
    "distilled": Tolerance(min_agreement=0.8, max_metric_drop=0.08),
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
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every checked limit holds."""
        return not self.failures

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
        data["metric_change"] = self.metric_change
        data["passed"] = self.passed
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
    regressors get R^2 with labels. Raises InvalidArgumentError when the shapes differ.
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
    )
    return replace(result, failures=_failures(result, tolerance))


def _failures(r: ParityResult, tol: Tolerance) -> list[str]:
    out = []
    if not (np.isfinite(r.max_abs_diff)):
        out.append("variant outputs hold NaN or infinite values")
    if tol.max_abs is not None and r.max_abs_diff > tol.max_abs:
        out.append(f"max abs diff {r.max_abs_diff:.3g} > {tol.max_abs:.3g}")
    if tol.max_rel is not None and r.max_rel_diff > tol.max_rel:
        out.append(f"max rel diff {r.max_rel_diff:.3g} > {tol.max_rel:.3g}")
    if (
        tol.min_agreement is not None
        and r.top1_agreement is not None
        and r.top1_agreement < tol.min_agreement
    ):
        out.append(f"top-1 agreement {r.top1_agreement:.4f} < {tol.min_agreement:.4f}")
    change = r.metric_change
    if tol.max_metric_drop is not None and change is not None and -change > tol.max_metric_drop:
        out.append(f"{r.metric} drop {-change:.4f} > {tol.max_metric_drop:.4f}")
    return out
