"""The server end to end: tritonclient.http and raw HTTP against one real ``servekit serve``
process on 127.0.0.1 (started once for the module)."""

from __future__ import annotations

import http.client
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

from _serving import DATATYPES, ServerProcess, build_repository, start_server

BODY_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = build_repository(tmp_path_factory.mktemp("repo"))
    # Explicit control: the load/unload tests need it (the default mode, none, refuses them);
    # not strict: the repository holds a broken model on purpose.
    control = ("--model-control-mode", "explicit", "--load-model", "*", "--no-strict-readiness")
    srv = start_server("--model-repo", str(repo), "--max-body-bytes", str(BODY_LIMIT), *control)
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(
        server.url, concurrency=4, connection_timeout=30, network_timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def request(server: ServerProcess, method: str, path: str, body: bytes = b"", headers=None):
    """One raw HTTP request; returns (status, headers, body)."""
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post_error(server: ServerProcess, path: str, body: bytes, headers=None) -> tuple[int, str]:
    status, hdrs, content = request(server, "POST", path, body, headers)
    assert hdrs["content-type"] == "application/json"
    return status, json.loads(content)["error"]


def infer_digits(client, x: np.ndarray, binary: bool = True, model: str = "digits"):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    return client.infer(model, [inp], outputs=outputs)


# -- health, metadata, configuration -----------------------------------------------------------


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "servekit"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_metadata_and_readiness(client):
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("broken")
    assert client.get_model_metadata("versioned")["versions"] == ["2", "3"]


def test_model_config_is_triton_json(client):
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 64
    assert config["platform"] == "onnxruntime_onnx"
    assert "dynamic_batching" in config
    auto = client.get_model_config("auto")
    assert auto["max_batch_size"] == 4  # completed from the ONNX graph, as Triton does
    assert auto["input"][0]["name"] == "x"


def test_repository_index_reports_broken_model(client):
    index = {(r["name"], r.get("version")): r for r in client.get_model_repository_index()}
    assert index[("digits", "1")]["state"] == "READY"
    assert index[("broken", "1")]["state"] == "UNAVAILABLE"
    assert "cannot load ONNX model" in index[("broken", "1")]["reason"]
    assert index[("versioned", "3")]["state"] == "READY"
    assert ("versioned", "1") not in index


# -- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_infer_digits_matches_onnxruntime(client, digits, binary):
    import onnxruntime as ort

    from _serving import EXAMPLE_REPO

    x = digits[0][:16]
    result = infer_digits(client, x, binary)
    session = ort.InferenceSession(str(EXAMPLE_REPO / "digits" / "1" / "model.onnx"))
    label, probs = session.run(None, {"input": x})
    np.testing.assert_array_equal(result.as_numpy("label").reshape(-1), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probs, rtol=1e-6, atol=1e-7)
    assert (result.as_numpy("label").reshape(-1) == digits[1][:16]).mean() > 0.8


def test_infer_int8_and_async(client, digits):
    x = digits[0][:8]
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    pending = [client.async_infer("digits_int8", [inp]) for _ in range(8)]
    results = [p.get_result(timeout=30) for p in pending]
    for r in results:
        assert r.as_numpy("probabilities").shape == (8, 10)
        np.testing.assert_allclose(r.as_numpy("probabilities").sum(axis=1), 1.0, rtol=1e-4)


def test_requested_outputs_subset(client, digits):
    inp = httpclient.InferInput("input", [2, 64], "FP32")
    inp.set_data_from_numpy(digits[0][:2])
    result = client.infer(
        "digits", [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)]
    )
    assert result.as_numpy("label").shape == (2, 1)
    assert result.as_numpy("probabilities") is None
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]


def _datatype_value(dt: str) -> np.ndarray:
    np_dtype = DATATYPES[dt][2]
    if dt == "BYTES":
        # ONNX Runtime string tensors hold UTF-8 (arbitrary bytes: see the codec tests).
        return np.array([b"", b"servekit", "ünï".encode(), b"a\x00b"], dtype=object)
    if dt == "BOOL":
        return np.array([True, False, True], dtype=bool)
    if np.dtype(np_dtype).kind in "iu":
        info = np.iinfo(np_dtype)
        return np.array([info.min, 0, 1, info.max], dtype=np_dtype)
    return np.array([-1.5, 0.0, 3.25, 65504.0], dtype=np_dtype)


