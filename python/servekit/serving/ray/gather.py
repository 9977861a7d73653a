"""Putting replicas' answers together: Prometheus text with a ``replica`` label, merged across
replicas; an in-process GET through an ASGI app; and GETs to other replicas' listeners.

The Prometheus rule, written once: every sample of a replica gets the label
``replica="<id>"`` (first among its labels); merging keeps each family's ``# HELP`` / ``# TYPE``
lines once, from the first replica that has it, followed by the samples of every replica, so a
scrape of the merged text sees one family per metric and one series per replica. Sums over
replicas are PromQL's job (``sum without (replica) (...)``): counters and histogram buckets add
up exactly; gauges such as drift statistics are per replica (the merged drift route gives the
statistics of all replicas' rows).
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from servekit.serving.rest.app import Message, Scope

#: Seconds a GET to another replica's listener may take.
PEER_TIMEOUT_S = 10.0


def label_metrics(text: str, replica: str) -> str:
    """``text`` (Prometheus exposition format) with ``replica="<replica>"`` added to every
    sample."""
    label = f'replica="{replica}"'
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            out.append(line)
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            rest = line[brace + 1 :]
            sep = "" if rest.startswith("}") else ","
            out.append(f"{line[:brace]}{{{label}{sep}{rest}")
        else:
            out.append(f"{line[:space]}{{{label}}}{line[space:]}")
    return "\n".join(out) + "\n"


def merge_metrics(texts: Iterable[str]) -> str:
    """One exposition holding the families of every text (see the module docstring)."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    for text in texts:
        current: str | None = None
        header_open = False
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                if current != name:
                    current = name
                    fresh = name not in families
                    families.setdefault(name, ([], []))
                    header_open = fresh
                if header_open:
                    families[name][0].append(line)
                continue
            if line.startswith("#"):
                continue
            if current is None:  # a sample before any header: its own family
                current = line.split("{", 1)[0].split(" ", 1)[0]
                families.setdefault(current, ([], []))
                header_open = False
            families[current][1].append(line)
    lines = [line for header, samples in families.values() for line in (*header, *samples)]
    return "\n".join(lines) + "\n"


@dataclass
class AsgiResponse:
    """A response captured from an ASGI app (its headers without Content-Length)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def asgi_get(app: Any, path: str) -> AsgiResponse:
    """Run ``GET path`` through ``app`` in this process and return what it sent."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
    }
    sent = False
    response = AsgiResponse(500, [], b"")
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # like a client that stays connected
        sent = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            # The caller sets the length of what it sends on.
            response.headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"
            ]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    response.body = b"".join(chunks)
    return response


@dataclass
class PeerResponse:
    """What one replica's listener answered: status 0 when it could not be reached."""

    replica: str
    status: int
    body: bytes


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=PEER_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()


async def get_from_peers(peers: dict[str, str], path: str) -> list[PeerResponse]:
    """``GET path`` from every replica listener in ``peers`` (replica id -> base URL), all at
    once, off the event loop. Never raises for a peer that fails: its status is 0."""

    async def one(replica: str, base: str) -> PeerResponse:
        status, body = await asyncio.to_thread(_get, base + path)
        return PeerResponse(replica, status, body)

    return list(await asyncio.gather(*(one(r, u) for r, u in sorted(peers.items()))))
