"""Dynamic batcher performance goals, each measured against a baseline in the same run.

1. Overhead per request at concurrency 1 with a no-op runner (enqueue to result delivered):
   goal p50 <= 15 us. Also the floor of an asyncio thread hand-off (a worker thread resolving
   a future with call_soon_threadsafe), which any threaded batcher pays.
2. Throughput at 64 asyncio tasks, max_batch_size=64, no-op runner: goal >= 2x a plain asyncio
   batcher written here (an asyncio.Queue drained by one task, same settings), and >= 2x
   MLServer's AdaptiveBatcher when benchmarks/.venv-peers exists (bash benchmarks/setup_peers.sh):
   benchmarks/peers/mlserver_batcher.py drives it in-process in a subprocess of the peers
   environment's python, with a no-op MLModel, max_batch_size=64 and max_batch_time=0 (the
   same settings; MLServer's server only turns batching on for max_batch_time > 0, the batcher
   itself takes 0 as "whatever is queued"). Its requests are MLServer's pydantic objects, which
   is what the batcher costs inside MLServer.
3. Dispatch accuracy: max_queue_delay_us=1000 and a lone request: the batch starts within
   1.0-1.2 ms of arrival at p99.
4. Digits MLP (64-1024-10, as in the field notes) in ONNX Runtime at 64 tasks: throughput
   >= 80% of calling the session directly on pre-built batches of the batcher's average size.
   This model costs about 1 us per row, less than asyncio alone costs per awaited request
   (the "asyncio floor" of 2.: 64 tasks awaiting plain futures resolved in bulk, no batcher
   at all), so the same measurement is repeated with a compute-heavier MLP (64-2048-2048-10,
   untrained: only its cost matters) where the model, not the event loop, is the limit.

ONNX Runtime and torch run with one intra-op thread (the machine has 2 shared cores).
Writes benchmarks/results/batching.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _results import write_results
from servekit.batching import DynamicBatcher

RESULTS = Path(__file__).parent / "results" / "batching.json"
PEERS_VENV = Path(__file__).parent / ".venv-peers"
MLSERVER_BATCHER = Path(__file__).parent / "peers" / "mlserver_batcher.py"


class Noop:
    def run(self, batch):
        return batch


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---- 1. overhead at concurrency 1 --------------------------------------------------------


def overhead(n: int) -> dict[str, float]:
    x = {"x": np.ones((1, 16), np.float32)}
    out: dict[str, float] = {}
    with DynamicBatcher(Noop(), max_batch_size=64) as b:
        for _ in range(200):
            b.infer_sync(x)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            b.infer_sync(x)
            ts.append((time.perf_counter_ns() - t0) / 1e3)
        out["sync_p50_us"], out["sync_p99_us"] = pct(ts, 0.5), pct(ts, 0.99)

        async def run_async() -> list[float]:
            for _ in range(200):
                await b.infer(x)
            ts = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                await b.infer(x)
                ts.append((time.perf_counter_ns() - t0) / 1e3)
            return ts

        ts = asyncio.run(run_async())
        out["async_p50_us"], out["async_p99_us"] = pct(ts, 0.5), pct(ts, 0.99)

    # Floor: one thread hand-off and back through the event loop, no batching at all.
    async def floor() -> list[float]:
        loop = asyncio.get_running_loop()
        work: list = []
        cv = threading.Condition()

        def worker() -> None:
            while True:
                with cv:
                    while not work:
                        cv.wait()
                    fut = work.pop()
                if fut is None:
                    return
                loop.call_soon_threadsafe(fut.set_result, x)

        t = threading.Thread(target=worker)
        t.start()
        ts = []
        for i in range(n + 200):
            t0 = time.perf_counter_ns()
            fut = loop.create_future()
            with cv:
                work.append(fut)
                cv.notify()
            await fut
            if i >= 200:
                ts.append((time.perf_counter_ns() - t0) / 1e3)
        with cv:
            work.append(None)
            cv.notify()
        t.join()
        return ts

    ts = asyncio.run(floor())
    out["asyncio_handoff_floor_p50_us"] = pct(ts, 0.5)
    out["asyncio_handoff_floor_p99_us"] = pct(ts, 0.99)
    return out


# ---- 2. throughput at 64 tasks -----------------------------------------------------------


class AsyncioBatcher:
    """A straightforward pure-asyncio dynamic batcher: requests go into an asyncio.Queue; one
    task takes the first, gathers more until max_batch_size or the delay runs out, runs the
    batch inline and resolves the futures."""

    def __init__(self, runner, max_batch_size: int, max_queue_delay_us: int = 0) -> None:
        self.runner = runner
        self.max = max_batch_size
        self.delay = max_queue_delay_us / 1e6
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.ensure_future(self._loop())

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((inputs, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.delay
            while len(items) < self.max:
                if not self.queue.empty():
                    items.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            names = list(items[0][0])
            batch = {k: np.concatenate([i[0][k] for i in items]) for k in names}
            try:
                outs = self.runner.run(batch)
            except Exception as exc:
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            at = 0
            for inputs, fut in items:
                n = len(inputs[names[0]])
                fut.set_result({k: v[at : at + n] for k, v in outs.items()})
                at += n

    def close(self) -> None:
        self.task.cancel()


async def drive(infer, make_input, tasks: int, seconds: float) -> int:
    done = 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal done
        x = make_input(i)
        while time.perf_counter() < stop:
            await infer(x)
            done += 1

    await asyncio.gather(*(client(i) for i in range(tasks)))
    return done


def throughput(seconds: float) -> dict[str, float]:
    def make(i: int) -> dict[str, np.ndarray]:
        return {"x": np.full((1, 16), i, np.float32)}

    async def servekit() -> float:
        with DynamicBatcher(Noop(), max_batch_size=64) as b:
            await drive(b.infer, make, 64, seconds / 5)
            t0 = time.perf_counter()
            n = await drive(b.infer, make, 64, seconds)
            return n / (time.perf_counter() - t0)

    async def plain() -> float:
        b = AsyncioBatcher(Noop(), max_batch_size=64)
        await drive(b.infer, make, 64, seconds / 5)
        t0 = time.perf_counter()
        n = await drive(b.infer, make, 64, seconds)
        rate = n / (time.perf_counter() - t0)
        b.close()
        return rate

    async def floor() -> float:
        """No batcher: each request is a plain future, all pending ones resolved by one loop
        callback. The most any asyncio batcher could deliver to these clients."""
        loop = asyncio.get_running_loop()
        pending: list[tuple[asyncio.Future, dict]] = []

        def resolve() -> None:
            items = pending[:]
            pending.clear()
            for fut, x in items:
                fut.set_result(x)

        async def infer(x: dict) -> dict:
            fut = loop.create_future()
            if not pending:
                loop.call_soon(resolve)
            pending.append((fut, x))
            return await fut

        await drive(infer, make, 64, seconds / 5)
        t0 = time.perf_counter()
        n = await drive(infer, make, 64, seconds)
        return n / (time.perf_counter() - t0)

    ours = [asyncio.run(servekit()) for _ in range(2)]
    base = [asyncio.run(plain()) for _ in range(2)]
    bare = [asyncio.run(floor()) for _ in range(2)]
    peer = mlserver_throughput(seconds)
    return {
        "servekit_req_per_s": max(ours),
        "asyncio_batcher_req_per_s": max(base),
        "ratio": max(ours) / max(base),
        "asyncio_floor_req_per_s": max(bare),
        "floor_ratio": max(bare) / max(base),
        "mlserver_adaptive_batcher": peer,
        "mlserver_ratio": max(ours) / peer["req_per_s"] if "req_per_s" in peer else None,
    }


def mlserver_throughput(seconds: float) -> dict:
    """MLServer's AdaptiveBatcher at 64 tasks, best of two runs of the peers environment's
    python (bounded in time). Returns its JSON report, or {"skipped": reason}."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        return {"skipped": f"{PEERS_VENV.name} missing (bash benchmarks/setup_peers.sh)"}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    runs = []
    for _ in range(2):
        command = [str(python), str(MLSERVER_BATCHER), "--seconds", str(seconds)]
        command += ["--tasks", "64", "--max-batch-size", "64", "--max-batch-time", "0"]
        try:
            proc = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=seconds * 2 + 120
            )
        except subprocess.TimeoutExpired:
            return {"skipped": f"{MLSERVER_BATCHER.name} ran over {seconds * 2 + 120:.0f} s"}
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"skipped": f"{MLSERVER_BATCHER.name} exited {proc.returncode}: {last[:200]}"}
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return max(runs, key=lambda r: r["req_per_s"])


