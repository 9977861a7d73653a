"""Side-by-side latency and throughput measurement of several model variants.

Every variant sees the same inputs; measurement rounds are interleaved (variant A, B, C, A, B,
C, ...) so that noise from a shared machine hits all variants alike. Each round runs one
variant for a fixed slice of time at one batch size; the figures pool all of a variant's calls
and the spread is the relative interquartile range of the per-round medians.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from servekit.errors import InvalidArgumentError

Predict = Callable[[np.ndarray], object]


@dataclass(frozen=True)
class BatchFigures:
    """Latency percentiles (ms), throughput (rows/s) and spread at one batch size."""

    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_rows_s: float
    spread: float
    calls: int


@dataclass
class Timings:
    """Raw call durations (seconds) and per-round medians of one variant at one batch size."""

    durations: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)

    def figures(self, batch_size: int) -> BatchFigures:
        d = np.asarray(self.durations)
        p50, p90, p99 = np.percentile(d, [50, 90, 99]) * 1e3
        rm = np.asarray(self.round_medians)
        q1, q3 = np.percentile(rm, [25, 75])
        spread = float((q3 - q1) / np.median(rm)) if len(rm) > 1 and np.median(rm) > 0 else 0.0
        return BatchFigures(
            batch_size=batch_size,
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            throughput_rows_s=float(batch_size * len(d) / d.sum()) if d.sum() > 0 else 0.0,
            spread=spread,
            calls=len(d),
        )


def batches(data: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``batch_size`` rows, cycling through ``data`` (at least one)."""
    if len(data) == 0:
        raise InvalidArgumentError("benchmark data is empty")
    reps = -(-batch_size // len(data))
    pool = np.concatenate([data] * reps) if reps > 1 else data
    count = max(1, len(pool) // batch_size)
    return [np.ascontiguousarray(pool[i * batch_size : (i + 1) * batch_size]) for i in range(count)]


def measure(
    predictors: Mapping[str, Predict],
    data: np.ndarray,
    batch_sizes: Sequence[int],
    *,
    seconds_per_batch_size: float = 1.0,
    rounds: int = 5,
    warmup_calls: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[BatchFigures]]:
    """Measure every predictor at every batch size, interleaved; returns figures per key.

    Each (variant, batch size) gets ``rounds`` slices of ``seconds_per_batch_size / rounds``
    seconds (at least one call per slice) after ``warmup_calls`` unmeasured calls.
    """
    if not predictors:
        raise InvalidArgumentError("nothing to benchmark: no variants given")
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        msg = f"batch sizes must be positive integers, got {list(batch_sizes)}"
        raise InvalidArgumentError(msg)
    out: dict[str, list[BatchFigures]] = {k: [] for k in predictors}
    slice_s = seconds_per_batch_size / max(rounds, 1)
    for bs in batch_sizes:
        inputs = batches(data, bs)
        timings = {k: Timings() for k in predictors}
        for predict in predictors.values():
            for i in range(warmup_calls):
                predict(inputs[i % len(inputs)])
        for r in range(rounds):
            for key, predict in predictors.items():
                t = timings[key]
                start = len(t.durations)
                deadline = time.perf_counter() + slice_s
                i = r
                while True:
                    x = inputs[i % len(inputs)]
                    t0 = time.perf_counter()
                    predict(x)
                    t1 = time.perf_counter()
                    t.durations.append(t1 - t0)
                    i += 1
                    if t1 >= deadline:
                        break
                t.round_medians.append(float(np.median(t.durations[start:])))
            if progress:
                progress(f"batch {bs}: round {r + 1}/{rounds}")
        for key in predictors:
            out[key].append(timings[key].figures(bs))
    return out
