"""The ceiling of issue 14's design: the HTTP floor plus the one step no design may drop.

Issue 14 keeps uvicorn as the front end and the model runner in Python, called once per
batch. This server is ``floor_server.py``'s ASGI app with exactly that added: each request's
input row (the body's last 256 bytes, 64 FP32 values, read without copying) goes through
servekit's Rust dynamic batcher to the real ONNX Runtime runner of the digits model (its
ONNX file ``MODEL``, default ``model_repo/digits``'s), and the fixed response goes back once
its batch has run (a JSON request runs a row of zeros). No decoding, validation, encoding,
statistics or telemetry: a request costs the floor plus one batcher round trip, which is the
most requests/s any one-call design on this stack reaches on the machine.

``inline`` calls the runner on the event loop instead (no batcher, no thread hand-off): the
difference between the two is what the batcher's two wake-ups cost per request.

    python benchmarks/ceiling_server.py PORT [MODEL] [uvloop|asyncio] [batcher|inline]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from floor_server import BINARY, BINARY_HEADERS, JSON, JSON_HEADERS
from servekit.batching import DynamicBatcher
from servekit.serving.runners import OnnxRunner

DIGITS = Path(__file__).resolve().parents[1] / "model_repo" / "digits" / "1" / "model.onnx"
ROW_BYTES = 64 * 4
DEFAULTS = (str(DIGITS), "uvloop", "batcher")
MODEL, LOOP, MODE = (*sys.argv[2:5], *DEFAULTS[len(sys.argv[2:5]) :])
if LOOP not in ("uvloop", "asyncio") or MODE not in ("batcher", "inline"):
    sys.exit(
        f"ceiling_server: unknown loop {LOOP!r} or mode {MODE!r}; "
        "usage: PORT [MODEL] [uvloop|asyncio] [batcher|inline]"
    )
INLINE = MODE == "inline"

runner = OnnxRunner(Path(MODEL))
batcher = DynamicBatcher(runner, max_batch_size=64)


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Read the body, run its last row through the batcher, answer the fixed response."""
    if scope["type"] != "http":
        return
    binary = any(k == b"inference-header-content-length" for k, _ in scope["headers"])
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    row = np.frombuffer(body, np.float32, 64, len(body) - ROW_BYTES) if binary else _ROW
    if INLINE:
        runner.run({"input": row.reshape(1, 64)})
    else:
        await batcher.infer({"input": row.reshape(1, 64)})
    payload, headers = (BINARY, BINARY_HEADERS) if binary else (JSON, JSON_HEADERS)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


_ROW = np.zeros((1, 64), np.float32)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop=LOOP,
        http="httptools",
    )
