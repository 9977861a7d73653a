"""Serving throughput with telemetry on vs off, and the per-request cost of the server's probe.

``servekit serve`` serves the digits MLP from model_repo/ (with its reference profile: drift
monitoring of 64 features and the predicted label, latency sketches, evaluation every second)
and, in the same run, the same model with ``--no-telemetry``. ``wrk`` drives each with one-row
binary v2 requests at concurrency 64; the two servers alternate for ``--rounds`` rounds and the
median of each is compared (goal: telemetry on >= 95% of off). In-process, the probe's
``observe`` for one 64-feature row is timed (goal <= 5 us).

    python benchmarks/bench_telemetry_serving.py [--quick] [--duration S] [--rounds N]

Prints a table and writes benchmarks/results/telemetry_serving.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_results
from bench_serving import free_port, request_bodies, stop, wait_ready, wrk

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "telemetry_serving.json"
CONCURRENCY = 64


def probe_cost(iterations: int) -> float:
    """Microseconds per ``ModelProbe.observe`` of one 64-feature row with its label."""
    from servekit.serving.telemetry import ModelProbe
    from servekit.telemetry import ModelTelemetry, ReferenceProfile

    profile = ReferenceProfile.load(ROOT / "model_repo" / "digits" / "1" / "reference_profile.json")
    tel = ModelTelemetry("digits", "1", profile=profile)
    probe = ModelProbe(tel, "input", "label", False, None, "")
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    inputs, outputs = {"input": x}, {"label": np.array([[3]], dtype=np.int64)}
    for _ in range(1000):
        probe.observe(inputs, outputs, 100_000, 20_000, 40_000)
    start = time.perf_counter()
    for _ in range(iterations):
        probe.observe(inputs, outputs, 100_000, 20_000, 40_000)
    return (time.perf_counter() - start) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point, 2 rounds")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    rounds = args.rounds or (2 if args.quick else 3)
    if shutil.which("wrk") is None:
        sys.exit("bench_telemetry_serving: needs wrk (Debian/Ubuntu: apt-get install wrk)")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
    )
    modes = {"on": ["--telemetry-interval", "1"], "off": ["--no-telemetry"]}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        shutil.copytree(ROOT / "model_repo" / "digits", repo / "digits")
        x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
        body, headers = request_bodies(x, tmp, "digits")["binary"]
        for round_ in range(rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                port = free_port()
                command = [sys.executable, "-m", "servekit", "serve", "--model-repo", str(repo)]
                proc = subprocess.Popen(
                    [*command, "--port", str(port), *modes[mode]],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    wait_ready(port, proc)
                    wrk(port, "digits", body, headers, CONCURRENCY, 1, tmp)  # warm-up
                    r = wrk(port, "digits", body, headers, CONCURRENCY, duration, tmp)
                finally:
                    stop(proc)
                runs.append({"telemetry": mode, "round": round_, **r})
                print(
                    f"round {round_} telemetry {mode:3}: {r['rps']:8.0f} req/s  "
                    f"p50 {r['p50_us'] / 1e3:6.2f} ms  p99 {r['p99_us'] / 1e3:6.2f} ms  "
                    f"errors {r['errors'] + r['non2xx']}",
                    flush=True,
                )
    median = {
        mode: statistics.median(r["rps"] for r in runs if r["telemetry"] == mode)
        for mode in ("off", "on")
    }
    ratio = median["on"] / median["off"]
    # Rounds pair an "on" and an "off" run back to back: their ratios cancel slow load drift.
    paired = [
        next(r["rps"] for r in runs if r["round"] == i and r["telemetry"] == "on")
        / next(r["rps"] for r in runs if r["round"] == i and r["telemetry"] == "off")
        for i in range(rounds)
    ]
    cost_us = probe_cost(100_000)
    print()
    print("| telemetry | median req/s (digits, binary, c=64) |")
    print("|---|---:|")
    for mode in ("off", "on"):
        print(f"| {mode} | {median[mode]:.0f} |")
    print()
    print(f"telemetry on / off: {ratio:.1%} of medians (goal >= 95%)")
    print(f"per-round on / off: {', '.join(f'{p:.1%}' for p in paired)}")
    print(f"probe observe, one 64-feature row + label: {cost_us:.2f} us (goal <= 5 us)")
    write_results(
        RESULTS,
        {
            "duration_s": duration,
            "rounds": rounds,
            "runs": runs,
            "median_rps": median,
            "ratio_on_off": ratio,
            "paired_ratios": paired,
            "probe_observe_us": cost_us,
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
