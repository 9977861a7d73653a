"""HTTP protocol completeness against a real server: compressed bodies and responses (and a
compression bomb), raw binary requests with a variable dimension and BYTES, duplicate outputs,
Triton's JSON depth, and the client errors that must be 400."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from _serving import EXAMPLE_REPO, ServerProcess, start_server

BODY_LIMIT = 1_000_000


def _identity(root: Path, name: str, elem: int, triton: str, dims: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", elem, None)],
        [helper.make_tensor_value_info("y", elem, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (root / name / "1").mkdir(parents=True)
    onnx.save(model, str(root / name / "1" / "model.onnx"))
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        f'input {{ name: "x" data_type: {triton} dims: {dims} }}\n'
        f'output {{ name: "y" data_type: {triton} dims: {dims} }}\n'
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    import shutil

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(EXAMPLE_REPO / "digits", root / "digits")
    _identity(root, "vector", TensorProto.FLOAT, "TYPE_FP32", "[ 2, -1 ]")
    _identity(root, "text", TensorProto.STRING, "TYPE_STRING", "[ 1 ]")
    srv = start_server("--model-repo", str(root), "--max-body-bytes", str(BODY_LIMIT))
    yield srv
    assert srv.stop() == 0


def request(server: ServerProcess, method: str, path: str, body: bytes = b"", headers=None):
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _digits_body(rows: int = 1, outputs=None) -> bytes:
    doc: dict = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": [0.5] * 64 * rows}
        ]
    }
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    return json.dumps(doc).encode()


def _error(content: bytes) -> str:
    return json.loads(content)["error"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_and_responses(server, coding):
    x = np.random.default_rng(0).random((32, 64), dtype=np.float32)
    with httpclient.InferenceServerClient(server.url) as c:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        plain = c.infer("digits", [inp])
        packed = c.infer(
            "digits",
            [inp],
            request_compression_algorithm=coding,
            response_compression_algorithm=coding,
        )
    for name in ("label", "probabilities"):
        np.testing.assert_array_equal(packed.as_numpy(name), plain.as_numpy(name))


def test_response_is_compressed_only_when_accepted(server):
    body = _digits_body(rows=32)
    status, headers, content = request(
        server, "POST", "/v2/models/digits/infer", body, {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(content))["model_name"] == "digits"
    status, headers, content = request(
        server, "POST", "/v2/models/digits/infer", body, {"Accept-Encoding": "br, gzip;q=0"}
    )
    assert status == 200 and "content-encoding" not in headers
    assert json.loads(content)["model_name"] == "digits"


def test_compressed_body_on_a_control_route(server):
    body = zlib.compress(b'{"ready": true}')
    status, _, content = request(
        server, "POST", "/v2/repository/index", body, {"Content-Encoding": "deflate"}
    )
    assert status == 200 and {r["name"] for r in json.loads(content)} == {
        "digits",
        "vector",
        "text",
    }


def test_gzip_bomb_is_refused_and_the_server_keeps_serving(server):
    bomb = gzip.compress(b"[" * (BODY_LIMIT * 20), compresslevel=9)
    assert len(bomb) < BODY_LIMIT // 10
    status, _, content = request(
        server, "POST", "/v2/models/digits/infer", bomb, {"Content-Encoding": "gzip"}
    )
    assert status == 400
    assert _error(content) == (
        f"Request JSON size of more than {BODY_LIMIT} bytes exceeds the maximum allowed value "
        f"of {BODY_LIMIT} bytes. Use --http-max-input-size to increase the limit."
    )
    assert request(server, "POST", "/v2/models/digits/infer", _digits_body())[0] == 200


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"not gzip", {"Content-Encoding": "gzip"}, "the gzip request body does not decompress"),
        (gzip.compress(b"{}")[:-6], {"Content-Encoding": "gzip"}, "body is truncated"),
        (b"{}", {"Content-Encoding": "br"}, "unsupported Content-Encoding 'br'"),
    ],
)
def test_bad_compressed_bodies(server, body, headers, message):
    status, _, content = request(server, "POST", "/v2/models/digits/infer", body, headers)
    assert status == 400 and message in _error(content)


def test_raw_binary_with_a_variable_dimension(server):
    x = np.arange(10, dtype=np.float32)
    status, headers, content = request(
        server,
        "POST",
        "/v2/models/vector/infer",
        x.tobytes(),
        {"Inference-Header-Content-Length": "0"},
    )
    assert status == 200, content
    length = int(headers["inference-header-content-length"])
    header = json.loads(content[:length])
    assert header["outputs"][0]["shape"] == [2, 5]
    np.testing.assert_array_equal(np.frombuffer(content[length:], "<f4"), x)
    status, _, content = request(
        server,
        "POST",
        "/v2/models/vector/infer",
        b"\x00" * 12,
        {"Inference-Header-Content-Length": "0"},
    )
    assert status == 400
    assert "12 bytes is not a whole number of 8-byte slices of input 'x'" in _error(content)


def test_raw_binary_bytes_input_is_the_whole_body(server):
    payload = b"hello \x00 servekit"
    status, headers, content = request(
        server,
        "POST",
        "/v2/models/text/infer",
        payload,
        {"Inference-Header-Content-Length": "0"},
    )
    assert status == 200, content
    length = int(headers["inference-header-content-length"])
    assert json.loads(content[:length])["outputs"][0]["shape"] == [1]
    data = content[length:]
    assert int.from_bytes(data[:4], "little") == len(payload) and data[4:] == payload


def test_duplicate_outputs_are_refused(server):
    status, _, content = request(
        server, "POST", "/v2/models/digits/infer", _digits_body(outputs=["label", "label"])
    )
    assert status == 400
    assert _error(content) == "output 'label' already exists in request"


def test_json_depth_50_is_accepted_as_triton_does(server):
    nested = b"[" * 48 + b"0.5" + b"]" * 48
    doc = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": '
    body = doc + nested + b"}]}"
    status, _, content = request(server, "POST", "/v2/models/digits/infer", body)
    assert status == 400  # nesting is fine; the data holds 1 element, not 64
    assert "1 data elements, but shape [1, 64] needs 64" in _error(content)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v2/repository/index", b'{"ready": [true]}', "field 'ready' must be a boolean"),
        (
            "/v2/repository/models/digits/load",
            b'{"parameters": {"file:1/model.onnx": "AAAA"}}',
            "loading a model from file overrides is not supported",
        ),
        (
            "/v2/repository/models/digits/load",
            b'{"parameters": {"colour": "blue"}}',
            "unknown load parameter(s) ['colour']",
        ),
        ("/v2/repository/index", b"[1, 2", "failed to parse the request JSON buffer"),
        (
            "/v2/models/digits/infer",
            json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64], "data": []}]}
            ).encode(),
            "has a negative dimension -1",
        ),
    ],
)
def test_client_errors_are_400(server, path, body, message):
    status, _, content = request(server, "POST", path, body)
    assert status == 400 and message in _error(content)
    assert request(server, "GET", "/v2/health/ready")[0] == 200