# ---- 3. dispatch accuracy ----------------------------------------------------------------


def dispatch(n: int) -> dict[str, float]:
    class Stamp:
        def run(self, batch):
            return {"t": np.full((len(batch["x"]), 1), time.perf_counter_ns(), np.int64)}

    ts = []
    with DynamicBatcher(Stamp(), max_batch_size=8, max_queue_delay_us=1000) as b:
        for _ in range(n):
            t0 = time.perf_counter_ns()
            started = int(b.infer_sync({"x": np.ones((1, 4), np.float32)})["t"][0, 0])
            ts.append((started - t0) / 1e6)
    return {
        "p50_ms": pct(ts, 0.5),
        "p99_ms": pct(ts, 0.99),
        "min_ms": min(ts),
        "within_1.0_1.2_ms": sum(1.0 <= t <= 1.2 for t in ts) / len(ts),
    }


# ---- 4. real ONNX Runtime MLP ------------------------------------------------------------


def onnx_session(net, X, path: Path):
    """Export ``net`` (input ``x``, output ``logits``, dynamic batch) and open a one-thread
    ONNX Runtime session on it."""
    import onnxruntime as ort
    import torch

    torch.onnx.export(
        net,
        (X[:1],),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def mlp_session(tmp: Path):
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    sess = onnx_session(net, X, tmp / "mlp.onnx")
    accuracy = float((net(X).argmax(1) == y).float().mean())
    return sess, X.numpy(), accuracy


def heavy_mlp_session(tmp: Path):
    """An untrained 64-2048-2048-10 MLP (about 4.3 M multiply-adds per row) and the digits
    inputs: a model whose compute, not the event loop, bounds the throughput."""
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    X, _ = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 10),
    )
    return onnx_session(net, X, tmp / "heavy_mlp.onnx"), X.numpy(), None


