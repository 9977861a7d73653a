"""Models with dynamic_batching go through the Rust batcher: batches form under load, queue
full and timeouts are 503 with Triton's messages (one server for the module)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest

from _serving import ServerProcess, start_server, write_slow_model

# A Loop of this many Adds runs for roughly a second: long enough for requests sent meanwhile
# to queue behind it, whatever the machine's load.
SLOW = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    write_slow_model(root, "batched", SLOW, "dynamic_batching { }")
    write_slow_model(
        root,
        "bounded",
        SLOW,
        "dynamic_batching { default_queue_policy { max_queue_size: 1 } }",
    )
    write_slow_model(root, "timed", SLOW, "dynamic_batching { }")
    srv = start_server("--model-repo", str(root))
    yield srv
    assert srv.stop() == 0


def post(server: ServerProcess, model: str, rows: int = 1, **params) -> tuple[int, dict]:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [0] * 4 * rows}],
        "parameters": params,
    }
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=json.dumps(body))
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def get_json(server: ServerProcess, path: str) -> dict:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def in_background(server: ServerProcess, model: str, results: list, **params) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(post(server, model, **params)), daemon=True
    )
    thread.start()
    return thread


def wait_until_running(server: ServerProcess, model: str) -> None:
    """Wait (bounded) until one request of ``model`` is in flight, plus a moment for the
    batcher to hand it to the instance."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        host, port = server.url.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        if f'nv_inference_pending_request_count{{model="{model}",version="1"}} 1' in text:
            time.sleep(0.2)
            return
        time.sleep(0.01)
    raise AssertionError(f"no request of {model} became pending")


def test_concurrent_requests_share_batches(server):
    results: list = []
    first = in_background(server, "batched", results)
    wait_until_running(server, "batched")
    rest = [in_background(server, "batched", results) for _ in range(4)]
    for t in (first, *rest):
        t.join(timeout=60)
    assert [status for status, _ in results] == [200] * 5
    for _, body in results:
        assert body["outputs"][0]["data"] == [float(SLOW)] * 4
    stats = get_json(server, "/v2/models/batched/stats")["model_stats"][0]
    assert stats["inference_count"] == 5
    assert stats["execution_count"] == 2  # the first alone, the four that queued behind it
    assert sorted(b["batch_size"] for b in stats["batch_stats"]) == [1, 4]
    assert stats["inference_stats"]["queue"]["count"] == 5


def test_queue_full_is_503(server):
    results: list = []
    first = in_background(server, "bounded", results)
    wait_until_running(server, "bounded")
    # Two more while the first runs: the queue holds one, the other is refused at once.
    more = [in_background(server, "bounded", results) for _ in range(2)]
    for t in (first, *more):
        t.join(timeout=60)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 503]
    refused = next(body for status, body in results if status == 503)
    assert refused["error"].startswith("Exceeds maximum queue size")


def test_request_timeout_is_503(server):
    results: list = []
    first = in_background(server, "timed", results)
    wait_until_running(server, "timed")
    status, body = post(server, "timed", timeout=1000)
    first.join(timeout=60)
    assert (status, body) == (503, {"error": "Request timeout expired"})
    assert results[0][0] == 200
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'nv_inference_request_failure{model="timed",version="1",reason="REJECTED"} 1' in text


def test_batch_over_max_batch_size_and_bad_priority(server):
    status, body = post(server, "batched", rows=9)
    assert status == 400
    assert body["error"] == "batch size 9 exceeds the max_batch_size 8 of model 'batched'"
    status, body = post(server, "batched", priority=5)
    assert status == 400 and "priority" in body["error"]
