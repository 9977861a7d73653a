"""One tensor on the wire <-> one numpy array, for every KServe v2 datatype.

Binary form (Triton's binary tensor extension): the row-major little-endian bytes of the
elements; BYTES elements are each a 4-byte little-endian length followed by that many bytes.
JSON form: the elements as a flat or nested list (BYTES as strings).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError
from servekit.signature import datatype_of

#: Little-endian numpy dtype of each fixed-size datatype (BYTES is variable-size: object).
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_U64 = 1 << 64
_LEN = struct.Struct("<I")


def check_datatype(name: str, datatype: object) -> str:
    """Return ``datatype`` if it is a KServe v2 datatype name; InvalidArgumentError otherwise."""
    if not isinstance(datatype, str) or datatype not in WIRE_DTYPES:
        known = ", ".join(WIRE_DTYPES)
        raise InvalidArgumentError(
            f"input '{name}': unknown datatype {datatype!r}, expected one of {known}"
        )
    return datatype


def check_shape(name: str, datatype: str, shape: object) -> tuple[tuple[int, ...], int]:
    """Validate a request shape; return it as a tuple and its element count.

    Raises InvalidArgumentError for a non-list, a non-integer or negative dimension, or a shape
    whose element count or byte size does not fit in 64 bits.
    """
    if not isinstance(shape, list | tuple):
        raise InvalidArgumentError(f"input '{name}': shape must be a list of integers")
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise InvalidArgumentError(f"input '{name}': shape {list(shape)} holds a non-integer")
        if dim < 0:
            raise InvalidArgumentError(
                f"input '{name}': shape {list(shape)} has a negative dimension {dim}"
            )
        count *= dim
    if count >= _U64:
        raise InvalidArgumentError(
            f"input '{name}': shape {list(shape)} has {count} elements, which overflows 64 bits"
        )
    if datatype != "BYTES" and count * WIRE_DTYPES[datatype].itemsize >= _U64:
        raise InvalidArgumentError(
            f"input '{name}': shape {list(shape)} of {datatype} is "
            f"{count * WIRE_DTYPES[datatype].itemsize} bytes, which overflows 64 bits"
        )
    return tuple(shape), count


def expected_byte_size(datatype: str, count: int) -> int | None:
    """Bytes a tensor of ``count`` elements takes in binary form; None for BYTES (variable)."""
    if datatype == "BYTES":
        return None
    return count * WIRE_DTYPES[datatype].itemsize


def from_binary(
    name: str, datatype: str, shape: tuple[int, ...], count: int, buf: memoryview
) -> np.ndarray:
    """Decode a binary tensor into an array of ``shape``, without copying fixed-size types.

    The array is read-only when ``buf`` is. Raises InvalidArgumentError when the byte count does
    not match the shape (or, for BYTES, the length prefixes do not add up).
    """
    if datatype == "BYTES":
        return _bytes_from_binary(name, shape, count, buf)
    expected = count * WIRE_DTYPES[datatype].itemsize
    if len(buf) != expected:
        raise InvalidArgumentError(
            f"input '{name}': {len(buf)} bytes of binary data, but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(buf, dtype=WIRE_DTYPES[datatype]).reshape(shape)


def _bytes_from_binary(
    name: str, shape: tuple[int, ...], count: int, buf: memoryview
) -> np.ndarray:
    out = np.empty(count, dtype=object)
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES data ends after {i} of {count} elements"
            )
        (length,) = _LEN.unpack_from(buf, pos)
        pos += 4
        if pos + length > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES element {i} declares {length} bytes but only "
                f"{end - pos} remain"
            )
        out[i] = bytes(buf[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidArgumentError(
            f"input '{name}': {end - pos} bytes left over after {count} BYTES elements"
        )
    return out.reshape(shape)


def from_json(
    name: str, datatype: str, shape: tuple[int, ...], count: int, data: object
) -> np.ndarray:
    """Decode JSON ``data`` (flat or nested list) into an array of ``shape``.

    Raises InvalidArgumentError when the values are not of the datatype's kind (numbers for
    numeric types, booleans for BOOL, strings for BYTES), are out of range, or their count does
    not match the shape.
    """
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        arr = _bytes_from_json(name, data)
    else:
        arr = _numeric_from_json(name, datatype, data)
    if arr.size != count:
        raise InvalidArgumentError(
            f"input '{name}': {arr.size} data elements, but shape {list(shape)} needs {count}"
        )
    return arr.reshape(shape)


def _numeric_from_json(name: str, datatype: str, data: list[Any]) -> np.ndarray:
    try:
        raw = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgumentError(f"input '{name}': malformed {datatype} data: {exc}") from None
    if raw.size == 0:
        return raw.astype(WIRE_DTYPES[datatype])
    kind = raw.dtype.kind
    target = WIRE_DTYPES[datatype]
    if target.kind in "iu" and kind in "fO":
        # numpy infers float64 (or object) for integers beyond int64, e.g. UINT64 maxima.
        raw = _exact_integers(name, datatype, data, target, raw)
        kind = raw.dtype.kind
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[target.kind]
    if kind not in allowed:
        found = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats"}.get(
            kind, "non-numeric values"
        )
        raise InvalidArgumentError(f"input '{name}': {datatype} data holds {found}")
    if target.kind in "iu":
        info = np.iinfo(target)
        low, high = raw.min(), raw.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidArgumentError(
                f"input '{name}': value {bad} is out of range for {datatype}"
            )
    return raw.astype(target, copy=False)


def _exact_integers(
    name: str, datatype: str, data: list[Any], target: np.dtype[Any], raw: np.ndarray
) -> np.ndarray:
    try:
        exact = np.array(data, dtype=target)
    except OverflowError:
        raise InvalidArgumentError(
            f"input '{name}': a value is out of range for {datatype}"
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"input '{name}': malformed {datatype} data: {exc}") from None
    if raw.dtype.kind == "f" and not np.array_equal(exact.astype(np.float64), raw):
        raise InvalidArgumentError(f"input '{name}': {datatype} data holds floats")
    return exact


def _bytes_from_json(name: str, data: list[Any]) -> np.ndarray:
    flat = _flatten(data)
    out = np.empty(len(flat), dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, str):
            out[i] = item.encode()
        elif isinstance(item, bytes):
            out[i] = item
        else:
            raise InvalidArgumentError(
                f"input '{name}': BYTES data must be strings, element {i} is {type(item).__name__}"
            )
    return out


def _flatten(data: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def to_binary(arr: np.ndarray) -> bytes:
    """Encode an array in binary form (BYTES elements get 4-byte little-endian length prefixes)."""
    if arr.dtype.kind in "OSU":
        parts: list[bytes] = []
        for item in arr.reshape(-1):
            raw = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    wire = WIRE_DTYPES[datatype_of(arr.dtype)]
    return np.ascontiguousarray(arr, dtype=wire).tobytes()


def to_json(arr: np.ndarray) -> list[Any]:
    """Encode an array as a flat JSON list (BYTES elements as UTF-8 strings)."""
    if arr.dtype.kind in "OSU":
        return [
            item.decode(errors="replace") if isinstance(item, bytes) else str(item)
            for item in arr.reshape(-1)
        ]
    return arr.reshape(-1).tolist()