@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_round_trips(client, binary):
    inputs, expected = [], {}
    for dt in DATATYPES:
        value = _datatype_value(dt)
        inp = httpclient.InferInput(f"in_{dt}", list(value.shape), dt)
        inp.set_data_from_numpy(value, binary_data=binary)
        inputs.append(inp)
        expected[f"out_{dt}"] = value
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in expected]
    result = client.infer("identity", inputs, outputs=outputs)
    for name, value in expected.items():
        got = result.as_numpy(name)
        if value.dtype == object:
            as_bytes = [v.encode() if isinstance(v, str) else bytes(v) for v in got]
            assert as_bytes == list(value), name
        else:
            assert got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, value, err_msg=name)


def test_raw_binary_request_with_header_length_zero(server, digits):
    x = digits[0][:3]
    status, hdrs, body = request(
        server,
        "POST",
        "/v2/models/digits/infer",
        x.tobytes(),
        {"Inference-Header-Content-Length": "0"},
    )
    assert status == 200
    header_len = int(hdrs["inference-header-content-length"])
    header = json.loads(body[:header_len])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [3 * 8, 3 * 10 * 4]
    labels = np.frombuffer(body[header_len : header_len + sizes[0]], dtype="<i8")
    assert (labels == digits[1][:3]).sum() >= 2


def test_versions_and_policy(client):
    x = np.zeros((1, 4), dtype=np.float32)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    latest = client.infer("versioned", [inp])
    assert latest.as_numpy("y")[0, 0] == 3.0
    assert latest.get_response()["model_version"] == "3"
    assert client.infer("versioned", [inp], model_version="2").as_numpy("y")[0, 0] == 2.0
    with pytest.raises(InferenceServerException) as info:
        client.infer("versioned", [inp], model_version="1")
    assert info.value.status() == "404"
    assert "'versioned' version 1 is not found" in info.value.message()


