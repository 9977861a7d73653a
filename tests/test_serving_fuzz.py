"""Schema-driven fuzzing: schemathesis generates requests from the server's own OpenAPI
document (``GET /v2/openapi.json``, the infer route included) against a real server. Bounded
(a fixed number of examples per route, derandomized with a fixed seed): no answer may be a
5xx, and afterwards the server is live and serves correct results."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from sklearn.datasets import load_digits

from _serving import EXAMPLE_REPO, ServerProcess, start_server

EXAMPLES_PER_ROUTE = 25


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[ServerProcess]:
    server = start_server("--model-repo", str(EXAMPLE_REPO), "--max-body-bytes", "1000000")
    yield server
    assert server.stop() == 0


def _fuzzer(operation: schemathesis.APIOperation, base: str, statuses: list[int]):
    """A hypothesis test calling ``operation`` with generated cases, recording statuses."""

    @seed(11)
    @settings(
        max_examples=EXAMPLES_PER_ROUTE,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, timeout=60)
        statuses.append(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400 and response.content:
            assert set(response.json()) == {"error"}

    return fuzz


def test_no_route_answers_5xx(fuzzed_server: ServerProcess) -> None:
    base = f"http://{fuzzed_server.url}"
    api = schemathesis.openapi.from_url(f"{base}/v2/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert any(op.path == "/v2/models/{model}/infer" for op in operations)
    answered: dict[str, list[int]] = {}
    for operation in operations:
        statuses = answered.setdefault(f"{operation.method.upper()} {operation.path}", [])
        _fuzzer(operation, base, statuses)()
    assert all(answered.values()), answered
    infer = answered["POST /v2/models/{model}/infer"]
    assert 400 in infer  # the fuzzer reached the decoder and the model validation


def test_server_still_serves_correct_results_after_fuzzing(fuzzed_server: ServerProcess):
    x = (load_digits().data[:3] / 16).astype(np.float32)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64],
                        "data": x.ravel().tolist()}]}  # fmt: skip
    request = urllib.request.Request(
        f"http://{fuzzed_server.url}/v2/models/digits/infer", data=json.dumps(body).encode()
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        outputs = {o["name"]: o for o in json.loads(resp.read())["outputs"]}
    assert outputs["label"]["data"] == load_digits().target[:3].tolist()
    with urllib.request.urlopen(f"http://{fuzzed_server.url}/v2/health/live", timeout=60) as r:
        assert r.status == 200
