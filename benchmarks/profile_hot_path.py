"""Per-request cost of each stage of servekit's infer path, measured in one process.

The digits model from model_repo/ behind a real DataPlane (ONNX Runtime runner, Rust dynamic
batcher, telemetry on, as ``servekit serve`` runs it); one-row binary and JSON requests as
bench_serving.py sends them. Each stage is timed on its own in a loop (median of 5 rounds of
``--iterations`` calls, microseconds per call, on asyncio's loop as ``servekit serve`` runs,
or ``--loop uvloop``): decode,
validation, the batcher round trip (enqueue, instance-thread wake-up, model run, delivery to
the event loop), the model run alone, encode, telemetry, statistics, and the whole data-plane
call; then the process CPU time per request while ``--concurrency`` tasks (default 64) send
requests through the data plane at once, with telemetry on and off (what the per-stage loop
cannot show: costs of threads handing the interpreter to each other). HTTP costs (parsing,
body read, response write) come from bench_serving.py's floor: they are uvicorn's, not
servekit's.

    python benchmarks/profile_hot_path.py [--iterations N] [--loop asyncio|uvloop] [--concurrency C]

Prints a table and writes benchmarks/results/hot_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import uvloop

from _results import write_results
from bench_serving import body_bytes
from servekit.serving.codecs import encode_response
from servekit.serving.dataplane import DataPlane
from servekit.serving.model import ServedModel
from servekit.serving.repository import ModelRepository, RunnerOptions
from servekit.serving.telemetry import ServingTelemetry, TelemetryOptions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "hot_path.json"


def per_call_us(fn: Callable[[], object], n: int) -> float:
    """Median over 5 rounds of the microseconds one call of ``fn`` takes."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter_ns() - start) / n / 1e3)
    return statistics.median(rounds)


async def per_await_us(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """Median over 5 rounds of the microseconds one sequential ``await fn()`` takes."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(n):
            await fn()
        rounds.append((time.perf_counter_ns() - start) / n / 1e3)
    return statistics.median(rounds)


async def measure(n: int, concurrency: int) -> dict[str, dict[str, float]]:
    """Stage -> encoding -> microseconds per request."""
    telemetry = ServingTelemetry(TelemetryOptions())
    repo = ModelRepository(ROOT / "model_repo", RunnerOptions(threads=1), telemetry)
    plane = DataPlane(repo)
    await plane.load_all(["digits"])
    model = repo.get("digits")
    x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
    table: dict[str, dict[str, float]] = {}
    for encoding, (body, header) in body_bytes(x).items():
        for stage, us in (await stage_costs(plane, model, body, header, n)).items():
            table.setdefault(stage, {})[encoding] = us
        stage = f"data plane CPU, {concurrency} concurrent requests, telemetry on"
        table.setdefault(stage, {})[encoding] = await concurrent_cpu_us(
            plane, body, header, concurrency, n
        )
    await plane.close()
    telemetry.close()
    bare = DataPlane(ModelRepository(ROOT / "model_repo", RunnerOptions(threads=1)))
    await bare.load_all(["digits"])
    for encoding, (body, header) in body_bytes(x).items():
        stage = f"data plane CPU, {concurrency} concurrent requests, telemetry off"
        table.setdefault(stage, {})[encoding] = await concurrent_cpu_us(
            bare, body, header, concurrency, n
        )
    await bare.close()
    return table


async def concurrent_cpu_us(
    plane: DataPlane, body: bytes, header: int | None, concurrency: int, n: int
) -> float:
    """Median over 3 rounds of the process CPU time (every thread) per request while
    ``concurrency`` tasks each send ``n // concurrency`` requests through ``infer_body``: what
    a busy server pays per request, batching included, less HTTP."""
    each = max(1, n // concurrency)

    async def client() -> None:
        for _ in range(each):
            await plane.infer_body("digits", None, body, header)

    rounds = []
    for _ in range(3):
        start = time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        rounds.append((time.process_time() - start) / (each * concurrency) * 1e6)
    return statistics.median(rounds)


async def stage_costs(
    plane: DataPlane, model: ServedModel, body: bytes, header: int | None, n: int
) -> dict[str, float]:
    """Stage -> microseconds per request for one request body."""
    runner = model._runner
    batcher = model._batcher
    probe = model.telemetry
    assert batcher is not None and probe is not None
    request = plane.decode(model, body, header)
    inputs = request.inputs
    outputs = await model.infer(request)
    response = await plane.infer("digits", None, request, model)
    return {
        "decode": per_call_us(lambda: plane.decode(model, body, header), n),
        "validation": per_call_us(lambda: model.validate(request), n),
        "batcher round trip (enqueue, wake-up, run, deliver)": await per_await_us(
            lambda: batcher.infer(inputs, return_timing=True), n
        ),
        "model run alone (runner.run, batch 1)": per_call_us(lambda: runner.run(inputs), n),
        "encode": per_call_us(lambda: encode_response(response), n),
        "telemetry (probe.observe)": per_call_us(
            lambda: probe.observe(inputs, outputs, 1000, 100, 100), n
        ),
        "statistics (record_success + record_io)": per_call_us(
            lambda: (model.stats.record_success(1000, 1), model.stats.record_io(10, 10)), n
        ),
        "whole data plane (infer_body)": await per_await_us(
            lambda: plane.infer_body("digits", None, body, header), n
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        table = runner.run(measure(args.iterations, args.concurrency))
    print("| stage | binary us | JSON us |")
    print("|---|---:|---:|")
    for stage, us in table.items():
        print(f"| {stage} | {us['binary']:.1f} | {us['json']:.1f} |")
    write_results(
        RESULTS,
        {
            "iterations": args.iterations,
            "loop": args.loop,
            "concurrency": args.concurrency,
            "us_per_request": table,
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
