"""Restricted APIs and the in-flight limit: the data plane's admission rules, unit-tested and
against real ``servekit serve`` processes (raw HTTP for the refusals)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _serving import EXAMPLE_REPO, ServerProcess, build_repository, start_server, write_slow_model
from servekit.errors import ForbiddenError, InvalidArgumentError, QueueFullError, ServekitError
from servekit.serving.access import (
    GROUP_NAMES,
    ApiGroup,
    RestrictedApis,
    grpc_api_group,
    header_lookup,
    http_api_group,
)
from servekit.serving.inflight import InflightLimit

# -- parsing and checking (no server) -----------------------------------------------------------


def test_forbidden_error_is_a_servekit_error():
    assert issubclass(ForbiddenError, ServekitError)


def test_parse_one_flag_many_groups():
    restricted = RestrictedApis.parse(["model-repository,statistics:Admin-Key=s3cret"])
    for group in (ApiGroup.MODEL_REPOSITORY, ApiGroup.STATISTICS):
        assert restricted.restriction(group).key == "Admin-Key"
        assert restricted.restriction(group).value == "s3cret"
    assert restricted.restriction(ApiGroup.INFERENCE) is None


def test_value_may_hold_colons_and_equals():
    restricted = RestrictedApis.parse(["inference:k=a:b=c"])
    assert restricted.restriction(ApiGroup.INFERENCE).value == "a:b=c"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["nosuch:k=v"], "unknown API 'nosuch'"),
        (["health,health:k=v"], "API 'health' is restricted more than once"),
        (["health:k=v", "metadata,health:k2=v"], "API 'health' is restricted more than once"),
        (["health"], "expected API[,API...]:KEY=VALUE"),
        (["health:k"], "expected API[,API...]:KEY=VALUE"),
        (["health:=v"], "is not a valid HTTP header name"),
        (["health:a key=v"], "is not a valid HTTP header name"),
        ([":k=v"], "unknown API ''"),
    ],
)
def test_parse_refuses(specs: list[str], message: str):
    with pytest.raises(InvalidArgumentError, match="--http-restricted-api") as info:
        RestrictedApis.parse(specs)
    assert message in str(info.value)


def test_check_allows_only_the_exact_value():
    restricted = RestrictedApis.parse(["inference:Admin-Key=s3cret"])
    restricted.check(ApiGroup.INFERENCE, header_lookup([(b"admin-key", b"s3cret")]))
    restricted.check(ApiGroup.INFERENCE, header_lookup([("ADMIN-KEY", "s3cret")]))
    restricted.check(ApiGroup.HEALTH, header_lookup([]))  # open group
    restricted.check(None, header_lookup([]))  # a route of no group
    for headers in ([], [(b"admin-key", b"s3cre")], [(b"admin-key", b"s3cret ")], [(b"x", b"s")]):
        with pytest.raises(ForbiddenError) as info:
            restricted.check(ApiGroup.INFERENCE, header_lookup(headers))
        assert str(info.value) == "This API is restricted, expecting header 'Admin-Key'"


def test_non_utf8_header_value_is_refused_not_crashing():
    restricted = RestrictedApis.parse(["inference:k=v"])
    with pytest.raises(ForbiddenError):
        restricted.check(ApiGroup.INFERENCE, header_lookup([(b"k", b"\xff\xfe")]))


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/v2/health/live", ApiGroup.HEALTH),
        ("GET", "/v2/health/ready", ApiGroup.HEALTH),
        ("GET", "/v2/models/m/ready", ApiGroup.HEALTH),
        ("GET", "/v2/models/m/versions/2/ready", ApiGroup.HEALTH),
        ("GET", "/v2", ApiGroup.METADATA),
        ("GET", "/v2/models/m", ApiGroup.METADATA),
        ("GET", "/v2/models/m/versions/1", ApiGroup.METADATA),
        ("POST", "/v2/models/m/infer", ApiGroup.INFERENCE),
        ("POST", "/v2/models/m/versions/1/infer", ApiGroup.INFERENCE),
        ("GET", "/v2/models/m/config", ApiGroup.MODEL_CONFIG),
        ("POST", "/v2/repository/index", ApiGroup.MODEL_REPOSITORY),
        ("POST", "/v2/repository/models/m/load", ApiGroup.MODEL_REPOSITORY),
        ("POST", "/v2/repository/models/m/unload", ApiGroup.MODEL_REPOSITORY),
        ("GET", "/v2/models/stats", ApiGroup.STATISTICS),
        ("GET", "/v2/models/m/stats", ApiGroup.STATISTICS),
        ("GET", "/v2/models/m/versions/1/stats", ApiGroup.STATISTICS),
        ("GET", "/v2/models/m/drift", ApiGroup.STATISTICS),
        ("GET", "/v2/models/m/candidates", ApiGroup.STATISTICS),
        ("GET", "/v2/systemsharedmemory/status", ApiGroup.SHARED_MEMORY),
        ("GET", "/v2/cudasharedmemory/region/r/status", ApiGroup.SHARED_MEMORY),
        ("GET", "/v2/trace/setting", ApiGroup.TRACE),
        ("GET", "/v2/models/m/trace/setting", ApiGroup.TRACE),
        ("GET", "/v2/logging", ApiGroup.LOGGING),
        ("GET", "/metrics", ApiGroup.METRICS),
        ("GET", "/nowhere", None),
        ("GET", "/v2/models/m/nowhere", None),
    ],
)
def test_http_routes_map_to_triton_groups(method: str, path: str, group: ApiGroup | None):
    assert http_api_group(method, path) == group


def test_grpc_methods_map_to_groups():
    assert grpc_api_group("/inference.GRPCInferenceService/ModelInfer") == ApiGroup.INFERENCE
    assert grpc_api_group("RepositoryModelLoad") == ApiGroup.MODEL_REPOSITORY
    assert grpc_api_group("ServerLive") == ApiGroup.HEALTH
    assert grpc_api_group("Nope") is None


def test_inflight_limit_refuses_past_the_ceiling_and_frees_slots():
    limit = InflightLimit(2)
    with limit.slot(), limit.slot():
        assert limit.in_flight == 2
        with pytest.raises(QueueFullError, match="Exceeds maximum queue size"), limit.slot():
            pass
        assert limit.in_flight == 2
    assert limit.in_flight == 0
    with pytest.raises(InvalidArgumentError):
        InflightLimit(0)


# -- against a real server -------------------------------------------------------------------

KEY, VALUE = "admin-key", "s3cret"

DIGITS_BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
).encode()

#: One route per group this server has: (group, method, path, body).
ROUTES = [
    ("health", "GET", "/v2/health/ready", b""),
    ("health", "GET", "/v2/models/digits/ready", b""),
    ("metadata", "GET", "/v2", b""),
    ("metadata", "GET", "/v2/models/digits", b""),
    ("inference", "POST", "/v2/models/digits/infer", DIGITS_BODY),
    ("model-config", "GET", "/v2/models/digits/config", b""),
    ("model-repository", "POST", "/v2/repository/index", b""),
    ("model-repository", "POST", "/v2/repository/models/digits/load", b""),
    ("statistics", "GET", "/v2/models/stats", b""),
    ("statistics", "GET", "/v2/models/digits/stats", b""),
    ("metrics", "GET", "/metrics", b""),
]


def request(
    server: ServerProcess, method: str, path: str, body: bytes = b"", headers=None
) -> tuple[int, bytes]:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def locked() -> Iterator[ServerProcess]:
    """Every group restricted: two flags, to cover one key per flag."""
    groups = [g for g in GROUP_NAMES if g != "statistics"]
    server = start_server(
        "--model-repo",
        str(EXAMPLE_REPO),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--http-restricted-api",
        f"{','.join(groups)}:{KEY}={VALUE}",
        "--http-restricted-api",
        "statistics:stats-key=other",
    )
    yield server
    assert server.stop() == 0


@pytest.mark.parametrize(("group", "method", "path", "body"), ROUTES)
def test_each_group_refused_without_its_header(locked, group, method, path, body):
    status, content = request(locked, method, path, body)
    assert status == 403
    key = "stats-key" if group == "statistics" else KEY
    assert json.loads(content) == {"error": f"This API is restricted, expecting header '{key}'"}
    status, _ = request(locked, method, path, body, {KEY: "wrong", "stats-key": "wrong"})
    assert status == 403


@pytest.mark.parametrize(("group", "method", "path", "body"), ROUTES)
def test_each_group_served_with_its_header(locked, group, method, path, body):
    headers = {"stats-key": "other"} if group == "statistics" else {"Admin-Key": VALUE}
    status, content = request(locked, method, path, body, headers)
    assert status == 200, content


def test_unknown_route_is_404_not_403(locked):
    assert request(locked, "GET", "/v2/nowhere")[0] == 404


def test_open_groups_stay_open():
    server = start_server(
        "--model-repo", str(EXAMPLE_REPO), "--http-restricted-api", f"model-repository:{KEY}=v"
    )
    try:
        assert request(server, "POST", "/v2/models/digits/infer", DIGITS_BODY)[0] == 200
        assert request(server, "GET", "/v2/models/digits")[0] == 200
        assert request(server, "POST", "/v2/repository/models/digits/unload")[0] == 403
        assert request(server, "GET", "/v2/models/digits/ready")[0] == 200  # still loaded
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("nosuch:k=v", "unknown API 'nosuch'"),
        ("health,health:k=v", "API 'health' is restricted more than once"),
    ],
)
def test_bad_restriction_refuses_startup_in_one_line(flag: str, message: str):
    args = ["serve", "--model-repo", str(EXAMPLE_REPO), "--port", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "servekit", *args, "--http-restricted-api", flag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("servekit: error: --http-restricted-api")
    assert message in lines[0]


# -- the in-flight limit on a real server ---------------------------------------------------

SLOW_ITERATIONS = 2_000_000


def _inflight(server: ServerProcess) -> int:
    _, text = request(server, "GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith("servekit_inflight_requests "):
            return int(float(line.split()[-1]))
    raise AssertionError("no servekit_inflight_requests gauge")


def test_inflight_limit_answers_503_at_once_and_recovers(tmp_path: Path):
    build_repository(tmp_path)
    write_slow_model(tmp_path, "slow", SLOW_ITERATIONS)
    server = start_server("--model-repo", str(tmp_path), "--max-inflight", "1")
    slow = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}
    ).encode()
    results: list[tuple[int, bytes]] = []
    worker = threading.Thread(
        target=lambda: results.append(request(server, "POST", "/v2/models/slow/infer", slow))
    )
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while _inflight(server) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _inflight(server) == 1
        status, content = request(server, "POST", "/v2/models/digits/infer", DIGITS_BODY)
        assert status == 503
        assert json.loads(content)["error"].startswith("Exceeds maximum queue size")
        assert request(server, "GET", "/v2/health/live")[0] == 200  # probes are not counted
        assert request(server, "GET", "/v2/models/digits/ready")[0] == 200
        worker.join(timeout=60)
        assert results and results[0][0] == 200
        assert json.loads(results[0][1])["outputs"][0]["data"] == [float(SLOW_ITERATIONS)] * 4
        assert _inflight(server) == 0
        assert request(server, "POST", "/v2/models/digits/infer", DIGITS_BODY)[0] == 200
    finally:
        worker.join(timeout=60)
        assert server.stop() == 0


def test_default_batcher_queue_is_bounded_and_says_so(locked):
    status, content = request(locked, "GET", "/v2/models/digits/config", headers={KEY: VALUE})
    assert status == 200
    policy = json.loads(content)["dynamic_batching"]["default_queue_policy"]
    assert policy["max_queue_size"] == 1024
