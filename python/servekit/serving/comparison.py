"""Live figures of a candidate: how its answers compare with production's on the same requests.

What is compared, per output tensor present in both answers with the same shape:

- an integer output (a label) is a classifier output: a row *agrees* when every value of the
  row is equal;
- a float output with more than one value per row (class scores) is a classifier output too: a
  row agrees when the top-1 (argmax over the row) is equal; its errors are recorded as well;
- a float output with one value per row is a regression output: no agreement, only errors.

Errors of a row: absolute ``max_j |c_j - p_j|`` and relative ``max_j |c_j - p_j| / max(|p_j|,
REL_FLOOR)`` over the row's values (``c`` candidate, ``p`` production). The overall
``agreement`` is the share of rows on which every classifier output agreed (None when the model
has no classifier output).

Counts (requests, rows, agreed rows, errors, drops) are exact since :attr:`since`; quantiles
(errors and latencies) are exact (numpy's linear interpolation) over the last ``window`` rows
or requests, so an offline computation over the same requests gives the same figures. A
shadow's worker thread records while the event loop reads (the read-out, the metrics): one
lock keeps every recording and :meth:`Comparison.to_dict` whole.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

#: Denominator floor of the relative error (production values near 0).
REL_FLOOR = 1e-6
#: Quantiles reported for errors and latencies.
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
_INTEGER_KINDS = "iub"


class Window:
    """The last ``size`` values of a series (float64 ring buffer) and its exact quantiles."""

    __slots__ = ("_buf", "_n", "_pos")

    def __init__(self, size: int) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0
        self._pos = 0

    def add(self, value: float) -> None:
        """Append one value (the oldest leaves when full)."""
        self._buf[self._pos] = value
        self._pos = (self._pos + 1) % len(self._buf)
        self._n = min(self._n + 1, len(self._buf))

    def extend(self, values: np.ndarray) -> None:
        """Append several values in order."""
        size = len(self._buf)
        values = np.asarray(values, dtype=np.float64).ravel()[-size:]
        k = len(values)
        end = self._pos + k
        if end <= size:
            self._buf[self._pos : end] = values
        else:
            first = size - self._pos
            self._buf[self._pos :] = values[:first]
            self._buf[: k - first] = values[first:]
        self._pos = end % size
        self._n = min(self._n + k, size)

    def __len__(self) -> int:
        return self._n

    def quantiles(self, scale: float = 1.0) -> dict[str, float | None]:
        """p50/p90/p99 and max of the window times ``scale`` (None each when empty)."""
        if self._n == 0:
            return {**{name: None for name, _ in QUANTILES}, "max": None}
        values = self._buf[: self._n] if self._n < len(self._buf) else self._buf
        qs = np.quantile(values, [q for _, q in QUANTILES])
        out: dict[str, float | None] = {
            name: float(v) * scale for (name, _), v in zip(QUANTILES, qs, strict=True)
        }
        out["max"] = float(values.max()) * scale
        return out


def output_kind(array: np.ndarray) -> str:
    """``label`` (integer), ``scores`` (float, several values per row) or ``regression``."""
    if array.dtype.kind in _INTEGER_KINDS:
        return "label"
    per_row = int(np.prod(array.shape[1:])) if array.ndim >= 2 else 1
    return "scores" if per_row > 1 else "regression"


def row_agreement(kind: str, candidate: np.ndarray, production: np.ndarray) -> np.ndarray | None:
    """Per row, whether the candidate agrees (None for a regression output)."""
    rows = production.shape[0] if production.ndim else 1
    c = candidate.reshape(rows, -1)
    p = production.reshape(rows, -1)
    if kind == "label":
        return np.all(c == p, axis=1)
    if kind == "scores":
        return np.argmax(c, axis=1) == np.argmax(p, axis=1)
    return None


def row_errors(candidate: np.ndarray, production: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the absolute and relative error (the module docstring's definitions)."""
    rows = production.shape[0] if production.ndim else 1
    c = candidate.reshape(rows, -1).astype(np.float64)
    p = production.reshape(rows, -1).astype(np.float64)
    diff = np.abs(c - p)
    rel = diff / np.maximum(np.abs(p), REL_FLOOR)
    return diff.max(axis=1), rel.max(axis=1)


class _OutputFigures:
    __slots__ = ("abs_error", "agreed", "kind", "rel_error", "rows")

    def __init__(self, kind: str, window: int) -> None:
        self.kind = kind
        self.rows = 0
        self.agreed = 0
        self.abs_error = Window(window) if kind != "label" else None
        self.rel_error = Window(window) if kind != "label" else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "rows": self.rows}
        classified = self.kind != "regression" and self.rows
        out["agreement"] = self.agreed / self.rows if classified else None
        if self.abs_error is not None and self.rel_error is not None:
            out["abs_error"] = self.abs_error.quantiles()
            out["rel_error"] = self.rel_error.quantiles()
        return out


