"""HTTP content codings: ``Content-Encoding: gzip | deflate`` request bodies and responses
compressed for ``Accept-Encoding`` (what tritonclient's ``request_compression_algorithm`` and
``response_compression_algorithm`` send and expect).

The body limit applies to the decompressed size too: decompression stops one byte past the
limit, so a compression bomb costs at most the limit in memory before it is refused.
"""

from __future__ import annotations

import gzip
import zlib

from servekit.errors import InvalidArgumentError

#: zlib window bits of each coding: gzip wrapper, zlib wrapper (RFC 9110's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: Responses smaller than this go out uncompressed (the header would outweigh the saving).
MIN_COMPRESS_BYTES = 1024


def too_large(size: int | str, limit: int) -> InvalidArgumentError:
    """The error for a body over the limit, worded as Triton words it."""
    return InvalidArgumentError(
        f"Request JSON size of {size} bytes exceeds the maximum allowed value of {limit} bytes. "
        "Use --http-max-input-size to increase the limit."
    )


def decode_body(body: bytes, coding: bytes | None, limit: int) -> bytes:
    """The request body with its ``Content-Encoding`` undone (None or identity: unchanged).

    Raises InvalidArgumentError for an unsupported coding, data that does not decompress, or a
    decompressed body over ``limit`` bytes.
    """
    if coding is None:
        return body
    name = coding.decode(errors="replace").strip().lower()
    if name in ("", "identity"):
        return body
    wbits = _WBITS.get(name)
    if wbits is None:
        raise InvalidArgumentError(
            f"unsupported Content-Encoding '{name}': expected gzip, deflate or identity"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise too_large(f"more than {limit}", limit)
        out += inflater.flush()
    except zlib.error as exc:
        raise InvalidArgumentError(f"the {name} request body does not decompress: {exc}") from None
    if len(out) > limit:
        raise too_large(len(out), limit)
    if not inflater.eof:
        raise InvalidArgumentError(f"the {name} request body is truncated")
    return out


def response_coding(accept: bytes | None) -> str | None:
    """The coding to compress a response with for ``Accept-Encoding`` (gzip preferred over
    deflate at equal weight; None: send it as is). Weights of 0 exclude a coding."""
    if not accept:
        return None
    weights: dict[str, float] = {}
    for part in accept.decode(errors="replace").split(","):
        name, _, params = part.strip().partition(";")
        weight = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                weight = float(params[2:])
            except ValueError:
                weight = 0.0
        weights[name.strip().lower()] = weight
    star = weights.get("*", 0.0)
    best = None
    for name in ("gzip", "deflate"):
        weight = weights.get(name, star)
        if weight > 0 and (best is None or weight > weights.get(best, star)):
            best = name
    return best


def encode_body(content: bytes, coding: str) -> bytes:
    """``content`` compressed with ``coding`` (gzip or deflate)."""
    if coding == "gzip":
        return gzip.compress(content, compresslevel=1)
    return zlib.compress(content, 1)
