"""Request, queue and compute latency of one model version over a sliding window.

Each kind is a DDSketch-style sketch in the Rust core (``servekit._core.LatencySketch``):
logarithmic buckets with relative accuracy ``alpha`` (default 0.01): a reported quantile is
within 1% of the recorded sample's quantile of the same rank (``numpy.quantile(...,
method="lower")``) for latencies from 100 ns to 10^5 s. The window is a ring of ``slots``
sub-sketches covering ``window_seconds`` of a monotonic clock (default 60 s in 12 slots of 5 s:
the quantiles cover the last 55 to 60 seconds). Recording is O(1) and allocation-free; the state
has a fixed size (about 5.5 KiB per slot and kind at alpha = 0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from servekit._core import LatencySketch
from servekit.errors import InvalidArgumentError

Kind = Literal["request", "queue", "compute"]
KINDS: tuple[Kind, ...] = ("request", "queue", "compute")
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class LatencySummary:
    """Quantiles of one latency kind over the window, in seconds (None when it is empty)."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99}


class LatencyTracker:
    """Latency sketches of one model version, with an optional p99 objective on request
    latency (``slo_p99_ms``). Thread-safe. Raises InvalidArgumentError for a bad setting."""

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        slots: int = 12,
        alpha: float = 0.01,
        slo_p99_ms: float | None = None,
    ) -> None:
        if slo_p99_ms is not None and not slo_p99_ms > 0:
            raise InvalidArgumentError(f"slo_p99_ms must be > 0, got {slo_p99_ms}")
        self.slo_p99_ms = slo_p99_ms
        self.alpha = alpha
        self.window_seconds = window_seconds
        self._sketches = {k: LatencySketch(alpha, window_seconds, slots) for k in KINDS}

    def record(
        self,
        *,
        request_s: float | None = None,
        queue_s: float | None = None,
        compute_s: float | None = None,
        now_ns: int | None = None,
    ) -> None:
        """Count the latencies given, in seconds (>= 0). Raises InvalidArgumentError for a
        negative or NaN latency."""
        sk = self._sketches
        if request_s is not None:
            sk["request"].record(request_s, now_ns)
        if queue_s is not None:
            sk["queue"].record(queue_s, now_ns)
        if compute_s is not None:
            sk["compute"].record(compute_s, now_ns)

    def summary(self, *, now_ns: int | None = None) -> dict[Kind, LatencySummary]:
        """p50/p90/p99 and count of each kind over the window ending now."""
        out: dict[Kind, LatencySummary] = {}
        for kind, sketch in self._sketches.items():
            count, (p50, p90, p99) = sketch.quantiles(list(QUANTILES), now_ns)
            out[kind] = LatencySummary(count, p50, p90, p99)
        return out

    def slo_violated(self, summary: dict[Kind, LatencySummary] | None = None) -> bool | None:
        """Whether request p99 is above the objective; None without an objective or data."""
        if self.slo_p99_ms is None:
            return None
        p99 = (summary or self.summary())["request"].p99
        return None if p99 is None else p99 * 1000.0 > self.slo_p99_ms

    @property
    def state_bytes(self) -> int:
        """Bytes of sketch state: fixed when the tracker is created."""
        return sum(s.state_bytes for s in self._sketches.values())