class Comparison:
    """The live figures of one candidate against production (see the module docstring).

    A shadow records :meth:`compared` pairs; a canary records :meth:`served` requests (it
    answers instead of production, so there is nothing to compare). Both record failures with
    :meth:`failed` and, for shadows, drops with :meth:`dropped`.
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self.since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.started_ns = time.monotonic_ns()
        self.sampled = 0
        self.dropped = 0
        self.requests = 0
        self.rows = 0
        self.agreed_rows = 0
        self.mismatches = 0
        self.errors: dict[str, int] = {}
        self.outputs: dict[str, _OutputFigures] = {}
        self.candidate_latency = Window(window)
        self.production_latency = Window(window)
        self._lock = threading.Lock()

    def dropped_one(self) -> None:
        """Count a sampled request dropped because the shadow queue was full."""
        with self._lock:
            self.dropped += 1

    def failed(self, kind: str) -> None:
        """Count a failed candidate request (``kind``: the error's class name)."""
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def served(self, candidate_ns: int) -> None:
        """Record one request a canary answered, with its latency."""
        with self._lock:
            self.requests += 1
            self.candidate_latency.add(candidate_ns)

    def compared(
        self,
        candidate: dict[str, np.ndarray],
        production: dict[str, np.ndarray],
        candidate_ns: int,
        production_ns: int,
    ) -> None:
        """Record one request answered by both: agreement and errors per common output, and
        both latencies. Outputs missing from either side or of different shapes count as a
        ``mismatch`` error instead."""
        self.compared_batch(candidate, production, candidate_ns, [production_ns])

    def compared_batch(
        self,
        candidate: dict[str, np.ndarray],
        production: dict[str, np.ndarray],
        candidate_ns: int,
        production_ns: list[int],
    ) -> None:
        """:meth:`compared` for ``len(production_ns)`` requests at once, their rows in order in
        the arrays (one candidate run answered them all in ``candidate_ns``): the same figures
        as comparing them one by one."""
        requests = len(production_ns)
        with self._lock:
            if self._compare(candidate, production):
                self.requests += requests
                self.candidate_latency.extend(np.full(requests, candidate_ns, np.float64))
                self.production_latency.extend(np.asarray(production_ns, np.float64))
            else:
                self.mismatches += requests
                self.errors["OutputMismatch"] = self.errors.get("OutputMismatch", 0) + requests

    def _compare(self, candidate: dict[str, np.ndarray], production: dict[str, np.ndarray]) -> bool:
        # The rows' agreement and errors; False (nothing recorded) when the outputs mismatch.
        names = [n for n in production if n in candidate]
        if not names or any(candidate[n].shape != production[n].shape for n in names):
            return False
        rows = production[names[0]].shape[0] if production[names[0]].ndim else 1
        all_agree: np.ndarray | None = None
        for name in names:
            c, p = candidate[name], production[name]
            figures = self.outputs.get(name)
            if figures is None:
                figures = self.outputs[name] = _OutputFigures(output_kind(p), self.window)
            figures.rows += rows
            agree = row_agreement(figures.kind, c, p)
            if agree is not None:
                figures.agreed += int(agree.sum())
                all_agree = agree if all_agree is None else all_agree & agree
            if figures.abs_error is not None and figures.rel_error is not None:
                abs_err, rel_err = row_errors(c, p)
                figures.abs_error.extend(abs_err)
                figures.rel_error.extend(rel_err)
        self.rows += rows
        if all_agree is not None:
            self.agreed_rows += int(all_agree.sum())
        return True

    @property
    def agreement(self) -> float | None:
        """Share of compared rows where every classifier output agreed (None: no rows yet or
        no classifier output)."""
        classified = any(f.kind != "regression" for f in self.outputs.values())
        return self.agreed_rows / self.rows if self.rows and classified else None

    @property
    def error_count(self) -> int:
        """Failed candidate requests (every kind)."""
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the figures (the read-out route's per-candidate body)."""
        with self._lock:
            return self._to_dict()

    def _to_dict(self) -> dict[str, Any]:
        attempts = self.requests + self.error_count
        return {
            "since": self.since,
            "seconds": (time.monotonic_ns() - self.started_ns) / 1e9,
            "requests": self.requests,
            "rows": self.rows,
            "sampled": self.sampled,
            "dropped": self.dropped,
            "errors": self.error_count,
            "error_rate": self.error_count / attempts if attempts else 0.0,
            "errors_by_kind": dict(sorted(self.errors.items())),
            "agreement": self.agreement,
            "outputs": {n: f.to_dict() for n, f in sorted(self.outputs.items())},
            "latency_ms": {
                "candidate": self.candidate_latency.quantiles(1e-6),
                "production": self.production_latency.quantiles(1e-6)
                if len(self.production_latency)
                else None,
            },
            "window": self.window,
        }
