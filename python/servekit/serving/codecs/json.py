"""JSON parsing with a nesting-depth limit, via orjson and a vectorised bracket scan."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from servekit.errors import InvalidArgumentError

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def nesting_depth(text: bytes | memoryview) -> int:
    """Return the deepest nesting of arrays and objects in JSON ``text`` (brackets in strings
    do not count). Runs in numpy, without a Python loop over the characters."""
    buf = np.frombuffer(text, dtype=np.uint8)
    delta = _OPEN[buf]
    quotes = np.flatnonzero(buf == _QUOTE)
    if quotes.size:
        # A quote is escaped when an odd number of backslashes precedes it.
        not_bs = buf != _BACKSLASH
        idx = np.arange(buf.size)
        last_plain = np.maximum.accumulate(np.where(not_bs, idx, -1))
        before = quotes - 1
        run = np.where(before >= 0, before - last_plain[np.maximum(before, 0)], 0)
        real = quotes[run % 2 == 0]
        toggles = np.zeros(buf.size, dtype=np.int8)
        toggles[real] = 1
        in_string = (np.cumsum(toggles, dtype=np.int64) % 2).astype(bool)
        delta = np.where(in_string, 0, delta)
    if not delta.any():
        return 0
    return int(np.cumsum(delta, dtype=np.int64).max())


def loads(text: bytes, max_depth: int) -> Any:
    """Parse JSON ``text``; return the value.

    Raises InvalidArgumentError for malformed JSON or nesting deeper than ``max_depth``.
    """
    # Cheap bound first: nesting cannot exceed the number of opening brackets.
    if (
        text.count(b"[") + text.count(b"{") > max_depth
        and (depth := nesting_depth(text)) > max_depth
    ):
        raise InvalidArgumentError(f"JSON nesting depth {depth} exceeds the limit of {max_depth}")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # Triton's wording ("failed to parse the request JSON buffer: <why> at <offset>").
        raise InvalidArgumentError(
            f"failed to parse the request JSON buffer: {exc.msg} at {exc.pos}"
        ) from None


dumps = orjson.dumps
