"""Live figures of the served models: a short history sampled from the data plane.

The sampler keeps, per served model version, the last :data:`HISTORY` samples of its
statistics (Triton's counters and the telemetry's latency quantiles). A sample is taken when
the Live route is read and the last one is at least :data:`MIN_INTERVAL_S` old: nothing runs
while nobody looks, and any number of open pages cost one sample per second. Rates are the
counter differences between consecutive samples over the time between them.

Errors are counted by Triton's failure reason; the HTTP status each reason answers with is in
:data:`REASON_STATUS` (``servekit.serving.model`` maps queue-full and timeouts to REJECTED, bad
input to OTHER, failures of the model to BACKEND).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from servekit.serving.dataplane import DataPlane

HISTORY = 300
MIN_INTERVAL_S = 1.0
#: Triton's failure reason -> the HTTP status the request was answered with.
REASON_STATUS = {"OTHER": 400, "REJECTED": 503, "BACKEND": 500}
_QUANTILES = ("p50", "p90", "p99")


def _quantiles_ms(stats: dict[str, Any], kind: str) -> dict[str, float | None]:
    q = (stats.get("latency_quantiles") or {}).get(kind) or {}
    return {p: None if q.get(f"{p}_ns") is None else q[f"{p}_ns"] / 1e6 for p in _QUANTILES}


class LiveSampler:
    """Samples the data plane's statistics into a bounded history per model version."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        # The lock guards the histories and the last sample time: routes may run on threads.
        self._lock = threading.Lock()
        self._last: float | None = None
        self._history: dict[tuple[str, str], deque[dict[str, Any]]] = {}

    def sample(self, now: float | None = None) -> None:
        """Take a sample now unless the last one is younger than :data:`MIN_INTERVAL_S`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is not None and now - self._last < MIN_INTERVAL_S:
                return
            self._last = now
            wall = time.time()
            seen = set()
            for stats in self.plane.statistics()["model_stats"]:
                key = (stats["name"], stats["version"])
                seen.add(key)
                history = self._history.setdefault(key, deque(maxlen=HISTORY))
                history.append(_point(stats, now, wall, history[-1] if history else None))
            for key in set(self._history) - seen:
                del self._history[key]

    def view(self) -> list[dict[str, Any]]:
        """Per model version: the current totals, failures by reason with their HTTP status,
        batch-size figures and the sampled series (oldest first). Samples first."""
        self.sample()
        with self._lock:
            histories = {k: list(v) for k, v in self._history.items()}
        out = []
        for stats in self.plane.statistics()["model_stats"]:
            key = (stats["name"], stats["version"])
            inf = stats["inference_stats"]
            failures = self._failures(stats["name"], stats["version"])
            out.append(
                {
                    "name": stats["name"],
                    "version": stats["version"],
                    "requests": inf["success"]["count"] + inf["fail"]["count"],
                    "successes": inf["success"]["count"],
                    "rows": stats["inference_count"],
                    "executions": stats["execution_count"],
                    "errors": [
                        {"reason": r, "status": REASON_STATUS.get(r, 500), "count": n}
                        for r, n in sorted(failures.items())
                    ],
                    "batch_sizes": [
                        {"batch_size": b["batch_size"], "executions": b["compute_infer"]["count"]}
                        for b in stats["batch_stats"]
                    ],
                    "latency_ms": {
                        k: _quantiles_ms(stats, k) for k in ("request", "queue", "compute")
                    },
                    "series": [
                        {k: v for k, v in p.items() if not k.startswith("_")}
                        for p in histories.get(key, [])
                    ],
                }
            )
        return out

    def _failures(self, name: str, version: str) -> dict[str, int]:
        model = self.plane.model(name, version)
        return dict(model.stats.failures)


def _point(
    stats: dict[str, Any], now: float, wall: float, previous: dict[str, Any] | None
) -> dict[str, Any]:
    inf = stats["inference_stats"]
    counters = {
        "_ok": inf["success"]["count"],
        "_fail": inf["fail"]["count"],
        "_rows": stats["inference_count"],
        "_exec": stats["execution_count"],
        "_queue_n": inf["queue"]["count"],
        "_queue_ns": inf["queue"]["ns"],
        "_t": now,
    }
    point: dict[str, Any] = {
        "time": wall,
        "request_rate": None,
        "error_rate": None,
        "mean_batch_size": None,
        "mean_queue_ms": None,
        **{f"{k}_ms": v for k, v in _quantiles_ms(stats, "request").items()},
        **counters,
    }
    if previous is not None:
        dt = now - previous["_t"]
        ok = counters["_ok"] - previous["_ok"]
        fail = counters["_fail"] - previous["_fail"]
        executions = counters["_exec"] - previous["_exec"]
        queued = counters["_queue_n"] - previous["_queue_n"]
        point["request_rate"] = (ok + fail) / dt
        point["error_rate"] = fail / dt
        if executions > 0:
            point["mean_batch_size"] = (counters["_rows"] - previous["_rows"]) / executions
        if queued > 0:
            point["mean_queue_ms"] = (counters["_queue_ns"] - previous["_queue_ns"]) / queued / 1e6
    return point
