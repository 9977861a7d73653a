"""The system shared-memory extension over HTTP and gRPC, driven by tritonclient's own helpers
(``tritonclient.utils.shared_memory``) against one real server process."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from _serving import ServerProcess, build_repository, start_server, write_slow_model

SLOW_ITERATIONS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = build_repository(tmp_path_factory.mktemp("repo"))
    write_slow_model(repo, "slow", SLOW_ITERATIONS)
    srv = start_server("--model-repo", str(repo), "--grpc-port", "0")
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def regions() -> Iterator[list]:
    """Handles created by a test, destroyed after it (keys are unique per test run)."""
    handles: list = []
    yield handles
    for handle in handles:
        shm.destroy_shared_memory_region(handle)


def _region(handles: list, size: int) -> tuple[str, str, object]:
    name = f"r{uuid.uuid4().hex[:10]}"
    key = f"/servekit_test_{name}"
    handle = shm.create_shared_memory_region(name, key, size)
    handles.append(handle)
    return name, key, handle


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.url) as c:
        yield c


@pytest.fixture(scope="module")
def grpc_c(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_regions_with_offsets(http, grpc_c, regions, protocol):
    mod, client = (httpclient, http) if protocol == "http" else (grpcclient, grpc_c)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    in_name, in_key, in_handle = _region(regions, 64 + x.nbytes)
    out_name, out_key, out_handle = _region(regions, 128)
    shm.set_shared_memory_region(in_handle, [x], offset=64)
    client.register_system_shared_memory(in_name, in_key, 64 + x.nbytes)
    client.register_system_shared_memory(out_name, out_key, 128)
    try:
        inp = mod.InferInput("x", [2, 4], "FP32")
        inp.set_shared_memory(in_name, x.nbytes, offset=64)
        out = mod.InferRequestedOutput("y")
        out.set_shared_memory(out_name, 64, offset=32)
        result = client.infer("small", [inp], outputs=[out])
        output = result.get_output("y")
        if protocol == "http":
            params = output["parameters"]
            assert params["shared_memory_region"] == out_name
            assert params["shared_memory_byte_size"] == x.nbytes
            assert "data" not in output
        else:
            assert output.parameters["shared_memory_region"].string_param == out_name
            assert output.parameters["shared_memory_byte_size"].int64_param == x.nbytes
        y = shm.get_contents_as_numpy(out_handle, np.float32, [2, 4], offset=32)
        np.testing.assert_array_equal(y, x + 0.5)
    finally:
        client.unregister_system_shared_memory(in_name)
        client.unregister_system_shared_memory(out_name)


def test_status_register_and_unregister(http, grpc_c, regions):
    name, key, _ = _region(regions, 256)
    http.register_system_shared_memory(name, key, 128, offset=64)
    want = {"name": name, "key": key, "offset": 64, "byte_size": 128}
    assert want in http.get_system_shared_memory_status()
    assert http.get_system_shared_memory_status(name) == [want]
    status = grpc_c.get_system_shared_memory_status(name).regions[name]
    assert (status.key, status.offset, status.byte_size) == (key, 64, 128)
    grpc_c.unregister_system_shared_memory(name)
    assert want not in http.get_system_shared_memory_status()
    with pytest.raises(InferenceServerException) as info:
        http.get_system_shared_memory_status(name)
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException) as info:
        grpc_c.get_system_shared_memory_status(name)
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "system_shared_memory" in http.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException) as info:
        http.get_cuda_shared_memory_status()
    assert info.value.status() == "400"
    assert "servekit does not implement CUDA shared memory" in info.value.message()


def test_bad_registrations(http, grpc_c, regions):
    name, key, _ = _region(regions, 64)
    http.register_system_shared_memory(name, key, 64)
    try:
        for client, status in ((http, "400"), (grpc_c, "StatusCode.INVALID_ARGUMENT")):
            cases = [
                ((name, key, 64), f"shared memory region '{name}' already in manager"),
                (("other", "/servekit_no_such_key", 8), "Unable to open shared memory region"),
                (("other", key, 65), "does not fit in the 64 bytes"),
                (("other", key, 8, 60), "does not fit in the 64 bytes"),
            ]
            for args, message in cases:
                with pytest.raises(InferenceServerException) as info:
                    client.register_system_shared_memory(*args)
                assert info.value.status() == status and message in info.value.message()
    finally:
        http.unregister_system_shared_memory(name)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requests_naming_bad_regions_are_refused(http, grpc_c, regions, protocol):
    mod, client = (httpclient, http) if protocol == "http" else (grpcclient, grpc_c)
    status = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    name, key, handle = _region(regions, 32)
    shm.set_shared_memory_region(handle, [np.zeros((1, 4), np.float32)])
    client.register_system_shared_memory(name, key, 32)
    try:
        cases = []
        inp = mod.InferInput("x", [1, 4], "FP32")
        inp.set_shared_memory("never_registered", 16)
        cases.append(
            ([inp], None, "Unable to find system shared memory region: 'never_registered'")
        )
        inp = mod.InferInput("x", [1, 4], "FP32")
        inp.set_shared_memory(name, 16, offset=24)
        cases.append(([inp], None, f"is outside shared memory region '{name}' of 32 bytes"))
        inp = mod.InferInput("x", [1, 4], "FP32")
        inp.set_shared_memory(name, 12)
        cases.append(([inp], None, "shared_memory_byte_size 12, but shape [1, 4] of FP32 needs 16"))
        inp = mod.InferInput("x", [1, 4], "FP32")
        inp.set_shared_memory(name, 16)
        small = mod.InferRequestedOutput("y")
        small.set_shared_memory(name, 8, offset=16)
        cases.append(([inp], [small], "should be at least 16 bytes to hold the results"))
        for inputs, outputs, message in cases:
            with pytest.raises(InferenceServerException) as info:
                client.infer("small", inputs, outputs=outputs)
            assert info.value.status() == status
            assert message in info.value.message()
        assert client.is_server_live()
    finally:
        client.unregister_system_shared_memory(name)


def test_unregistering_a_region_while_a_request_uses_it(server, http, regions):
    x = np.full((1, 4), 2.0, dtype=np.float32)
    in_name, in_key, in_handle = _region(regions, 16)
    out_name, out_key, out_handle = _region(regions, 16)
    shm.set_shared_memory_region(in_handle, [x])
    http.register_system_shared_memory(in_name, in_key, 16)
    http.register_system_shared_memory(out_name, out_key, 16)
    results: list = []

    def run() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            inp = grpcclient.InferInput("x", [1, 4], "FP32")
            inp.set_shared_memory(in_name, 16)
            out = grpcclient.InferRequestedOutput("y")
            out.set_shared_memory(out_name, 16)
            results.append(c.infer("slow", [inp], outputs=[out]))

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while (
            http.get_inference_statistics("slow")["model_stats"][0]["inference_stats"]["queue"][
                "count"
            ]
            == 0
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        http.unregister_system_shared_memory()  # every region, while the model runs
        worker.join(timeout=60)
        assert len(results) == 1  # the running request wrote its output before finishing
        y = shm.get_contents_as_numpy(out_handle, np.float32, [1, 4])
        np.testing.assert_array_equal(y, x + SLOW_ITERATIONS)
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_shared_memory(in_name, 16)
        with pytest.raises(InferenceServerException) as info:
            http.infer("slow", [inp])
        assert "Unable to find system shared memory region" in info.value.message()
    finally:
        worker.join(timeout=60)
