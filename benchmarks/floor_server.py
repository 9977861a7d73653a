"""The HTTP floor: the cheapest ASGI app uvicorn can serve in servekit's shape.

uvicorn with httptools and uvloop (the fastest loop uvicorn offers; ``servekit serve`` runs
asyncio's own, which measured no slower for it: docs/hot-path.md), a plain ASGI callable that
reads the whole request body as servekit's infer handler does and answers a fixed KServe v2
response (binary when the request carries ``Inference-Header-Content-Length``, else JSON) with
the same headers. No model, no decoding: what is left is the HTTP stack's own cost per request,
the ceiling of any server built on it on this machine.

    python benchmarks/floor_server.py PORT
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import uvicorn

_PROBS = struct.pack("<10f", *([0.1] * 10))
_HEAD = json.dumps(
    {
        "model_name": "digits",
        "model_version": "1",
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [1, 10],
                "parameters": {"binary_data_size": len(_PROBS)},
            }
        ],
    },
    separators=(",", ":"),
).encode()
BINARY = _HEAD + _PROBS
BINARY_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"inference-header-content-length", str(len(_HEAD)).encode()),
    (b"content-length", str(len(BINARY)).encode()),
]
JSON = json.dumps(
    {
        "model_name": "digits",
        "model_version": "1",
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "data": [0.1] * 10}
        ],
    },
    separators=(",", ":"),
).encode()
JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(JSON)).encode()),
]


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Read the body, answer the fixed response."""
    if scope["type"] != "http":
        return
    binary = any(k == b"inference-header-content-length" for k, _ in scope["headers"])
    while True:
        message = await receive()
        if not message.get("more_body", False):
            break
    body, headers = (BINARY, BINARY_HEADERS) if binary else (JSON, JSON_HEADERS)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve(asgi: Any, port: int, loop: str = "uvloop") -> None:
    """Serve ``asgi`` on 127.0.0.1:``port`` as the floor runs: httptools, ``loop``, no access
    log, no lifespan."""
    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop=loop,
        http="httptools",
    )


if __name__ == "__main__":
    serve(app, int(sys.argv[1]))
