"""Throughput of MLServer's AdaptiveBatcher driven in-process, for bench_batching.py.

Run with the peers virtual environment's python (benchmarks/setup_peers.sh):

    python mlserver_batcher.py --seconds S --tasks 64 --max-batch-size 64 --max-batch-time T

64 asyncio tasks each await ``AdaptiveBatcher.predict`` in a closed loop with a one-row FP32
[1, 16] request; the model is a no-op ``MLModel`` that returns its input. The batcher is the one
MLServer wraps around a model's ``predict`` when adaptive batching is on, so each request pays
what it pays inside MLServer (pydantic request/response objects, merging and splitting through
MLServer's codecs) minus HTTP. Requests run inside MLServer's model context, as the server's data
plane runs them (the batcher logs a queue-size metric labelled with the model). Before timing,
one request per task checks that every caller gets its own row back.

Prints one JSON line: {"req_per_s", "max_batch_time_s", "avg_batch", "mlserver_version"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from importlib.metadata import version

from mlserver import MLModel
from mlserver.batching.adaptive import AdaptiveBatcher
from mlserver.context import model_context
from mlserver.settings import ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput


class Noop(MLModel):
    """Returns its input tensors unchanged; counts the batches it sees."""

    batches = 0

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Returns one output per input, same name, shape, datatype and data."""
        Noop.batches += 1
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(name=i.name, shape=i.shape, datatype=i.datatype, data=i.data)
                for i in payload.inputs
            ],
        )


def request(i: int) -> InferenceRequest:
    """A one-row FP32 [1, 16] request filled with ``i``."""
    return InferenceRequest(
        inputs=[RequestInput(name="x", shape=[1, 16], datatype="FP32", data=[float(i)] * 16)]
    )


async def drive(batcher: AdaptiveBatcher, tasks: int, seconds: float) -> int:
    """Closed loop: ``tasks`` tasks awaiting predict until ``seconds`` pass; returns requests."""
    done = 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal done
        req = request(i)
        while time.perf_counter() < stop:
            await batcher.predict(req)
            done += 1

    await asyncio.gather(*(client(i) for i in range(tasks)))
    return done


async def check(batcher: AdaptiveBatcher, tasks: int) -> None:
    """Raises AssertionError unless each of ``tasks`` concurrent callers gets its own row."""
    responses = await asyncio.gather(*(batcher.predict(request(i)) for i in range(tasks)))
    for i, response in enumerate(responses):
        data = list(getattr(response.outputs[0].data, "root", response.outputs[0].data))
        assert data == [float(i)] * 16, f"caller {i} got {data[:4]}..."


async def measure(args: argparse.Namespace) -> dict:
    settings = ModelSettings(
        name="noop",
        implementation=Noop,
        max_batch_size=args.max_batch_size,
        max_batch_time=args.max_batch_time,
    )
    with model_context(settings):
        batcher = AdaptiveBatcher(Noop(settings))
        await asyncio.wait_for(check(batcher, args.tasks), timeout=30)
        await drive(batcher, args.tasks, args.seconds / 5)
        before = Noop.batches
        t0 = time.perf_counter()
        n = await drive(batcher, args.tasks, args.seconds)
        rate = n / (time.perf_counter() - t0)
        return {
            "req_per_s": rate,
            "max_batch_time_s": args.max_batch_time,
            "avg_batch": n / max(1, Noop.batches - before),
            "mlserver_version": version("mlserver"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-batch-time", type=float, default=0.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args))))


if __name__ == "__main__":
    main()
