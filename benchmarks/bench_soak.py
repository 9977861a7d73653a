"""Soak benchmark: ``servekit serve`` under 256 connections of mixed valid, invalid and
oversized requests for a bounded time, watching the server's memory.

Each connection runs a closed loop (one request in flight) of, drawn with a fixed seed:
valid digits requests (70%), malformed JSON (10%), a wrong shape (10%) and bodies over the
server's ``--max-body-bytes`` (10%, declared by Content-Length and refused before they are
read; the client then opens a new connection). The server runs with --max-inflight 128,
half the connections, so the in-flight limit answers 503 too. Its RSS is sampled every 0.5 s.

    python benchmarks/bench_soak.py [--quick] [--duration S]

``--quick`` runs 60 s (else 300 s). Prints the requests served, the answers by status and
the RSS at start, peak and end; exits 1 when RSS after the first 10 s grew by 10% or more
(the server must not accumulate memory under a steady mix of traffic). Writes
benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
CONNECTIONS = 256
BODY_LIMIT = 1024 * 1024
WARMUP_S = 10.0
MAX_GROWTH = 0.10

VALID = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}
).encode()
BAD_SHAPE = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 63], "data": [0.5] * 63}]}
).encode()
MALFORMED = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5,'


def _request(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = (
        f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


KINDS = [
    ("valid", 0.7, _request(VALID)),
    ("malformed", 0.1, _request(MALFORMED)),
    ("bad shape", 0.1, _request(BAD_SHAPE)),
    ("oversized", 0.1, _request(b"", declared=BODY_LIMIT * 8)),
]


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP response; return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    await reader.readexactly(length)
    return status


async def _connection(
    port: int, seed: int, deadline: float, counts: collections.Counter[str]
) -> None:
    rng = random.Random(seed)
    weights = [w for _, w, _ in KINDS]
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            kind, _, payload = rng.choices(KINDS, weights)[0]
            writer.write(payload)
            await writer.drain()
            status = await _read_response(reader)  # type: ignore[arg-type]
            counts[f"{kind} -> {status}"] += 1
            counts[str(status)] += 1
            if kind == "oversized":  # the promised body was never sent: start afresh
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            counts[f"connection error: {type(exc).__name__}"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _sample_rss(pid: int, deadline: float, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - start, _rss_bytes(pid)))
        await asyncio.sleep(0.5)


async def _soak(port: int, pid: int, duration: float) -> tuple[collections.Counter, list]:
    counts: collections.Counter[str] = collections.Counter()
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + duration
    await asyncio.gather(
        _sample_rss(pid, deadline, samples),
        *(_connection(port, seed, deadline, counts) for seed in range(CONNECTIONS)),
    )
    return counts, samples


def _start_server() -> tuple[subprocess.Popen[str], int]:
    args = ["--model-repo", str(ROOT / "model_repo"), "--port", "0"]
    args += ["--max-body-bytes", str(BODY_LIMIT), "--max-inflight", "128"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "servekit", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the server prints its address once it serves
        if line.startswith("servekit: serving on http://"):
            return proc, int(line.strip().rsplit(":", 1)[1])
    raise RuntimeError(f"server exited with status {proc.wait()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s instead of 300 s")
    parser.add_argument("--duration", type=float, help="seconds of load (overrides --quick)")
    args = parser.parse_args()
    duration = args.duration or (60.0 if args.quick else 300.0)
    proc, port = _start_server()
    try:
        counts, samples = asyncio.run(_soak(port, proc.pid, duration))
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    rss = [r for _, r in samples]
    settled = [r for t, r in samples if t >= WARMUP_S]
    base = settled[0] if settled else rss[0]
    growth = (max(settled) - base) / base if settled else 0.0
    statuses = {k: v for k, v in sorted(counts.items()) if k.isdigit()}
    by_kind = {k: v for k, v in sorted(counts.items()) if not k.isdigit()}
    served = sum(statuses.values())
    mib = 1024 * 1024
    print(f"soak: {CONNECTIONS} connections for {duration:.0f} s (the machine may be shared)")
    print(f"requests answered: {served} ({served / duration:.0f}/s); server alive: {alive}")
    print(f"answers by status: {statuses}")
    for kind, n in by_kind.items():
        print(f"  {kind}: {n}")
    print(
        f"server RSS: start {rss[0] / mib:.1f} MiB, peak {max(rss) / mib:.1f} MiB, "
        f"end {rss[-1] / mib:.1f} MiB; after the first {WARMUP_S:.0f} s: "
        f"{base / mib:.1f} -> peak {max(settled, default=base) / mib:.1f} MiB "
        f"({growth:+.1%}, limit {MAX_GROWTH:.0%})"
    )
    write_results(
        RESULTS,
        {
            "duration_s": duration,
            "connections": CONNECTIONS,
            "answered": served,
            "statuses": statuses,
            "by_kind": by_kind,
            "rss_bytes": {"start": rss[0], "peak": max(rss), "end": rss[-1], "settled": base},
            "growth_after_warmup": growth,
            "server_alive": alive,
        },
    )
    if growth >= MAX_GROWTH or not alive or "200" not in statuses:
        sys.exit(1)


if __name__ == "__main__":
    main()
