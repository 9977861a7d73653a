"""Production's throughput and latency with no shadow, a shadow at fraction 1.0 and at 0.1.

``servekit serve`` serves the digits MLP from a registry (``digits@production``) and, per mode,
shadows the int8 variant (``digits@candidate`` at fraction 1.0 or 0.1, set through the
management API: ``POST /v2/repository/models/digits/candidates``, and removed with ``.../remove``
for no shadow). ``wrk`` drives production with one-row binary v2 requests at concurrency 1 and
64. Each of ``--rounds`` rounds starts one server and runs every mode on it, in alternating
order from round to round, so the modes compare within one process (servers started apart
differed by up to 50% in throughput on the same machine). The goal figures are the medians
over the rounds of each round's ratio to no shadow on that round's server. Goals: production
p50 at c=1 within 10% of no shadow; throughput at c=64 with a 0.1 shadow within 10%. After each
mode the shadow's read-out gives how many copies were compared and dropped. The table also
gives the server's CPU time per production request (``/proc``, shadow work included); at c=64
the event loop keeps about one core busy, so there it moves inversely with throughput.

    python benchmarks/bench_shadow.py [--quick] [--duration S] [--rounds N]

Prints a table and writes benchmarks/results/shadow.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import cpu_s
from _results import write_results
from bench_serving import free_port, request_bodies, stop, wait_ready, wrk

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "shadow.json"
#: Mode -> the shadow's fraction (None: no shadow).
MODES: dict[str, float | None] = {"none": None, "shadow 1.0": 1.0, "shadow 0.1": 0.1}
CANDIDATES = "/v2/repository/models/digits/candidates"
CONCURRENCY = (1, 64)


def registry(tmp: Path) -> Path:
    """A registry with digits:1 (fp32, production) and digits:2 (int8, candidate)."""
    from servekit.registry import Registry

    reg = Registry(tmp / "reg")
    reg.register("digits", ROOT / "model_repo" / "digits" / "1" / "model.onnx", format="onnx")
    reg.register("digits", ROOT / "model_repo" / "digits_int8" / "1" / "model.onnx", format="onnx")
    reg.set_alias("digits:1", "production")
    reg.set_alias("digits:2", "candidate")
    return tmp / "reg"


def post(port: int, path: str, body: dict) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        r.read()


def set_shadow(port: int, fraction: float | None, current: float | None) -> None:
    """Make ``digits@candidate`` the shadow at ``fraction`` (None: remove it). Adding replaces
    the running one, with fresh figures."""
    if fraction is not None:
        post(port, CANDIDATES, {"ref": "digits@candidate", "role": "shadow", "fraction": fraction})
    elif current is not None:
        post(port, f"{CANDIDATES}/remove", {"ref": "digits@candidate", "role": "shadow"})


def shadow_counts(port: int) -> dict[str, int] | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/digits/candidates") as r:
        found = json.loads(r.read())["candidates"]
    if not found:
        return None
    return {k: found[0][k] for k in ("sampled", "requests", "dropped", "errors")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point, 3 rounds")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    rounds = args.rounds or 3
    if shutil.which("wrk") is None:
        sys.exit("bench_shadow: needs wrk (Debian/Ubuntu: apt-get install wrk)")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
    )
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        reg = registry(tmp)
        x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
        body, headers = request_bodies(x, tmp, "digits")["binary"]
        for round_ in range(rounds):
            order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
            port = free_port()
            command = [
                sys.executable, "-m", "servekit", "serve", "--registry", str(reg),
                "--model", "digits@production", "--port", str(port),
            ]  # fmt: skip
            proc = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                wait_ready(port, proc)
                current = None
                for mode in order:
                    set_shadow(port, MODES[mode], current)
                    current = MODES[mode]
                    wrk(port, "digits", body, headers, 64, 1, tmp)  # warm-up
                    for conns in CONCURRENCY:
                        before = cpu_s(proc.pid)
                        r = wrk(port, "digits", body, headers, conns, duration, tmp)
                        r["cpu_us"] = (cpu_s(proc.pid) - before) / max(1, r["requests"]) * 1e6
                        runs.append({"mode": mode, "conns": conns, "round": round_, **r})
                        print(
                            f"round {round_} {mode:10} c={conns:<2}: {r['rps']:8.0f} req/s  "
                            f"p50 {r['p50_us'] / 1e3:6.2f} ms  p99 {r['p99_us'] / 1e3:6.2f} ms  "
                            f"errors {r['errors'] + r['non2xx']}",
                            flush=True,
                        )
                    counts = shadow_counts(port)
                    if counts is not None:
                        runs[-1]["shadow"] = counts
                        print(f"  shadow (this mode's runs): {counts}", flush=True)
            finally:
                stop(proc)

    def med(mode: str, conns: int, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["mode"] == mode and r["conns"] == conns)

    def spread(mode: str, conns: int, key: str) -> str:
        values = [r[key] for r in runs if r["mode"] == mode and r["conns"] == conns]
        return f"{min(values):.0f}-{max(values):.0f}"

    table: dict[str, dict] = {}
    print()
    print("| mode | c | median req/s (min-max) | p50 ms | p99 ms | server CPU us/request |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in MODES:
        for conns in CONCURRENCY:
            row = {k: med(mode, conns, k) for k in ("rps", "p50_us", "p99_us", "cpu_us")}
            table[f"{mode} c={conns}"] = row
            print(
                f"| {mode} | {conns} | {row['rps']:.0f} ({spread(mode, conns, 'rps')}) | "
                f"{row['p50_us'] / 1e3:.2f} | {row['p99_us'] / 1e3:.2f} | {row['cpu_us']:.0f} |"
            )

    def paired(mode: str, conns: int, key: str) -> list[float]:
        """Per round, ``mode``'s figure over no shadow's on the same server."""
        by_round = {(r["round"], r["mode"]): r[key] for r in runs if r["conns"] == conns}
        return sorted(by_round[(k, mode)] / by_round[(k, "none")] for k in range(rounds))

    p50_ratio = {m: statistics.median(paired(m, 1, "p50_us")) for m in MODES if m != "none"}
    rps_ratio = {m: statistics.median(paired(m, 64, "rps")) for m in MODES if m != "none"}
    print()
    print("per-round ratios to no shadow on the same server, median (min-max):")
    for mode in p50_ratio:
        p50s, rpss = paired(mode, 1, "p50_us"), paired(mode, 64, "rps")
        print(
            f"{mode}: p50 at c=1 {p50_ratio[mode]:.1%} ({p50s[0]:.0%}-{p50s[-1]:.0%}); "
            f"throughput at c=64 {rps_ratio[mode]:.1%} ({rpss[0]:.0%}-{rpss[-1]:.0%})"
        )
    write_results(
        RESULTS,
        {
            "duration_s": duration,
            "rounds": rounds,
            "runs": runs,
            "medians": table,
            "p50_c1_ratio": p50_ratio,
            "rps_c64_ratio": rps_ratio,
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
