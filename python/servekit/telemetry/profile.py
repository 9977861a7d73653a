"""Reference profiles: the distribution of a model's inputs and predictions at packaging time.

Binning rule, shared by the profile, the live drift monitor and the offline report: a feature
has sorted, unique ``cuts`` c_0 < ... < c_{B-2} and B bins (-inf, c_0), [c_0, c_1), ...,
[c_{B-2}, +inf); a value's bin is ``searchsorted(cuts, value, side="right")``. Cuts are the
reference's quantiles at 1/B, ..., (B-1)/B (B = 10 by default), duplicates removed, so live values
outside the reference range still land in the first or last bin. NaN values are not binned; they
count towards ``missing_rate``.

JSON form (``format`` and ``version`` identify it)::

    {"format": "servekit-reference-profile", "version": 1, "rows": 1797,
     "features": [{"name": "x0", "cuts": [...], "frequencies": [...], "mean": 0.0, "std": 0.0,
                   "min": 0.0, "max": 0.0, "missing_rate": 0.0}, ...],
     "prediction": {"kind": "classes", "labels": [0, 1, ...], "frequencies": [...]}
                 | {"kind": "scores", "cuts": [...], "frequencies": [...]} | null}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from servekit.errors import InvalidArgumentError

FORMAT = "servekit-reference-profile"
VERSION = 1
DEFAULT_BINS = 10


def bin_indices(values: np.ndarray, cuts: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bin index of each value under the module's binning rule (NaN gives len(cuts) + 1)."""
    idx = np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="right")
    return np.where(np.isnan(values), len(cuts) + 1, idx)


def quantile_cuts(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Unique reference quantiles at 1/bins, ..., (bins-1)/bins of the finite ``values``."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def _frequencies(indices: np.ndarray, nbins: int) -> list[float]:
    counts = np.bincount(indices[indices < nbins], minlength=nbins).astype(np.float64)
    total = counts.sum()
    return (counts / total if total else counts).tolist()


@dataclass(frozen=True)
class FeatureProfile:
    """Reference distribution of one input feature."""

    name: str
    cuts: list[float]
    frequencies: list[float]
    mean: float
    std: float
    min: float
    max: float
    missing_rate: float


@dataclass(frozen=True)
class PredictionProfile:
    """Reference distribution of the predictions: class frequencies or a score histogram."""

    kind: Literal["classes", "scores"]
    frequencies: list[float]
    labels: list[int] | None = None
    cuts: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "frequencies": self.frequencies}
        if self.kind == "classes":
            out["labels"] = self.labels
        else:
            out["cuts"] = self.cuts
        return out


@dataclass(frozen=True)
class ReferenceProfile:
    """A reference profile (see the module docstring for the binning rule and JSON form)."""

    rows: int
    features: list[FeatureProfile]
    prediction: PredictionProfile | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "rows": self.rows,
            "features": [asdict(f) for f in self.features],
            "prediction": self.prediction.to_dict() if self.prediction else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form to ``path``."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        """Parse the JSON form; InvalidArgumentError when it is not a version-1 profile."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidArgumentError(f"not a servekit reference profile (format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise InvalidArgumentError(
                f"unsupported reference profile version {data.get('version')!r}: expected {VERSION}"
            )
        try:
            features = [FeatureProfile(**f) for f in data["features"]]
            pred = data.get("prediction")
            prediction = PredictionProfile(**pred) if pred else None
            return cls(int(data["rows"]), features, prediction)
        except (KeyError, TypeError) as exc:
            raise InvalidArgumentError(f"malformed reference profile: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        """Read a profile written by :meth:`save`. Raises OSError for a file that cannot be
        read and InvalidArgumentError, naming the file, for one that is not a profile."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"{os.fspath(path)}: not a reference profile (not a UTF-8 JSON file)"
            ) from None
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"{os.fspath(path)}: not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidArgumentError):
                raise
            raise InvalidArgumentError(
                f"{os.fspath(path)}: not a reference profile ({type(exc).__name__}: {exc})"
            ) from None


def build_reference_profile(
    inputs: np.ndarray,
    predictions: np.ndarray | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
) -> ReferenceProfile:
    """Profile a 2-D array of reference inputs (rows x features) and, optionally, predictions.

    Integer ``predictions`` (1-D) are profiled as class frequencies; float predictions as a
    score histogram with quantile cuts (2-D scores are reduced to their row maximum).
    Raises InvalidArgumentError for inputs that are not 2-D, empty, or names of the wrong count.
    """
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidArgumentError(
            f"reference inputs must be a non-empty 2-D array (rows x features), got shape {x.shape}"
        )
    if bins < 2:
        raise InvalidArgumentError(f"bins must be at least 2, got {bins}")
    names = (
        list(feature_names) if feature_names is not None else [f"x{i}" for i in range(x.shape[1])]
    )
    if len(names) != x.shape[1]:
        raise InvalidArgumentError(f"{len(names)} feature names for {x.shape[1]} features")
    features = []
    for j, name in enumerate(names):
        col = x[:, j]
        finite = col[np.isfinite(col)]
        cuts = quantile_cuts(col, bins)
        stats = (
            (float(finite.mean()), float(finite.std()), float(finite.min()), float(finite.max()))
            if finite.size
            else (float("nan"),) * 4
        )
        features.append(
            FeatureProfile(
                name=name,
                cuts=cuts.tolist(),
                frequencies=_frequencies(bin_indices(col, cuts), len(cuts) + 1),
                mean=stats[0],
                std=stats[1],
                min=stats[2],
                max=stats[3],
                missing_rate=float(np.isnan(col).mean()),
            )
        )
    return ReferenceProfile(int(x.shape[0]), features, _prediction_profile(predictions, bins))


def _prediction_profile(predictions: np.ndarray | None, bins: int) -> PredictionProfile | None:
    if predictions is None:
        return None
    p = np.asarray(predictions)
    if p.dtype.kind in "iub":
        labels, counts = np.unique(p.reshape(-1), return_counts=True)
        return PredictionProfile(
            "classes", (counts / counts.sum()).tolist(), labels=[int(v) for v in labels]
        )
    scores = p.max(axis=1) if p.ndim == 2 else p.reshape(-1)
    scores = scores.astype(np.float64)
    cuts = quantile_cuts(scores, bins)
    return PredictionProfile(
        "scores", _frequencies(bin_indices(scores, cuts), len(cuts) + 1), cuts=cuts.tolist()
    )
