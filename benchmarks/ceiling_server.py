"""The ceiling of issue 14's design: the HTTP floor plus the one step no design may drop.

Issue 14 keeps uvicorn as the front end and the model runner in Python, called once per
batch. This server is ``floor_server.py``'s ASGI app with exactly that added: each request's
input row (the body's last 256 bytes, 64 FP32 values, read without copying) goes through
servekit's Rust dynamic batcher to the real ONNX Runtime runner of the digits model (its
ONNX file ``MODEL``, default ``model_repo/digits``'s), and the fixed response goes back once
its batch has run (a JSON request runs a row of zeros). No decoding, validation, encoding,
statistics or telemetry: a request costs the floor plus one batcher round trip, which is the
most requests/s any one-call design on this stack reaches on the machine.

Two other modes split the cost of servekit's own per-request work from the batcher's:
``inline`` calls the runner on the event loop instead (no batcher, no thread hand-off: the
difference is what the batcher's two wake-ups cost), ``codec`` adds servekit's v2 codec on
both ends (``decode_request`` of the body, ``encode_response`` of the real outputs: the
difference is what decoding and encoding cost under load, without the data plane around them).

    python benchmarks/ceiling_server.py PORT [MODEL] [uvloop|asyncio] [batcher|inline|codec]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from floor_server import BINARY, BINARY_HEADERS, JSON, JSON_HEADERS, serve
from servekit.batching import DynamicBatcher
from servekit.serving.codecs import InferResponse, decode_request, encode_response
from servekit.serving.runners import OnnxRunner

DIGITS = Path(__file__).resolve().parents[1] / "model_repo" / "digits" / "1" / "model.onnx"
ROW_BYTES = 64 * 4
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("port", type=int)
parser.add_argument("model", nargs="?", type=Path, default=DIGITS)
parser.add_argument("loop", nargs="?", choices=("uvloop", "asyncio"), default="uvloop")
parser.add_argument("mode", nargs="?", choices=("batcher", "inline", "codec"), default="batcher")
ARGS = parser.parse_args()
MODE = ARGS.mode

runner = OnnxRunner(ARGS.model)
batcher = DynamicBatcher(runner, max_batch_size=64)


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Read the body, run its last row through the batcher, answer the fixed response."""
    if scope["type"] != "http":
        return
    header_length = next(
        (int(v) for k, v in scope["headers"] if k == b"inference-header-content-length"), None
    )
    binary = header_length is not None
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if MODE == "codec" and body:  # no body: the readiness probe, answered as by the others
        payload, headers = await _through_codec(body, header_length)
    else:
        row = np.frombuffer(body, np.float32, 64, len(body) - ROW_BYTES) if binary else _ROW
        if MODE == "inline":
            runner.run({"input": row.reshape(1, 64)})
        else:
            await batcher.infer({"input": row.reshape(1, 64)})
        payload, headers = (BINARY, BINARY_HEADERS) if binary else (JSON, JSON_HEADERS)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _through_codec(
    body: bytes, header_length: int | None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body decoded by servekit's codec, run, and the probabilities encoded by it."""
    request = decode_request(body, header_length)
    outputs = await batcher.infer(request.inputs)
    chosen = [("probabilities", outputs["probabilities"], request.binary_output)]
    content, json_length = encode_response(InferResponse("digits", "1", chosen, request.id))
    headers = [(b"content-length", str(len(content)).encode())]
    if json_length is None:
        return content, [(b"content-type", b"application/json"), *headers]
    return content, [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(json_length).encode()),
        *headers,
    ]


_ROW = np.zeros((1, 64), np.float32)

if __name__ == "__main__":
    serve(app, ARGS.port, ARGS.loop)