def onnx_mlp(seconds: float, tmp: Path, make_session=mlp_session) -> dict[str, float | None]:
    sess, X, accuracy = make_session(tmp)

    class OrtRunner:
        def run(self, batch):
            return {"logits": sess.run(["logits"], batch)[0]}

    def make(i: int) -> dict[str, np.ndarray]:
        return {"x": X[i : i + 1]}

    async def batched() -> tuple[float, dict]:
        with DynamicBatcher(OrtRunner(), max_batch_size=64) as b:
            await drive(b.infer, make, 64, seconds / 5)
            before = b.stats()
            t0 = time.perf_counter()
            n = await drive(b.infer, make, 64, seconds)
            rate = n / (time.perf_counter() - t0)
            after = b.stats()
        rows = after["inference_count"] - before["inference_count"]
        execs = after["execution_count"] - before["execution_count"]
        return rate, {"avg_batch": rows / execs}

    rate, info = asyncio.run(batched())
    size = max(1, round(info["avg_batch"]))
    batches = [X[i : i + size] for i in range(0, len(X) - size, size)]
    rows = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for batch in batches:
            sess.run(["logits"], {"x": batch})
            rows += len(batch)
    direct = rows / (time.perf_counter() - t0)
    return {
        "accuracy": accuracy,
        "avg_batch_size": info["avg_batch"],
        "servekit_req_per_s": rate,
        "direct_session_rows_per_s": direct,
        "ratio": rate / direct,
    }