def test_statistics(client, digits):
    before = client.get_inference_statistics("small")["model_stats"][0]
    x = np.ones((3, 4), dtype=np.float32)
    inp = httpclient.InferInput("x", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(5):
        client.infer("small", [inp])
    stats = client.get_inference_statistics("small")["model_stats"][0]
    assert stats["name"] == "small" and stats["version"] == "1"
    success = stats["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 5
    assert success["ns"] > 0
    assert stats["inference_count"] == before["inference_count"] + 15
    assert stats["execution_count"] == before["execution_count"] + 5
    batch3 = next(b for b in stats["batch_stats"] if b["batch_size"] == 3)
    assert batch3["compute_infer"]["count"] >= 5
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats["inference_stats"][key]["count"] >= 5
    everything = client.get_inference_statistics()["model_stats"]
    assert {"digits", "small", "identity"} <= {s["name"] for s in everything}
    only_v3 = client.get_inference_statistics("versioned", "3")["model_stats"]
    assert [s["version"] for s in only_v3] == ["3"]


def test_metrics(server, client, digits):
    infer_digits(client, digits[0][:4])
    status, hdrs, body = request(server, "GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_pending_request_count",
        "nv_inference_request_failure",
    ):
        assert f"# TYPE {name} " in text, name
    assert 'nv_inference_request_success{model="digits",version="1"} ' in text
    for name in ("servekit_request_duration_seconds", "servekit_queue_duration_seconds"):
        assert f'{name}_bucket{{model="digits",version="1",le="+Inf"}}' in text
    assert 'servekit_batch_size_count{model="digits",version="1"}' in text


def test_load_unload_and_config_override(client):
    assert client.is_model_ready("versioned")
    client.unload_model("versioned")
    assert not client.is_model_ready("versioned")
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("versioned", [inp])
    assert info.value.status() == "503"
    client.load_model("versioned")
    assert client.is_model_ready("versioned", "3")
    config = json.dumps(
        {
            "name": "versioned",
            "platform": "onnxruntime_onnx",
            "max_batch_size": 8,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],
            "version_policy": {"all": {}},
        }
    )
    client.load_model("versioned", config=config)
    assert client.get_model_metadata("versioned")["versions"] == ["1", "2", "3"]
    assert client.infer("versioned", [inp], model_version="1").as_numpy("y")[0, 0] == 1.0
    with pytest.raises(InferenceServerException) as info:
        client.load_model("versioned", config='{"max_batch_size": "many"}')
    assert info.value.status() == "400" and "invalid model config JSON" in info.value.message()
    assert client.is_model_ready("versioned", "1")  # a failed reload keeps what was served
    with pytest.raises(InferenceServerException) as info:
        client.load_model("no_such_model")
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("no_such_model")
    assert info.value.status() == "404"


# -- bad requests: each refused with a precise message; the server keeps serving -------------


def _binary_body(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def _digits_input(**overrides) -> dict:
    entry = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}
    entry.update(overrides)
    return {"inputs": [entry]}


BAD_REQUESTS = [
    ("malformed JSON", b'{"inputs": [', None, 400, "malformed JSON"),
    (
        "deep nesting",
        b'{"inputs": ' + b"[" * 40 + b"]" * 40 + b"}",
        None,
        400,
        "JSON nesting depth 41 exceeds the limit of 32",
    ),
    (
        "unknown input",
        json.dumps(_digits_input(name="bogus")).encode(),
        None,
        400,
        "unexpected inference input 'bogus' for model 'digits'",
    ),
    (
        "wrong datatype",
        json.dumps(_digits_input(datatype="FP64")).encode(),
        None,
        400,
        "input 'input' has datatype FP64, but model 'digits' expects FP32",
    ),
    (
        "unknown datatype",
        json.dumps(_digits_input(datatype="FLOAT")).encode(),
        None,
        400,
        "input 'input': unknown datatype 'FLOAT'",
    ),
    (
        "data count",
        json.dumps(_digits_input(data=[0.0] * 63)).encode(),
        None,
        400,
        "input 'input': 63 data elements, but shape [1, 64] needs 64",
    ),
    (
        "wrong shape",
        json.dumps(_digits_input(shape=[2, 32])).encode(),
        None,
        400,
        "input 'input' has shape [2, 32], but model 'digits' expects [-1, 64]",
    ),
    (
        "negative dimension",
        json.dumps(_digits_input(shape=[-1, 64])).encode(),
        None,
        400,
        "input 'input': shape [-1, 64] has a negative dimension -1",
    ),
    (
        "element count overflow",
        json.dumps(_digits_input(shape=[2**40, 2**40])).encode(),
        None,
        400,
        f"has {2**80} elements, which overflows 64 bits",
    ),
    (
        "byte size overflow",
        json.dumps(_digits_input(shape=[2**31, 2**31])).encode(),
        None,
        400,
        f"of FP32 is {2**64} bytes, which overflows 64 bits",
    ),
    (
        "batch over max_batch_size",
        json.dumps(_digits_input(shape=[65, 64], data=[0.0] * 65 * 64)).encode(),
        None,
        400,
        "batch size 65 exceeds the max_batch_size 64 of model 'digits'",
    ),
    (
        "non-numeric data",
        json.dumps(_digits_input(data=["a"] * 64)).encode(),
        None,
        400,
        "input 'input': FP32 data holds non-numeric values",
    ),
    (
        "no inputs",
        b'{"inputs": []}',
        None,
        400,
        "needs a non-empty 'inputs' list",
    ),
    (
        "unknown output",
        json.dumps({**_digits_input(), "outputs": [{"name": "logits"}]}).encode(),
        None,
        400,
        "unknown output 'logits' for model 'digits'",
    ),
    (
        "bad header length",
        b"{}",
        {"Inference-Header-Content-Length": "x12"},
        400,
        "Inference-Header-Content-Length 'x12' is not an integer",
    ),
    (
        "header length past body",
        b"{}",
        {"Inference-Header-Content-Length": "99"},
        400,
        "Inference-Header-Content-Length 99 is outside the body of 2 bytes",
    ),
    (
        "raw body not whole rows",
        b"\x00" * 100,
        {"Inference-Header-Content-Length": "0"},
        400,
        "a raw binary request of 100 bytes is not a whole number of 256-byte rows",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_refused_precisely(server, client, digits, body, headers, status, message):
    got_status, error = post_error(server, "/v2/models/digits/infer", body, headers)
    assert got_status == status
    assert message in error
    assert client.is_server_live()
    assert infer_digits(client, digits[0][:1]).as_numpy("label").shape == (1, 1)


def test_missing_input(server):
    body = {"inputs": [{"name": "in_FP32", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    status, error = post_error(server, "/v2/models/identity/infer", json.dumps(body).encode())
    assert status == 400
    assert "model 'identity' needs input 'in_BOOL', which is missing" in error


@pytest.mark.parametrize(
    ("declared", "actual", "message"),
    [
        (256, 300, "binary data sizes add up to 256 bytes, but the body holds 300 bytes"),
        (256, 200, "binary_data_size 256 runs past the end of the body (200 bytes"),
        (252, 252, "binary_data_size 252, but shape [1, 64] of FP32 needs 256 bytes"),
    ],
)
def test_binary_sizes_that_do_not_add_up(server, client, declared, actual, message):
    header = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [1, 64],
                "parameters": {"binary_data_size": declared},
            }
        ]
    }
    body, headers = _binary_body(header, b"\x00" * actual)
    status, error = post_error(server, "/v2/models/digits/infer", body, headers)
    assert status == 400 and message in error
    assert client.is_server_live()


def test_bytes_lengths_that_do_not_add_up(server):
    data = struct.pack("<I", 10) + b"short"
    header = {
        "inputs": [
            {
                "name": "in_BYTES",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    body, headers = _binary_body(header, data)
    status, error = post_error(server, "/v2/models/identity/infer", body, headers)
    assert status == 400
    assert "BYTES element 0 declares 10 bytes but only 5 remain" in error


def test_body_over_the_limit(server, client, digits):
    body = b"{" + b" " * (BODY_LIMIT + 10) + b"}"
    status, error = post_error(server, "/v2/models/digits/infer", body)
    assert status == 400
    assert f"request body of {len(body)} bytes exceeds the limit of {BODY_LIMIT} bytes" in error
    assert infer_digits(client, digits[0][:1]).as_numpy("label").shape == (1, 1)


def test_body_over_the_limit_on_a_control_route(server, client):
    body = b"{" + b" " * (BODY_LIMIT + 10) + b"}"
    status, error = post_error(server, "/v2/repository/index", body)
    assert status == 400
    assert f"request body of {len(body)} bytes exceeds the limit of {BODY_LIMIT} bytes" in error
    assert client.get_model_repository_index()


def test_unknown_and_unavailable_models(server, client):
    body = json.dumps(_digits_input()).encode()
    status, error = post_error(server, "/v2/models/nope/infer", body)
    assert (status, error) == (404, "Request for unknown model: 'nope' is not found")
    status, error = post_error(server, "/v2/models/digits/versions/7/infer", body)
    assert status == 404 and "'digits' version 7 is not found" in error
    status, error = post_error(server, "/v2/models/broken/infer", body)
    assert status == 503 and "model 'broken' is not ready: cannot load ONNX model" in error
    status, _, content = request(server, "GET", "/v2/models/nope")
    assert status == 404 and b"unknown model" in content
    assert client.is_server_ready()


def test_failures_are_counted(server, client):
    status, _, body = request(server, "GET", "/metrics")
    assert status == 200
    assert 'nv_inference_request_failure{model="digits",version="1",reason="OTHER"}' in (
        body.decode()
    )


def test_example_repository_is_committed():
    from _serving import EXAMPLE_REPO

    for name in ("digits", "digits_int8"):
        assert (EXAMPLE_REPO / name / "config.pbtxt").is_file()
        assert (EXAMPLE_REPO / name / "1" / "model.onnx").is_file()
    assert Path(EXAMPLE_REPO / "generate.py").is_file()
