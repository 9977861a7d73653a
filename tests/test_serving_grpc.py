"""The gRPC front end end to end: tritonclient.grpc (sync, aio, streaming), the raw stubs and
grpc.health.v1 against one real ``servekit serve --grpc-port 0`` process (HTTP on the same
process, for comparisons)."""

from __future__ import annotations

import asyncio
import http.client as http_client
import queue
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import helper
from sklearn.datasets import load_digits
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from _serving import DATATYPES, ServerProcess, build_repository, start_server

BODY_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = build_repository(tmp_path_factory.mktemp("repo"))
    _write_typed_model(repo)
    # As tests/test_serving_server.py: explicit control for the load/unload RPCs, not strict
    # readiness (the repository holds a broken model on purpose).
    control = ("--model-control-mode", "explicit", "--load-model", "*", "--no-strict-readiness")
    srv = start_server(
        "--model-repo", str(repo), "--max-body-bytes", str(BODY_LIMIT), "--grpc-port", "0", *control
    )
    assert srv.grpc_url.startswith("127.0.0.1:")
    yield srv
    assert srv.stop() == 0


#: Every datatype with a typed ``contents`` field (all but FP16).
TYPED = [dt for dt in DATATYPES if dt != "FP16"]


def _write_typed_model(repo: Path) -> None:
    """``typed``: one Identity per datatype of :data:`TYPED` (shape [-1])."""
    inputs, outputs, nodes, config = [], [], [], []
    for dt in TYPED:
        elem, triton, _ = DATATYPES[dt]
        inputs.append(helper.make_tensor_value_info(f"in_{dt}", elem, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"out_{dt}", elem, ["n"]))
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
        config.append(f'input {{ name: "in_{dt}" data_type: {triton} dims: [-1] }}')
        config.append(f'output {{ name: "out_{dt}" data_type: {triton} dims: [-1] }}')
    graph = helper.make_graph(nodes, "typed", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (repo / "typed" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "typed" / "1" / "model.onnx"))
    header = 'name: "typed"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
    (repo / "typed" / "config.pbtxt").write_text(header + "\n".join(config))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def digits_input(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def add_input(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def grpc_error(call, *args, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return info.value


# -- health, metadata, configuration, repository --------------------------------------------


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "servekit"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta.extensions)


def test_standard_health_service(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_metadata_readiness_and_config(client):
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("broken")
    assert list(client.get_model_metadata("versioned").versions) == ["2", "3"]
    assert list(client.get_model_metadata("versioned", "3").versions) == ["3"]
    config = client.get_model_config("digits").config
    assert config.max_batch_size == 64 and config.platform == "onnxruntime_onnx"
    assert config.HasField("dynamic_batching")
    assert client.get_model_config("auto").config.max_batch_size == 4


def test_metadata_errors(client):
    error = grpc_error(client.get_model_metadata, "nope")
    assert error.status() == "StatusCode.NOT_FOUND"
    assert error.message() == "Request for unknown model: 'nope' is not found"
    error = grpc_error(client.get_model_config, "digits", "7")
    assert error.status() == "StatusCode.NOT_FOUND" and "version 7 is not found" in error.message()
    error = grpc_error(client.is_model_ready, "nope")
    assert error.status() == "StatusCode.NOT_FOUND"


def test_repository_index(client):
    rows = client.get_model_repository_index().models
    index = {(r.name, r.version): r for r in rows}
    assert index[("digits", "1")].state == "READY"
    assert index[("broken", "1")].state == "UNAVAILABLE"
    assert "cannot load ONNX model" in index[("broken", "1")].reason


def test_repository_index_ready_filter(stub):
    rows = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=10).models
    assert rows and all(r.state == "READY" for r in rows)
    assert "broken" not in {r.name for r in rows}
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryIndex(pb.RepositoryIndexRequest(repository_name="other"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_load_unload_and_config_override(client):
    # "auto" belongs to this test alone (other tests only read its configuration).
    x = np.zeros((1, 4), dtype=np.float32)
    client.unload_model("auto")
    assert not client.is_model_ready("auto")
    error = grpc_error(client.infer, "auto", [add_input(x)])
    assert error.status() == "StatusCode.UNAVAILABLE"
    client.load_model("auto")
    assert client.infer("auto", [add_input(x)]).as_numpy("y")[0, 0] == 10.0
    config = (
        '{"max_batch_size": 2, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]}'
    )
    client.load_model("auto", config=config)
    assert client.get_model_config("auto").config.max_batch_size == 2
    error = grpc_error(client.load_model, "auto", config='{"max_batch_size": "many"}')
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "invalid model config JSON" in error.message()
    assert client.is_model_ready("auto")  # a failed reload keeps what was served
    error = grpc_error(client.load_model, "auto", files={"file:1/model.onnx": b"x"})
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "file overrides is not supported" in error.message()
    assert grpc_error(client.load_model, "no_such_model").status() == "StatusCode.NOT_FOUND"
    assert grpc_error(client.unload_model, "no_such_model").status() == "StatusCode.NOT_FOUND"
    client.load_model("auto", config='{"max_batch_size": 4}')


# -- inference -------------------------------------------------------------------------------


def test_grpc_and_http_answers_are_identical(server, client, digits):
    x = digits[0][:16]
    got = client.infer("digits", [digits_input(x)], request_id="req-7")
    assert got.get_response().id == "req-7"
    assert got.get_response().model_version == "1"
    with httpclient.InferenceServerClient(server.url) as http:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        want = http.infer("digits", [inp])
    for name in ("label", "probabilities"):
        assert got.as_numpy(name).dtype == want.as_numpy(name).dtype
        np.testing.assert_array_equal(got.as_numpy(name), want.as_numpy(name))
    assert (got.as_numpy("label").reshape(-1) == digits[1][:16]).mean() > 0.8


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_calls(client, digits, algorithm):
    x = digits[0][:8]
    plain = client.infer("digits", [digits_input(x)])
    packed = client.infer("digits", [digits_input(x)], compression_algorithm=algorithm)
    np.testing.assert_array_equal(packed.as_numpy("probabilities"), plain.as_numpy("probabilities"))


def test_requested_outputs_and_parameters(client, digits):
    result = client.infer(
        "digits",
        [digits_input(digits[0][:2])],
        outputs=[grpcclient.InferRequestedOutput("label")],
        priority=0,
        timeout=1_000_000,
    )
    assert result.as_numpy("label").shape == (2, 1)
    assert result.as_numpy("probabilities") is None
    assert [o.name for o in result.get_response().outputs] == ["label"]


def test_versions(client):
    x = np.zeros((1, 4), dtype=np.float32)
    latest = client.infer("versioned", [add_input(x)])
    assert latest.as_numpy("y")[0, 0] == 3.0 and latest.get_response().model_version == "3"
    assert client.infer("versioned", [add_input(x)], model_version="2").as_numpy("y")[0, 0] == 2
    error = grpc_error(client.infer, "versioned", [add_input(x)], model_version="1")
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "'versioned' version 1 is not found" in error.message()


def _datatype_value(dt: str) -> np.ndarray:
    np_dtype = DATATYPES[dt][2]
    if dt == "BYTES":
        return np.array([b"", b"servekit", "ünï".encode(), b"a\x00b"], dtype=object)
    if dt == "BOOL":
        return np.array([True, False, True], dtype=bool)
    if np.dtype(np_dtype).kind in "iu":
        info = np.iinfo(np_dtype)
        return np.array([info.min, 0, 1, info.max], dtype=np_dtype)
    return np.array([-1.5, 0.0, 3.25, 65504.0], dtype=np_dtype)


def test_every_datatype_round_trips_raw(client):
    inputs, expected = [], {}
    for dt in DATATYPES:
        value = _datatype_value(dt)
        inp = grpcclient.InferInput(f"in_{dt}", list(value.shape), dt)
        inp.set_data_from_numpy(value)
        inputs.append(inp)
        expected[f"out_{dt}"] = value
    outputs = [grpcclient.InferRequestedOutput(n) for n in expected]
    result = client.infer("identity", inputs, outputs=outputs)
    for name, value in expected.items():
        got = result.as_numpy(name)
        if value.dtype == object:
            assert [bytes(v) for v in got] == list(value), name
        else:
            assert got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, value, err_msg=name)


_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def test_every_datatype_in_typed_contents(stub):
    request = pb.ModelInferRequest(model_name="typed")
    for dt in TYPED:
        value = _datatype_value(dt)
        tensor = request.inputs.add(name=f"in_{dt}", datatype=dt, shape=list(value.shape))
        getattr(tensor.contents, _CONTENTS[dt]).extend(value.tolist())
    response = stub.ModelInfer(request, timeout=30)
    result = grpcclient.InferResult(response)
    for dt in TYPED:
        value, got = _datatype_value(dt), result.as_numpy(f"out_{dt}")
        if dt == "BYTES":
            assert [bytes(v) for v in got] == list(value)
        else:
            assert got.dtype == value.dtype, dt
            np.testing.assert_array_equal(got, value, err_msg=dt)


def test_typed_contents_refused_where_triton_refuses(stub):
    request = pb.ModelInferRequest(model_name="identity")
    tensor = request.inputs.add(name="in_FP16", datatype="FP16", shape=[1])
    tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'in_FP16': FP16 data must be sent in raw_input_contents" in info.value.details()
    request = pb.ModelInferRequest(model_name="identity")
    tensor = request.inputs.add(name="in_INT8", datatype="INT8", shape=[1])
    tensor.contents.int_contents.append(300)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert "input 'in_INT8': value 300 is out of range for INT8" in info.value.details()
    request = pb.ModelInferRequest(model_name="identity")
    tensor = request.inputs.add(name="in_INT8", datatype="INT8", shape=[1])
    tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert "INT8 data must be in contents.int_contents, not fp32_contents" in info.value.details()


def test_typed_contents_answer_like_raw(stub, digits):
    x = digits[0][:3]
    typed = pb.ModelInferRequest(model_name="digits", id="t")
    tensor = typed.inputs.add(name="input", datatype="FP32", shape=[3, 64])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    raw = pb.ModelInferRequest(model_name="digits")
    raw.inputs.add(name="input", datatype="FP32", shape=[3, 64])
    raw.raw_input_contents.append(x.tobytes())
    a, b = stub.ModelInfer(typed, timeout=30), stub.ModelInfer(raw, timeout=30)
    assert a.id == "t" and list(a.raw_output_contents) == list(b.raw_output_contents)
    assert [o.name for o in a.outputs] == ["label", "probabilities"]
    assert list(a.outputs[1].shape) == [3, 10]


def test_concurrent_callers_each_get_their_own_rows(server):
    errors: list[BaseException] = []

    def caller(k: int) -> None:
        try:
            with grpcclient.InferenceServerClient(server.grpc_url) as c:
                for i in range(10):
                    x = np.full((2, 4), k * 100 + i, dtype=np.float32)
                    y = c.infer("small", [add_input(x)]).as_numpy("y")
                    np.testing.assert_array_equal(y, x + 0.5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_aio_client(server, digits):
    async def run() -> list[np.ndarray]:
        async with grpcaio.InferenceServerClient(server.grpc_url) as c:
            assert await c.is_server_ready()
            x = digits[0][:4]
            results = await asyncio.gather(
                *(c.infer("digits", [digits_input(x)]) for _ in range(8))
            )
            return [r.as_numpy("probabilities") for r in results]

    outs = asyncio.run(run())
    assert len(outs) == 8
    for out in outs:
        np.testing.assert_array_equal(out, outs[0])
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)


# -- streaming --------------------------------------------------------------------------------


def _collect(sink: queue.Queue, result, error) -> None:
    sink.put((result, error))


def test_stream_infer_with_a_bad_request_in_the_middle(server, digits):
    sink: queue.Queue = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        c.start_stream(callback=partial(_collect, sink))
        for i in range(3):
            c.async_stream_infer(
                "digits", [digits_input(digits[0][i : i + 1])], request_id=f"ok{i}"
            )
        bad = grpcclient.InferInput("input", [1, 32], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 32), np.float32))
        c.async_stream_infer("digits", [bad], request_id="bad")
        c.async_stream_infer("digits", [digits_input(digits[0][3:4])], request_id="ok3")
        got = [sink.get(timeout=30) for _ in range(5)]
        c.stop_stream()
        results = {r.get_response().id: r for r, e in got if e is None}
        errors = [e for r, e in got if e is not None]
        assert set(results) == {"ok0", "ok1", "ok2", "ok3"}
        for i in range(4):
            unary = c.infer("digits", [digits_input(digits[0][i : i + 1])])
            for name in ("label", "probabilities"):
                np.testing.assert_array_equal(
                    results[f"ok{i}"].as_numpy(name), unary.as_numpy(name)
                )
    assert len(errors) == 1
    assert "input 'input' has shape [1, 32], but model 'digits' expects [-1, 64]" in str(errors[0])


def test_aio_stream_infer(server, digits):
    async def run() -> list:
        async with grpcaio.InferenceServerClient(server.grpc_url) as c:

            async def requests():
                for i in range(4):
                    yield {
                        "model_name": "digits",
                        "inputs": [digits_input(digits[0][i : i + 2])],
                        "request_id": str(i),
                    }

            return [item async for item in c.stream_infer(requests())]

    items = asyncio.run(run())
    assert sorted(r.get_response().id for r, e in items if e is None) == ["0", "1", "2", "3"]
    assert all(r.as_numpy("probabilities").shape == (2, 10) for r, _ in items)


# -- bad requests: the HTTP tests' corpus, with the gRPC status and the same message ----------


def _request(shape=(1, 64), datatype="FP32", name="input", raw=None, model="digits", **kw):
    request = pb.ModelInferRequest(model_name=model, **kw)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    request.raw_input_contents.append(b"\x00" * 256 if raw is None else raw)
    return request


def _with_outputs(*names):
    request = _request()
    for n in names:
        request.outputs.add(name=n)
    return request


def _two_raw_contents():
    request = _request()
    request.raw_input_contents.append(b"")
    return request


BAD_REQUESTS = [
    ("unknown input", _request(name="bogus"), "unexpected inference input 'bogus' for model"),
    (
        "wrong datatype",
        _request(datatype="FP64", raw=b"\x00" * 512),
        "input 'input' has datatype FP64, but model 'digits' expects FP32",
    ),
    ("unknown datatype", _request(datatype="FLOAT"), "input 'input': unknown datatype 'FLOAT'"),
    (
        "byte count",
        _request(raw=b"\x00" * 252),
        "input 'input': 252 bytes of binary data, but shape [1, 64] of FP32 needs 256",
    ),
    (
        "wrong shape",
        _request(shape=(2, 32), raw=b"\x00" * 256),
        "input 'input' has shape [2, 32], but model 'digits' expects [-1, 64]",
    ),
    (
        "negative dimension",
        _request(shape=(-1, 64)),
        "input 'input': shape [-1, 64] has a negative dimension -1",
    ),
    (
        "element count overflow",
        _request(shape=(2**40, 2**40)),
        f"has {2**80} elements, which overflows 64 bits",
    ),
    (
        "byte size overflow",
        _request(shape=(2**31, 2**31)),
        f"of FP32 is {2**64} bytes, which overflows 64 bits",
    ),
    (
        "batch over max_batch_size",
        _request(shape=(65, 64), raw=b"\x00" * 65 * 256),
        "batch size 65 exceeds the max_batch_size 64 of model 'digits'",
    ),
    ("unknown output", _with_outputs("logits"), "unknown output 'logits' for model 'digits'"),
    ("duplicate output", _with_outputs("label", "label"), "output 'label' already exists"),
    ("no inputs", pb.ModelInferRequest(model_name="digits"), "needs a non-empty 'inputs' list"),
    (
        "raw contents count",
        _two_raw_contents(),
        "raw_input_contents holds 2 tensors, but the request has 1 inputs outside shared memory",
    ),
    (
        "bad priority",
        _request(parameters={"priority": pb.InferParameter(string_param="high")}),
        "parameter 'priority' must be a non-negative integer",
    ),
]


@pytest.mark.parametrize(
    ("request_msg", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_refused_precisely(stub, client, digits, request_msg, message):
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request_msg, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert client.infer("digits", [digits_input(digits[0][:1])]).as_numpy("label").shape == (1, 1)


def test_unknown_and_unavailable_models(stub):
    for model, version, code, message in [
        ("nope", "", grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'nope' is not found"),
        ("digits", "7", grpc.StatusCode.NOT_FOUND, "'digits' version 7 is not found"),
        ("broken", "", grpc.StatusCode.UNAVAILABLE, "model 'broken' is not ready"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_request(model=model, model_version=version), timeout=30)
        assert info.value.code() == code and message in info.value.details()


def test_message_over_the_body_limit(stub):
    big = _request(shape=(1, 64), raw=b"\x00" * (BODY_LIMIT + 10))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(big, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unimplemented_rpcs(stub):
    for call, request in [
        (stub.TraceSetting, pb.TraceSettingRequest()),
        (stub.LogSettings, pb.LogSettingsRequest()),
        (stub.CudaSharedMemoryStatus, pb.CudaSharedMemoryStatusRequest()),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "servekit does not implement" in info.value.details()


# -- statistics and metrics count both front ends ----------------------------------------------


def test_statistics_and_metrics_count_grpc_and_http(server, client):
    before = client.get_inference_statistics("small").model_stats[0]
    x = np.ones((3, 4), dtype=np.float32)
    for _ in range(2):
        client.infer("small", [add_input(x)])
    with httpclient.InferenceServerClient(server.url) as http:
        inp = httpclient.InferInput("x", [3, 4], "FP32")
        inp.set_data_from_numpy(x)
        for _ in range(3):
            http.infer("small", [inp])
        http_stats = http.get_inference_statistics("small")["model_stats"][0]
    after = client.get_inference_statistics("small").model_stats[0]
    assert after.inference_stats.success.count == before.inference_stats.success.count + 5
    assert after.inference_count == before.inference_count + 15
    assert http_stats["inference_stats"]["success"]["count"] == after.inference_stats.success.count
    host, port = server.url.split(":")
    conn = http_client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
    prefix = 'nv_inference_request_success{model="small",version="1"} '
    line = next(ln for ln in metrics.splitlines() if ln.startswith(prefix))
    assert int(float(line.removeprefix(prefix))) == after.inference_stats.success.count