def mlserver_rows(t: dict) -> list[tuple[str, str, str]]:
    """Table rows for MLServer's AdaptiveBatcher, or one row saying why it was skipped."""
    peer = t["mlserver_adaptive_batcher"]
    if "skipped" in peer:
        print(f"MLServer AdaptiveBatcher skipped: {peer['skipped']}", file=sys.stderr)
        return [("throughput 64 tasks MLServer AdaptiveBatcher", "skipped", peer["skipped"])]
    return [
        (
            "throughput 64 tasks MLServer AdaptiveBatcher (req/s)",
            f"{peer['req_per_s']:,.0f}",
            f"MLServer {peer['mlserver_version']}, peers venv, avg batch {peer['avg_batch']:.1f}",
        ),
        ("  ratio servekit / MLServer", f"{t['mlserver_ratio']:.2f}x", ">= 2x"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (about 15 s in all)")
    args = ap.parse_args()
    n, secs = (2000, 1.5) if args.quick else (20000, 5.0)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "overhead_us": overhead(n),
            "throughput_64_tasks": throughput(secs),
            "dispatch_delay_1ms": dispatch(n // 4),
            "onnx_mlp_64_tasks": onnx_mlp(secs, Path(tmp)),
            "onnx_heavy_mlp_64_tasks": onnx_mlp(secs, Path(tmp), heavy_mlp_session),
        }
    o, t, d, m, h = results.values()
    rows = [
        (
            "overhead c=1 sync p50/p99 (us)",
            f"{o['sync_p50_us']:.1f} / {o['sync_p99_us']:.1f}",
            "p50 <= 15",
        ),
        (
            "overhead c=1 asyncio p50/p99 (us)",
            f"{o['async_p50_us']:.1f} / {o['async_p99_us']:.1f}",
            "p50 <= 15",
        ),
        (
            "  asyncio thread hand-off floor p50/p99 (us)",
            f"{o['asyncio_handoff_floor_p50_us']:.1f} / {o['asyncio_handoff_floor_p99_us']:.1f}",
            "baseline",
        ),
        ("throughput 64 tasks servekit (req/s)", f"{t['servekit_req_per_s']:,.0f}", ""),
        (
            "throughput 64 tasks asyncio batcher (req/s)",
            f"{t['asyncio_batcher_req_per_s']:,.0f}",
            "baseline",
        ),
        ("  ratio", f"{t['ratio']:.2f}x", ">= 2x"),
        *mlserver_rows(t),
        (
            "  asyncio floor: bare futures, no batcher (req/s)",
            f"{t['asyncio_floor_req_per_s']:,.0f}",
            f"{t['floor_ratio']:.2f}x the baseline: the most any batcher gets",
        ),
        (
            "dispatch 1 ms delay p50/p99 (ms)",
            f"{d['p50_ms']:.3f} / {d['p99_ms']:.3f}",
            "p99 in 1.0-1.2",
        ),
        ("  share within 1.0-1.2 ms", f"{d['within_1.0_1.2_ms']:.1%}", ""),
        (
            "ONNX MLP 64 tasks servekit (req/s)",
            f"{m['servekit_req_per_s']:,.0f}",
            f"avg batch {m['avg_batch_size']:.1f}",
        ),
        ("ONNX MLP direct session (rows/s)", f"{m['direct_session_rows_per_s']:,.0f}", "baseline"),
        ("  ratio", f"{m['ratio']:.0%}", ">= 80%"),
        (
            "heavy MLP 64-2048-2048-10 64 tasks (req/s)",
            f"{h['servekit_req_per_s']:,.0f}",
            f"avg batch {h['avg_batch_size']:.1f}",
        ),
        ("heavy MLP direct session (rows/s)", f"{h['direct_session_rows_per_s']:,.0f}", "baseline"),
        ("  ratio", f"{h['ratio']:.0%}", ">= 80%"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>16}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>16}  {goal}")
    write_results(RESULTS, results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
