"""Ray Serve benchmark: what Ray's proxy hop costs servekit, and what a second replica buys.

One local Ray cluster (``ray.init(num_cpus=2)``, no dashboard) holds, behind one proxy
(``--ray-proxy``: Ray's HAProxy ingress, the default of ``servekit serve --ray``, or Ray's
Python proxy actor):

- ``/noop``: a do-nothing ASGI deployment that reads the body and answers a fixed v2 response
  (the floor: the proxy hop alone);
- ``/``: servekit (:func:`servekit.serving.ray.build_app`) with digits and the heavy MLP of
  ``bench_serving.py`` (dynamic batching, one intra-op thread per replica), first with one
  replica, then two.

Plain ``servekit serve`` (one process, no Ray) on the same repository is the other baseline.
``wrk`` (one thread) posts one-row binary v2 requests: at one connection, the per-request
round trip of digits (plain servekit, the Ray floor, servekit through Ray); at 16 connections,
the heavy model's throughput with 1 and 2 replicas (and plain servekit). For every point, the
CPU seconds used by the client (wrk), Ray's proxy and each replica (``/proc``), per second of
measurement, the cores the whole machine kept busy (``machine``: Ray's controller, GCS, raylet
and agents included) and, for servekit's points, the mean batch size the replicas formed. Each
point runs ``--runs`` times (default 3); the table shows medians with the spread (min-max).

The scaling line also prints the CPU ceiling: two replicas cannot do more than all the cores'
work at one replica's CPU cost per request, so ``cores / machine busy with one replica`` bounds
what a second replica can add on this machine.

Goals: servekit through Ray within 1 ms of the floor at c=1; 2 replicas >= 1.3x one replica
(heavy, c=16).

    python benchmarks/bench_ray.py [--quick] [--duration S] [--runs N] [--ray-proxy haproxy|ray]

Prints a table and writes benchmarks/results/ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from _proc import busy_cores, command_lines, cpu_s
from _results import write_results
from bench_serving import build_repo, free_port, request_bodies, start, stop, wait_ready, wrk
from servekit.serving.ray.ingress import DEFAULT_INGRESS, INGRESSES, ingress_environment

OUT = Path(__file__).resolve().parent / "results" / "ray.json"


class Noop:
    """The floor deployment's class: no state, its ASGI app does everything."""


def noop_app():  # builds the floor deployment's ASGI app (once per replica)
    body = (
        b'{"model_name":"digits","model_version":"1","outputs":[{"name":"probabilities",'
        b'"datatype":"FP32","shape":[1,10],"data":[0,0,0,0,0,0,0,0,0,1]}]}'
    )

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def ray_pids() -> dict[str, int]:
    """Ray's proxy (HAProxy or the proxy actor) and servekit replica processes, by their
    process titles."""
    found: dict[str, int] = {}
    for pid, argv in command_lines():
        title = argv[0].decode(errors="replace")
        # With HAProxy, Ray's proxy actor still runs but carries no requests.
        haproxy = Path(title).name == "haproxy"
        if haproxy or (title.startswith("ray::ProxyActor") and "proxy" not in found):
            found["proxy"] = pid
        elif title.startswith("ray::ServeReplica:servekit:ServekitReplica"):
            found[f"replica{sum(k.startswith('replica') for k in found) + 1}"] = pid
    return found


