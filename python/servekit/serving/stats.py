"""Per model-version statistics: Triton's statistics extension and the metrics' source.

Request outcomes are recorded on the event loop thread (after the awaited model call), so
plain integers suffice there; model executions are recorded from the threads that run the
model, under a lock. Metrics are rendered from these at scrape time.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

#: Histogram bucket upper bounds.
SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Duration:
    """A count of events and their total time in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics) with fixed upper bounds."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, cumulative count)`` pairs ending with ``+Inf``."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass
class ModelStats:
    """Statistics of one served model version.

    compute_input and compute_output time the data plane's tensor decoding and encoding per
    request (inputs go to ONNX Runtime without a further copy); compute_infer times each model
    execution, also per batch size.
    """

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    pending: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    batches: dict[int, Duration] = field(default_factory=dict)
    request_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS_BUCKETS))
    queue_seconds: Histogram = field(default_factory=lambda: Histogram(SECONDS_BUCKETS))
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, total_ns: int, rows: int) -> None:
        """Count a successful request of ``rows`` inferences that took ``total_ns``."""
        self.success.add(total_ns)
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.request_seconds.observe(total_ns / 1e9)

    def record_failure(self, total_ns: int, reason: str) -> None:
        """Count a failed request; ``reason`` is Triton's label (REJECTED, BACKEND, ...)."""
        self.fail.add(total_ns)
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.request_seconds.observe(total_ns / 1e9)

    def record_io(self, input_ns: int, output_ns: int) -> None:
        """Count one request's tensor decoding (compute_input) and encoding (compute_output)."""
        self.compute_input.add(input_ns)
        self.compute_output.add(output_ns)

    def record_queue(self, ns: int) -> None:
        """Count one request's wait before its model execution started (any thread)."""
        with self._lock:
            self.queue.add(ns)
            self.queue_seconds.observe(ns / 1e9)

    def record_execution(self, batch: int, infer_ns: int) -> None:
        """Count one model execution of ``batch`` rows that took ``infer_ns`` (any thread)."""
        with self._lock:
            self._record_execution(batch, infer_ns)

    def _record_execution(self, batch: int, infer_ns: int) -> None:
        # The lock is held.
        self.execution_count += 1
        self.compute_infer.add(infer_ns)
        self.batch_size.observe(batch)
        per = self.batches.get(batch)
        if per is None:
            per = self.batches[batch] = Duration()
        per.add(infer_ns)

    def to_triton(self, name: str, version: str) -> dict[str, Any]:
        """The model's entry of Triton's statistics response."""
        zero = {"count": 0, "ns": 0}
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": b.count, "ns": 0},
                    "compute_infer": b.to_dict(),
                    "compute_output": {"count": b.count, "ns": 0},
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
