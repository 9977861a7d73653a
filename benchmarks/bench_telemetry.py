"""Telemetry cost on the request path, against a vectorised numpy implementation.

Measures, for a 64-feature tabular model (digits-sized rows, 10 reference quantile bins):
- per-request recording cost (one row per request) of servekit's DriftMonitor, of the whole
  ModelTelemetry.observe (drift + predictions + three latencies), and of a numpy implementation
  of the same count window (goal: servekit <= 5 us);
- batch recording throughput (64-row batches);
- the cost of computing a report (off the request path);
- window state memory and process RSS before and after 10^6 rows (goal: independent of rows).

Writes benchmarks/results/telemetry.json. ``--quick`` runs fewer iterations.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _results import write_results
from servekit.telemetry import DriftMonitor, ModelTelemetry, build_reference_profile

FEATURES = 64
WINDOW = 10_000


class NumpyWindow:
    """The baseline: the same count window written with numpy (padded cut matrix compare,
    ring buffer of bin indices, per-bin counts updated with np.add.at)."""

    def __init__(self, cuts: list[list[float]], rows: int) -> None:
        width = max(len(c) for c in cuts)
        self.cuts = np.full((len(cuts), width), np.inf)
        for j, c in enumerate(cuts):
            self.cuts[j, : len(c)] = c
        self.offsets = np.arange(len(cuts)) * (width + 1)
        self.counts = np.zeros(len(cuts) * (width + 1), dtype=np.int64)
        self.ring = np.full((rows, len(cuts)), -1, dtype=np.int64)
        self.head = 0
        self.rows = 0

    def record(self, x: np.ndarray) -> None:
        bins = (x[:, :, None] >= self.cuts[None]).sum(axis=2) + self.offsets
        for row in bins:
            if self.rows == len(self.ring):
                np.add.at(self.counts, self.ring[self.head], -1)
            else:
                self.rows += 1
            self.ring[self.head] = row
            np.add.at(self.counts, row, 1)
            self.head = (self.head + 1) % len(self.ring)


def per_call_us(fn, args_list, repeat: int) -> float:
    """Best-of-3 mean microseconds per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(repeat):
            fn(*args_list[i % len(args_list)])
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    repeat = 5_000 if args.quick else 50_000
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
    labels = rng.integers(0, 10, size=len(reference))
    profile = build_reference_profile(reference, labels)

    monitor = DriftMonitor(profile, window_rows=WINDOW)
    telemetry = ModelTelemetry("bench", "1", profile=profile, drift_window_rows=WINDOW)
    baseline = NumpyWindow([f.cuts for f in profile.features], WINDOW)
    rows = [(rng.normal(size=(1, FEATURES)).astype(np.float32),) for _ in range(256)]
    preds = [np.array([i % 10]) for i in range(256)]
    # Fill the windows first so that every measured call also evicts a row.
    for w in (monitor, baseline):
        w.record(rng.normal(size=(WINDOW, FEATURES)).astype(np.float32))

    results: dict[str, float] = {}
    results["servekit_record_us"] = per_call_us(monitor.record, rows, repeat)
    results["servekit_core_record_us"] = per_call_us(monitor._inputs.record, rows, repeat)
    observe_args = [(r[0], p) for r, p in zip(rows, preds, strict=True)]

    def observe(x, p):
        telemetry.observe(x, p, request_s=0.002, queue_s=0.0004, compute_s=0.0001)

    results["servekit_observe_us"] = per_call_us(observe, observe_args, repeat)
    results["numpy_record_us"] = per_call_us(baseline.record, rows, max(repeat // 10, 500))

    batch = [(rng.normal(size=(64, FEATURES)).astype(np.float32),)]
    batch_us = per_call_us(monitor.record, batch, max(repeat // 20, 200))
    results["servekit_batch64_rows_per_s"] = 64 / batch_us * 1e6
    np_batch_us = per_call_us(baseline.record, batch, max(repeat // 200, 20))
    results["numpy_batch64_rows_per_s"] = 64 / np_batch_us * 1e6
    results["report_ms"] = per_call_us(monitor.report, [()], 200) / 1000

    # Memory after 10^6 rows: the window state must not grow.
    big = DriftMonitor(profile, window_rows=WINDOW)
    state_before, rss_before = big.state_bytes, rss_bytes()
    chunk = rng.normal(size=(10_000, FEATURES)).astype(np.float32)
    for _ in range(100):
        big.record(chunk)
    report = big.report()
    assert report.total_rows == 1_000_000 and report.window_rows == WINDOW
    results["state_bytes_empty"] = state_before
    results["state_bytes_after_1e6_rows"] = big.state_bytes
    results["rss_growth_bytes_1e6_rows"] = rss_bytes() - rss_before

    r = results
    table = [
        ("record 1 row x 64 features (us)", f"{r['servekit_record_us']:.2f}",
         f"{r['numpy_record_us']:.2f}"),
        ("  core call only (us)", f"{r['servekit_core_record_us']:.2f}", ""),
        ("  observe: +predictions, 3 latencies (us)", f"{r['servekit_observe_us']:.2f}", ""),
        ("batches of 64 rows (rows/s)", f"{r['servekit_batch64_rows_per_s']:,.0f}",
         f"{r['numpy_batch64_rows_per_s']:,.0f}"),
        ("report, 64 features (ms)", f"{r['report_ms']:.3f}", ""),
        ("window state, empty (bytes)", f"{r['state_bytes_empty']:,}", ""),
        ("window state after 1e6 rows (bytes)", f"{r['state_bytes_after_1e6_rows']:,}", ""),
        ("RSS growth over 1e6 rows (bytes)", f"{r['rss_growth_bytes_1e6_rows']:,}", ""),
    ]  # fmt: skip
    print(f"{'measure':<44}{'servekit':>14}{'numpy':>14}")
    for name, ours, theirs in table:
        print(f"{name:<44}{ours:>14}{theirs:>14}")
    out = Path(__file__).parent / "results" / "telemetry.json"
    write_results(out, {"quick": args.quick, **results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
