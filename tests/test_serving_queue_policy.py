"""Per-level queue policies (``priority_queue_policy``) and ``timeout_action: DELAY`` against a
real server, as Triton: each priority level has its own bound and timeout, levels without an
entry use ``default_queue_policy``, and a DELAY request whose timeout expires still runs, after
the requests of its level that have not timed out.

The models run one request at a time (max_batch_size 1, one instance) for about a second each,
so requests sent meanwhile queue behind the running one whatever the machine's load."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest

from _serving import ServerProcess, _save, http_call, slow_model, start_server

#: Adds in the slow model's Loop: roughly a second per request.
SLOW = 1_000_000

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 1
input {{ name: "x" data_type: TYPE_FP32 dims: [4] }}
output {{ name: "y" data_type: TYPE_FP32 dims: [4] }}
instance_group {{ count: 1 kind: KIND_CPU }}
dynamic_batching {{
{batching}
}}
"""

# Level 1: DELAY, a 60 s default a request may shorten. Level 2 (the default level): the
# default policy, REJECT after 1 ms, no override.
DELAYING = """
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { default_timeout_microseconds: 1000 }
  priority_queue_policy {
    key: 1
    value {
      timeout_action: DELAY
      default_timeout_microseconds: 60000000
      allow_timeout_override: true
    }
  }
"""

# Level 1 (where the running request goes) holds eight requests, level 2 one, and level 3 has
# no entry: it uses the default policy, two requests. Requests without a priority use level 3.
BOUNDED = """
  priority_levels: 3
  default_queue_policy { max_queue_size: 2 }
  priority_queue_policy { key: 1 value { max_queue_size: 8 } }
  priority_queue_policy { key: 2 value { max_queue_size: 1 } }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("policies")
    for name, batching in (("delaying", DELAYING), ("bounded", BOUNDED)):
        _save(slow_model(SLOW), root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, batching=batching))
    srv = start_server("--model-repo", str(root))
    yield srv
    assert srv.stop() == 0


class Client:
    """Requests to one model, each on its own thread; ``finished`` lists their tags in the
    order their answers arrived, ``answers`` maps each tag to (status, body)."""

    def __init__(self, server: ServerProcess, model: str) -> None:
        self.server = server
        self.model = model
        self.finished: list[str] = []
        self.answers: dict[str, tuple[int, dict]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def send(self, tag: str, value: float, **parameters: int) -> None:
        """Send one request in the background, then wait (bounded) until the server holds it
        (answered, or counted as pending by the model)."""
        before = self.pending()
        body = json.dumps(
            {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [value] * 4}],
                "parameters": parameters,
            }
        ).encode()

        def call() -> None:
            answer = http_call(self.server, "POST", f"/v2/models/{self.model}/infer", body)
            with self._lock:
                self.answers[tag] = answer
                self.finished.append(tag)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        self._threads.append(thread)
        deadline = time.monotonic() + 30
        while tag not in self.answers and self.pending() <= before:
            assert time.monotonic() < deadline, f"request {tag} never reached the model"

    def pending(self) -> int:
        """The model's nv_inference_pending_request_count."""
        _, text = _metrics(self.server)
        prefix = f'nv_inference_pending_request_count{{model="{self.model}",version="1"}} '
        line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
        return int(float(line.removeprefix(prefix)))

    def wait(self) -> None:
        for thread in self._threads:
            thread.join(timeout=120)
        assert len(self.answers) == len(self._threads), "a request never answered"


def _metrics(server: ServerProcess) -> tuple[int, str]:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def outputs(answer: tuple[int, dict]) -> list[float]:
    status, body = answer
    assert status == 200, body
    return body["outputs"][0]["data"]


def test_a_timed_out_delay_request_still_runs_after_the_others_of_its_level(server):
    client = Client(server, "delaying")
    client.send("running", 0.0, priority=1)
    # Shortens level 1's 60 s default to 1 ms: it times out behind the running request.
    client.send("late", 1.0, priority=1, timeout=1000)
    # Level 2 rejects after 1 ms and does not let a request lengthen that.
    client.send("rejected", 2.0, timeout=60_000_000)
    client.send("on_time", 3.0, priority=1)
    client.wait()
    assert client.answers["rejected"] == (503, {"error": "Request timeout expired"})
    assert client.finished == ["rejected", "running", "on_time", "late"]
    for tag, value in (("running", 0.0), ("on_time", 3.0), ("late", 1.0)):
        assert outputs(client.answers[tag]) == [value + SLOW] * 4
    _, text = _metrics(server)
    assert 'nv_inference_request_failure{model="delaying",version="1",reason="REJECTED"} 1' in text
    assert 'nv_inference_request_success{model="delaying",version="1"} 3' in text


def test_each_level_is_bounded_by_its_own_policy(server):
    # The running request is at level 1, served before any other level whether or not it has
    # started yet, so it takes no room at levels 2 and 3.
    client = Client(server, "bounded")
    client.send("running", 0.0, priority=1)
    client.send("p2", 2.0, priority=2)
    client.send("p2_over", 2.5, priority=2)
    client.send("p3_a", 3.0, priority=3)
    client.send("p3_b", 3.25)
    client.send("p3_over", 3.5)
    client.wait()
    for tag, queued in (("p2_over", 1), ("p3_over", 2)):
        status, body = client.answers[tag]
        assert status == 503, body
        assert body["error"] == f"Exceeds maximum queue size ({queued} requests queued)"
    assert client.finished == ["p2_over", "p3_over", "running", "p2", "p3_a", "p3_b"]
    for tag, value in (("running", 0.0), ("p2", 2.0), ("p3_a", 3.0), ("p3_b", 3.25)):
        assert outputs(client.answers[tag]) == [value + SLOW] * 4


def test_the_served_config_shows_the_policies_with_their_bounds(server):
    status, config = http_call(server, "GET", "/v2/models/delaying/config")
    assert status == 200
    batching = config["dynamic_batching"]
    level1 = batching["priority_queue_policy"]["1"]
    assert level1["timeout_action"] == "DELAY" and level1["allow_timeout_override"] is True
    # Triton's 0 (unlimited) is bounded, and the config says so.
    assert level1["max_queue_size"] == 1024
    assert batching["default_queue_policy"]["max_queue_size"] == 1024
