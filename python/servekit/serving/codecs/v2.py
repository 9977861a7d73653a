"""KServe v2 inference requests and responses <-> numpy, with Triton's binary tensor extension.

A request body is a JSON header, optionally followed by binary tensor data; the header's length
comes from the ``Inference-Header-Content-Length`` HTTP header (absent: the whole body is JSON;
0: the whole body is the raw binary data of a model's single input). Each input either carries
``data`` (JSON) or ``parameters.binary_data_size`` (its bytes follow the header, in input
order). Outputs are returned as binary when the request asks (``binary_data_output`` for all,
or ``parameters.binary_data`` per requested output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError
from servekit.serving.codecs import json
from servekit.serving.codecs.tensor import (
    WIRE_DTYPES,
    check_datatype,
    check_shape,
    expected_byte_size,
    from_binary,
    from_json,
    to_binary,
    to_json,
)
from servekit.serving.shm import SharedMemoryRegistry, shm_reference
from servekit.signature import datatype_of

#: Default nesting limit of a request's JSON: Triton's (100; a rank-8 nested ``data`` list
#: needs about 11).
DEFAULT_MAX_JSON_DEPTH = 100


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` None means the request's default; ``shm``
    the ``(region, offset, byte_size)`` to write it to instead of the response."""

    name: str
    binary: bool | None = None
    shm: tuple[str, int, int] | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request: input arrays by name plus the protocol options."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False
    priority: int | None = None
    timeout_us: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    """Output arrays in response order, each with whether it goes out as binary."""

    model_name: str
    model_version: str
    outputs: list[tuple[str, np.ndarray, bool]]
    id: str | None = None
    #: Outputs written to shared memory: their response parameters (no data is sent).
    shared: dict[str, dict[str, Any]] = field(default_factory=dict)