def executions(port: int, model: str) -> tuple[int, int]:
    """Inferences and executions (batches) of ``model`` so far, summed over every replica's
    statistics entry."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/stats") as reply:
        entries = json.load(reply)["model_stats"]
    return sum(e["inference_count"] for e in entries), sum(e["execution_count"] for e in entries)


def measure(port, path, body, headers, conns, duration, tmp, pids, runs) -> dict:
    """``runs`` wrk runs; medians and spreads of requests/s and p50, CPU per process and for
    the whole machine (cores busy), and the mean batch size (servekit models only)."""
    results = []
    for _ in range(runs):
        counts = executions(port, path) if path != "noop" else None
        machine = busy_cores()
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        start_t = time.monotonic()
        result = wrk(port, path, body, headers, conns, duration, tmp)
        wall = time.monotonic() - start_t
        after_child = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result["errors"] or result["non2xx"]:
            raise RuntimeError(f"{path} c={conns}: {result}")
        cpu = {name: (cpu_s(pid) - before[name]) / wall for name, pid in pids.items()}
        cpu["client"] = (
            after_child.ru_utime + after_child.ru_stime - child.ru_utime - child.ru_stime
        ) / wall
        cpu["machine"] = (busy_cores() - machine) / wall
        if counts is not None:
            inferences, batches = executions(port, path)
            result["mean_batch"] = (inferences - counts[0]) / max(1, batches - counts[1])
        results.append({**result, "cpu": cpu})
    rps = [r["rps"] for r in results]
    p50 = [r["p50_us"] for r in results]
    return {
        "rps": statistics.median(rps),
        "rps_spread": [min(rps), max(rps)],
        "p50_us": statistics.median(p50),
        "p50_spread": [min(p50), max(p50)],
        # Mean round trip at one connection: 1 / requests per second.
        "round_trip_us": statistics.median(1e6 / r for r in rps),
        "cpu": {k: statistics.median(r["cpu"][k] for r in results) for k in results[0]["cpu"]},
        "mean_batch": (
            statistics.median(r["mean_batch"] for r in results)
            if "mean_batch" in results[0]
            else None
        ),
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run instead of 10 s")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per point (median)")
    parser.add_argument("--ray-proxy", choices=INGRESSES, default=DEFAULT_INGRESS)
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)

    import ray
    from ray import serve

    from servekit.serving.ray import ReplicaSpec, ScaleOptions, build_app

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        build_repo(tmp / "repo")
        x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
        body, headers = request_bodies(x, tmp, "row")["binary"]
        points: dict[str, dict] = {}

        port = free_port()
        plain = start(
            [sys.executable, "-m", "servekit", "serve", "--model-repo", str(tmp / "repo"),
             "--port", str(port)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            log=tmp / "plain.log",
        )  # fmt: skip
        try:
            wait_ready(port, plain, timeout=120)
            pids = {"server": plain.pid}
            points["plain c=1"] = measure(
                port, "digits", body, headers, 1, duration, tmp, pids, args.runs
            )
            points["plain heavy c=16"] = measure(
                port, "heavy", body, headers, 16, duration, tmp, pids, args.runs
            )
        finally:
            stop(plain)

        port = free_port()
        os.environ.update(ingress_environment(args.ray_proxy))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            floor = serve.deployment(
                name="noop", max_ongoing_requests=256, logging_config={"enable_access_log": False}
            )(serve.ingress(noop_app)(Noop))
            # The longest route prefix wins: /v2/models/noop/infer reaches the floor.
            serve.run(floor.bind(), name="noop", route_prefix="/v2/models/noop")
            spec = ReplicaSpec(model_repo=str(tmp / "repo"))

            def deploy(replicas: int) -> dict[str, int]:
                scale = ScaleOptions(replicas=replicas, replica_cpus=0.5)
                serve.run(build_app(spec, scale), name="servekit", route_prefix="/")
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    pids = ray_pids()
                    if sum(k.startswith("replica") for k in pids) == replicas:
                        return pids
                    time.sleep(0.5)
                raise RuntimeError(f"{replicas} replicas did not come up")

            pids = deploy(1)
            points["ray floor c=1"] = measure(
                port, "noop", body, headers, 1, duration, tmp, {"proxy": pids["proxy"]},
                args.runs,
            )  # fmt: skip
            points["ray servekit c=1"] = measure(
                port, "digits", body, headers, 1, duration, tmp, pids, args.runs
            )
            points["ray heavy 1 replica c=16"] = measure(
                port, "heavy", body, headers, 16, duration, tmp, pids, args.runs
            )
            pids = deploy(2)
            points["ray heavy 2 replicas c=16"] = measure(
                port, "heavy", body, headers, 16, duration, tmp, pids, args.runs
            )
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()

    overhead_floor = (
        points["ray servekit c=1"]["round_trip_us"] - points["ray floor c=1"]["round_trip_us"]
    )
    overhead_plain = (
        points["ray servekit c=1"]["round_trip_us"] - points["plain c=1"]["round_trip_us"]
    )
    scaling = points["ray heavy 2 replicas c=16"]["rps"] / points["ray heavy 1 replica c=16"]["rps"]
    print(f"Ray proxy: {args.ray_proxy}")
    # Two replicas do at most all the machine's cores of work at one replica's CPU cost per
    # request (never less: each forms smaller batches from the same connections).
    one = points["ray heavy 1 replica c=16"]["cpu"]["machine"]
    cores = os.cpu_count() or 1
    print(f"{'point':28} {'req/s (spread)':>24} {'p50 us':>8} {'batch':>6}  cpu s/s per process")
    for name, p in points.items():
        spread = f"{p['rps_spread'][0]:.0f}-{p['rps_spread'][1]:.0f}"
        batch = "-" if p["mean_batch"] is None else f"{p['mean_batch']:.1f}"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in p["cpu"].items())
        print(f"{name:28} {p['rps']:>10.0f} ({spread:>11}) {p['p50_us']:>8.0f} {batch:>6}  {cpu}")
    print(
        f"c=1 round trip: servekit via Ray - floor = {overhead_floor / 1000:.2f} ms (goal <= 1 ms);"
        f" servekit via Ray - plain servekit = {overhead_plain / 1000:.2f} ms"
    )
    print(
        f"heavy c=16: 2 replicas / 1 replica = {scaling:.2f}x (goal >= 1.3x); CPU ceiling on this"
        f" machine: {cores} cores / {one:.2f} busy with one replica = {cores / one:.2f}x"
    )
    write_results(
        OUT,
        {
            "duration_s": duration,
            "runs": args.runs,
            "ray_proxy": args.ray_proxy,
            "points": points,
            "overhead_vs_floor_ms": overhead_floor / 1000,
            "overhead_vs_plain_ms": overhead_plain / 1000,
            "two_replica_scaling": scaling,
            "two_replica_cpu_ceiling": cores / one,
        },
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
