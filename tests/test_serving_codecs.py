"""Wire codecs: every datatype in binary and JSON form, zero-copy decoding, strict validation."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from servekit.errors import InvalidArgumentError
from servekit.serving import DEFAULT_MAX_BODY_BYTES
from servekit.serving.codecs import (
    InferResponse,
    decode_raw_request,
    decode_request,
    encode_response,
)
from servekit.serving.codecs.json import loads, nesting_depth
from servekit.serving.codecs.tensor import WIRE_DTYPES, from_binary, from_json, to_binary, to_json

NUMERIC = [dt for dt in WIRE_DTYPES if dt != "BYTES"]


def sample(dt: str) -> np.ndarray:
    if dt == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = WIRE_DTYPES[dt]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dtype)
    return np.array([[-1.5, 0.0, 2.25], [1e-3, 7.0, -0.0]], dtype=dtype)


def binary_request(arrays: dict[str, tuple[str, np.ndarray]], **params) -> tuple[bytes, int]:
    inputs, chunks = [], []
    for name, (dt, arr) in arrays.items():
        raw = to_binary(arr)
        inputs.append(
            {
                "name": name,
                "datatype": dt,
                "shape": list(arr.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    head = json.dumps({"inputs": inputs, "parameters": params}).encode()
    return head + b"".join(chunks), len(head)


@pytest.mark.parametrize("dt", NUMERIC)
def test_binary_round_trip_without_copy(dt):
    arr = sample(dt)
    body, header = binary_request({"x": (dt, arr)})
    request = decode_request(body, header)
    got = request.inputs["x"]
    np.testing.assert_array_equal(got, arr)
    assert got.dtype == arr.dtype and request.datatypes["x"] == dt
    assert np.shares_memory(got, np.frombuffer(body, dtype=np.uint8))  # a view of the body


@pytest.mark.parametrize("dt", NUMERIC)
def test_json_round_trip(dt):
    arr = sample(dt)
    for data in (to_json(arr), arr.tolist()):  # flat and nested
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": dt, "shape": [2, 3], "data": data}]}
        ).encode()
        got = decode_request(body, None).inputs["x"]
        np.testing.assert_array_equal(got, arr)
        assert got.dtype == arr.dtype


def test_bytes_round_trip_binary_with_length_prefixes():
    arr = np.array([b"", b"a\x00\xff", "ü".encode(), b"x" * 300], dtype=object)
    raw = to_binary(arr)
    assert raw[:4] == struct.pack("<I", 0)
    assert raw[4:8] == struct.pack("<I", 3) and raw[8:11] == b"a\x00\xff"
    body, header = binary_request({"s": ("BYTES", arr)})
    got = decode_request(body, header).inputs["s"]
    assert list(got) == list(arr)


def test_bytes_json_strings():
    body = json.dumps(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["hé", ""]}]}
    ).encode()
    got = decode_request(body, None).inputs["s"]
    assert list(got) == ["hé".encode(), b""]
    assert to_json(got) == ["hé", ""]


def test_request_options():
    arr = sample("FP32")
    body, header = binary_request(
        {"x": ("FP32", arr)}, binary_data_output=True, priority=2, timeout=1500
    )
    request = decode_request(body, header)
    assert (request.binary_output, request.priority, request.timeout_us) == (True, 2, 1500)
    body = json.dumps(
        {
            "id": "r1",
            "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}],
        }
    ).encode()
    request = decode_request(body, None)
    assert request.id == "r1"
    assert [(o.name, o.binary) for o in request.outputs] == [("a", True), ("b", None)]


def test_encode_response_mixes_binary_and_json():
    probs = np.arange(6, dtype=np.float32).reshape(2, 3)
    labels = np.array([[1], [2]], dtype=np.int64)
    body, header_len = encode_response(
        InferResponse("m", "1", [("p", probs, True), ("l", labels, False)], id="r")
    )
    header = json.loads(body[:header_len])
    assert header["id"] == "r" and header["model_version"] == "1"
    p, lab = header["outputs"]
    assert p == {
        "name": "p",
        "datatype": "FP32",
        "shape": [2, 3],
        "parameters": {"binary_data_size": 24},
    }
    assert lab["data"] == [1, 2] and lab["datatype"] == "INT64"
    np.testing.assert_array_equal(np.frombuffer(body[header_len:], "<f4").reshape(2, 3), probs)
    body, header_len = encode_response(InferResponse("m", "1", [("l", labels, False)]))
    assert header_len is None and json.loads(body)["outputs"][0]["shape"] == [2, 1]


def test_raw_binary_request():
    arr = np.arange(8, dtype=np.float32).reshape(2, 4)
    request = decode_raw_request(arr.tobytes(), "x", "FP32", (4,), batched=True)
    np.testing.assert_array_equal(request.inputs["x"], arr)
    assert request.binary_output
    unbatched = decode_raw_request(arr.tobytes(), "x", "FP32", (2, 4), batched=False)
    assert unbatched.inputs["x"].shape == (2, 4)
    with pytest.raises(InvalidArgumentError, match="not a whole number of 16-byte rows"):
        decode_raw_request(b"\x00" * 20, "x", "FP32", (4,), batched=True)
    with pytest.raises(InvalidArgumentError, match="one BYTES element, but input 'x' has"):
        decode_raw_request(b"", "x", "BYTES", (4,), batched=True)
    with pytest.raises(InvalidArgumentError, match="at most one variable dimension, not"):
        decode_raw_request(b"", "x", "FP32", (-1, -1), batched=False)
    with pytest.raises(InvalidArgumentError, match="not a whole number of 8-byte slices"):
        decode_raw_request(b"\x00" * 20, "x", "FP32", (2, -1), batched=False)


def test_raw_binary_request_with_a_variable_dimension_and_bytes():
    arr = np.arange(12, dtype=np.float32)
    batched = decode_raw_request(arr.tobytes(), "x", "FP32", (-1,), batched=True)
    np.testing.assert_array_equal(batched.inputs["x"], arr.reshape(1, 12))
    unbatched = decode_raw_request(arr.tobytes(), "x", "FP32", (3, -1), batched=False)
    np.testing.assert_array_equal(unbatched.inputs["x"], arr.reshape(3, 4))
    text = decode_raw_request(b"raw \x00 bytes", "s", "BYTES", (1,), batched=False)
    assert text.inputs["s"].shape == (1,) and text.inputs["s"][0] == b"raw \x00 bytes"
    rows = decode_raw_request(b"abc", "s", "BYTES", (-1,), batched=True)
    assert rows.inputs["s"].shape == (1, 1) and rows.inputs["s"][0, 0] == b"abc"
    with pytest.raises(InvalidArgumentError, match="20 bytes of binary data, but shape"):
        decode_raw_request(b"\x00" * 20, "x", "FP32", (2, 4), batched=False)


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth(b"1") == 0
    assert nesting_depth(b"[[1], [2, [3]]]") == 3
    assert nesting_depth(b'{"a": "[[[[{{{"}') == 1
    assert nesting_depth(b'{"a": "\\"[[[", "b": [[1]]}') == 3
    assert nesting_depth(b'{"a": "\\\\", "b": [[1]]}') == 3
    assert loads(b"[[[1]]]", 3) == [[[1]]]
    with pytest.raises(InvalidArgumentError, match="JSON nesting depth 4 exceeds the limit of 3"):
        loads(b"[[[[1]]]]", 3)
    with pytest.raises(InvalidArgumentError, match="failed to parse the request JSON buffer: "):
        loads(b"[1,", 3)


def test_default_body_limit_is_64_mib():
    assert DEFAULT_MAX_BODY_BYTES == 64 * 1024 * 1024


def _one(**entry) -> bytes:
    base = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}
    base.update(entry)
    return json.dumps({"inputs": [base]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "must be a JSON object"),
        (b'{"inputs": {}}', "non-empty 'inputs' list"),
        (b'{"inputs": [1]}', "each entry of 'inputs' must be a JSON object"),
        (_one(name=""), "an input has no 'name'"),
        (_one(shape="2"), "input 'x': shape must be a list of integers"),
        (_one(shape=[2.5]), "input 'x': shape [2.5] holds a non-integer"),
        (_one(shape=[-2]), "input 'x': shape [-2] has a negative dimension -2"),
        (_one(data=[1.0, 2.0, 3.0]), "input 'x': 3 data elements, but shape [2] needs 2"),
        (_one(data=[[1.0], [2.0, 3.0]]), "input 'x': malformed FP32 data"),
        (_one(datatype="INT8", data=[1, 300]), "value 300 is out of range for INT8"),
        (_one(datatype="INT32", data=[1.5, 2]), "INT32 data holds floats"),
        (_one(datatype="BOOL", data=[1, 0]), "BOOL data holds integers"),
        (_one(datatype="BYTES", data=[1, 2]), "BYTES data must be strings, element 0 is int"),
        (_one(data=None), "input 'x': FP32 data holds non-numeric values"),
        (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}).encode(),
         "input 'x' has neither 'data' nor 'binary_data_size'"),
        (_one(parameters={"binary_data_size": 8}), "has both 'data' and 'binary_data_size'"),
        (
            _one(parameters={"shared_memory_region": "r"}),
            "input 'x': 'shared_memory_byte_size' must be a non-negative integer",
        ),
        (
            _one(parameters={"shared_memory_region": "r", "shared_memory_byte_size": 8}),
            "input 'x' has both shared memory and data",
        ),
        (json.dumps({"inputs": [json.loads(_one())["inputs"][0]] * 2}).encode(),
         "input 'x' appears more than once"),
        (json.dumps({"id": 3, **json.loads(_one())}).encode(), "'id' must be a string"),
        (json.dumps({"parameters": {"priority": -1}, **json.loads(_one())}).encode(),
         "parameter 'priority' must be a non-negative integer"),
        (json.dumps({"parameters": {"binary_data_output": 1}, **json.loads(_one())}).encode(),
         "request parameter 'binary_data_output' must be true or false"),
        (json.dumps({"outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}],
                     **json.loads(_one())}).encode(),
         "output 'y' parameter 'binary_data' must be a bool"),
    ],
)  # fmt: skip
def test_malformed_requests(body, message):
    with pytest.raises(InvalidArgumentError) as info:
        decode_request(body, None)
    assert message in str(info.value)


def test_binary_size_mismatches():
    arr = np.zeros(4, dtype=np.float32)
    body, header = binary_request({"x": ("FP32", arr)})
    with pytest.raises(InvalidArgumentError, match="add up to 16 bytes, but the body holds 17"):
        decode_request(body + b"\x00", header)
    bad = struct.pack("<I", 2) + b"abc"
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(bad)},
                }
            ]
        }
    ).encode()
    with pytest.raises(InvalidArgumentError, match="1 bytes left over after 1 BYTES elements"):
        decode_request(head + bad, len(head))
    with pytest.raises(InvalidArgumentError, match="BYTES data ends after 0 of 1 elements"):
        from_binary("s", "BYTES", (1,), 1, memoryview(b"\x01"))


def test_huge_shapes_are_refused_before_allocating():
    with pytest.raises(InvalidArgumentError, match="which overflows 64 bits"):
        decode_request(_one(shape=[2**32, 2**32]), None)
    with pytest.raises(InvalidArgumentError, match="of FP64 is 73786976294838206464 bytes"):
        decode_request(_one(datatype="FP64", shape=[2**31, 2**31, 2]), None)
    # Fits in 64 bits but not in the body: refused by the element count check, not allocated.
    with pytest.raises(InvalidArgumentError, match="needs 1099511627776"):
        decode_request(_one(shape=[2**20, 2**20]), None)


def test_json_from_json_scalar_and_empty():
    assert from_json("x", "FP32", (1,), 1, 2.5).tolist() == [2.5]
    assert from_json("x", "INT64", (0, 3), 0, []).shape == (0, 3)