def decode_request(
    body: bytes,
    header_length: int | None,
    *,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    shm: SharedMemoryRegistry | None = None,
) -> InferRequest:
    """Decode a v2 request body whose JSON header is ``header_length`` bytes (None: all of it).

    Returns the request with fixed-size binary tensors as read-only views of ``body``. Raises
    InvalidArgumentError with a precise message for any malformed part (header 0 is handled by
    :func:`decode_raw_request`, which needs the model's input).
    """
    total = len(body)
    if header_length is None:
        header_length = total
    elif header_length < 0 or header_length > total:
        raise InvalidArgumentError(
            f"Inference-Header-Content-Length {header_length} is outside the body of {total} bytes"
        )
    doc = json.loads(body[:header_length] if header_length != total else body, max_json_depth)
    if not isinstance(doc, dict):
        raise InvalidArgumentError("the inference request must be a JSON object")
    params = _parameters(doc.get("parameters"), "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgumentError("the inference request needs a non-empty 'inputs' list")

    view = memoryview(body)
    offset = header_length
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for raw in raw_inputs:
        if not isinstance(raw, dict):
            raise InvalidArgumentError("each entry of 'inputs' must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("an input has no 'name'")
        if name in inputs:
            raise InvalidArgumentError(f"input '{name}' appears more than once")
        datatype = check_datatype(name, raw.get("datatype"))
        shape, count = check_shape(name, datatype, raw.get("shape"))
        in_params = _parameters(raw.get("parameters"), f"input '{name}'")
        size = in_params.get("binary_data_size")
        ref = shm_reference(in_params, f"input '{name}'")
        if ref is not None:
            if "data" in raw or size is not None:
                raise InvalidArgumentError(f"input '{name}' has both shared memory and data")
            inputs[name] = read_shared_input(shm, ref, name, datatype, shape, count)
        elif size is not None:
            if "data" in raw:
                raise InvalidArgumentError(f"input '{name}' has both 'data' and 'binary_data_size'")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgumentError(
                    f"input '{name}': binary_data_size must be a non-negative integer"
                )
            if offset + size > total:
                raise InvalidArgumentError(
                    f"input '{name}': binary_data_size {size} runs past the end of the body "
                    f"({total - offset} bytes of binary data remain)"
                )
            expected = expected_byte_size(datatype, count)
            if expected is not None and size != expected:
                raise InvalidArgumentError(
                    f"input '{name}': binary_data_size {size}, but shape {list(shape)} of "
                    f"{datatype} needs {expected} bytes"
                )
            inputs[name] = from_binary(name, datatype, shape, count, view[offset : offset + size])
            offset += size
        elif "data" in raw:
            inputs[name] = from_json(name, datatype, shape, count, raw["data"])
        else:
            raise InvalidArgumentError(f"input '{name}' has neither 'data' nor 'binary_data_size'")
        datatypes[name] = datatype
    if offset != total:
        raise InvalidArgumentError(
            f"binary data sizes add up to {offset - header_length} bytes, but the body holds "
            f"{total - header_length} bytes after the JSON header"
        )

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgumentError("'id' must be a string")
    return assemble_request(
        inputs, datatypes, request_id, _requested_outputs(doc.get("outputs")), params
    )


def assemble_request(
    inputs: dict[str, np.ndarray],
    datatypes: dict[str, str],
    request_id: str | None,
    outputs: list[RequestedOutput] | None,
    params: dict[str, Any],
) -> InferRequest:
    """An :class:`InferRequest` from decoded inputs and the request-level ``params`` (every
    front end's one reader of ``binary_data_output``, ``priority`` and ``timeout``). Raises
    InvalidArgumentError for a parameter of the wrong type."""
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=request_id,
        outputs=outputs,
        binary_output=_flag(params, "binary_data_output", "request"),
        priority=_non_negative(params, "priority"),
        timeout_us=_non_negative(params, "timeout"),
        parameters=params,
    )


def decode_raw_request(
    body: bytes, name: str, datatype: str, dims: tuple[int, ...], batched: bool
) -> InferRequest:
    """Decode a raw binary request (header length 0) for a model's single input.

    ``dims`` are the input's dimensions without the batch dimension when ``batched``. The
    shape comes from the body's length: with fixed ``dims``, a batched input gets as many rows
    as the body holds; with one variable dimension (-1), that dimension takes what the body
    holds (batch size 1 when batched). A BYTES input is one element, the whole body (its dims
    must allow one element). Returns a request whose outputs all come back as binary. Raises
    InvalidArgumentError for more than one variable dimension, a BYTES input that needs more
    than one element, or a body that does not divide into the shape.
    """
    lead = (1,) if batched else ()
    if datatype == "BYTES":
        if any(d not in (1, -1) for d in dims):
            raise InvalidArgumentError(
                f"a raw binary request carries one BYTES element, but input '{name}' has "
                f"dimensions {list(dims)}"
            )
        shape = (*lead, *(1 for _ in dims))
        arr = np.empty(1, dtype=object)
        arr[0] = bytes(body)
        return InferRequest(
            inputs={name: arr.reshape(shape)}, datatypes={name: datatype}, binary_output=True
        )
    variable = [i for i, d in enumerate(dims) if d < 0]
    if len(variable) > 1:
        raise InvalidArgumentError(
            f"a raw binary request needs input '{name}' to have at most one variable "
            f"dimension, not {list(dims)}"
        )
    fixed = [d for d in dims if d >= 0]
    _, fixed_count = check_shape(name, datatype, fixed)
    unit = expected_byte_size(datatype, fixed_count) or 0
    if not variable and not batched:
        shape = tuple(dims)
        if len(body) != unit:
            raise InvalidArgumentError(
                f"input '{name}': {len(body)} bytes of binary data, but shape {list(shape)} of "
                f"{datatype} needs {unit}"
            )
    else:
        if unit == 0 or len(body) % unit:
            what = "slices" if variable else "rows"
            raise InvalidArgumentError(
                f"a raw binary request of {len(body)} bytes is not a whole number of "
                f"{unit}-byte {what} of input '{name}'"
            )
        if variable:
            filled = list(dims)
            filled[variable[0]] = len(body) // unit
            shape = (*lead, *filled)
        else:
            shape = (len(body) // unit, *dims)
    count = len(body) // WIRE_DTYPES[datatype].itemsize
    arr = from_binary(name, datatype, shape, count, memoryview(body))
    return InferRequest(inputs={name: arr}, datatypes={name: datatype}, binary_output=True)


def encode_response(response: InferResponse) -> tuple[bytes, int | None]:
    """Encode a response; return the body and the JSON header length (None if all JSON)."""
    header: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        header["id"] = response.id
    outputs = []
    chunks: list[bytes] = []
    for name, arr, binary in response.outputs:
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(arr.dtype),
            "shape": list(arr.shape),
        }
        if name in response.shared:
            entry["parameters"] = response.shared[name]
        elif binary:
            raw = to_binary(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json(arr)
        outputs.append(entry)
    header["outputs"] = outputs
    head = json.dumps(header)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def _parameters(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{where} 'parameters' must be a JSON object")
    return value


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{where} parameter '{key}' must be true or false")
    return value


def _non_negative(params: dict[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"parameter '{key}' must be a non-negative integer")
    return value


def _requested_outputs(value: object) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgumentError("'outputs' must be a list")
    requested = []
    for raw in value:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidArgumentError("each entry of 'outputs' must be an object with a 'name'")
        name = raw["name"]
        params = _parameters(raw.get("parameters"), f"output '{name}'")
        ref = shm_reference(params, f"output '{name}'")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidArgumentError(f"output '{name}' parameter 'binary_data' must be a bool")
        if params.get("classification"):
            raise InvalidArgumentError(f"output '{name}': classification is not supported")
        requested.append(RequestedOutput(name, binary, ref))
    return requested


def read_shared_input(
    shm: SharedMemoryRegistry | None,
    ref: tuple[str, int, int],
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    count: int,
) -> np.ndarray:
    """Input ``name`` read (copied) from the shared memory ``ref`` names. InvalidArgumentError
    for an unknown region, a span outside it, or a size that does not match the shape."""
    if shm is None:
        raise InvalidArgumentError(f"input '{name}': shared memory is not available here")
    region, offset, size = ref
    what = f"input '{name}'"
    expected = expected_byte_size(datatype, count)
    if expected is not None and size != expected:
        raise InvalidArgumentError(
            f"{what}: shared_memory_byte_size {size}, but shape {list(shape)} of {datatype} "
            f"needs {expected} bytes"
        )
    data = shm.get(region).read(offset, size, what)
    return from_binary(name, datatype, shape, count, memoryview(data))
