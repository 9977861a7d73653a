"""JSON parsing with a nesting-depth limit, via orjson and a constant-memory bracket scan."""

from __future__ import annotations

from typing import Any

import orjson

from servekit import _core
from servekit.errors import InvalidArgumentError


def nesting_depth(text: bytes) -> int:
    """Return the deepest nesting of arrays and objects in JSON ``text`` (brackets in strings
    do not count). One pass in the Rust core, in constant memory whatever the size of ``text``
    (the scan this replaced held several int64 arrays as long as the body)."""
    return _core.json_nesting_depth(text)


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
        raise InvalidArgumentError(f"malformed JSON: {exc}") from None


dumps = orjson.dumps
