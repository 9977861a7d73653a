"""Model control modes (``--model-control-mode none|explicit|poll``) against real servers."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from _serving import (
    ADD_CONFIG,
    EXAMPLE_REPO,
    ServerProcess,
    _save,
    add_model,
    build_repository,
    start_server,
    wait_for,
    write_slow_model,
)


def client_of(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url, network_timeout=60)


def add_one(client: httpclient.InferenceServerClient, model: str) -> float:
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    return float(client.infer(model, [inp]).as_numpy("y")[0, 0])


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_add(root: Path, name: str, version: int, value: float) -> None:
    """An add model ``name`` version ``version`` (y = x + value), built beside the repository
    and moved in with one rename, so a scan never sees half of it."""
    staging = root.parent / f"staging-{name}-{version}"
    _save(add_model(value), staging / str(version) / "model.onnx")
    target = root / name
    if target.exists():
        (staging / str(version)).rename(target / str(version))
        staging.rmdir()
    else:
        (staging / "config.pbtxt").write_text(ADD_CONFIG.format(name=name, extra=""))
        staging.rename(target)


class Log:
    """Everything a server wrote to stderr so far (the queue drains on each read)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.text = ""

    def __contains__(self, needle: str) -> bool:
        self.text += self.server.stderr_text()
        return needle in self.text


# -- none (the default) ------------------------------------------------------------------------


def test_none_mode_loads_everything_and_refuses_load_unload(tmp_path: Path):
    build_repository(tmp_path)
    server = start_server("--model-repo", str(tmp_path), "--no-strict-readiness")
    try:
        with client_of(server) as client:
            assert client.is_model_ready("versioned") and client.is_model_ready("digits")
            for call in (client.load_model, client.unload_model):
                with pytest.raises(InferenceServerException) as info:
                    call("versioned")
                assert info.value.status() == "403"
                assert "not allowed in model control mode 'none'" in info.value.message()
            assert client.is_model_ready("versioned")  # nothing changed
            assert add_one(client, "versioned") == 3.0
    finally:
        assert server.stop() == 0


# -- explicit ------------------------------------------------------------------------------------


def test_explicit_mode_loads_only_what_is_named_then_obeys_the_api(tmp_path: Path):
    build_repository(tmp_path)
    server = start_server(
        "--model-repo", str(tmp_path), "--model-control-mode", "explicit", "--load-model", "small"
    )
    try:
        with client_of(server) as client:
            assert client.is_model_ready("small")
            index = {r["name"]: r for r in client.get_model_repository_index()}
            assert index["versioned"] == {
                "name": "versioned",
                "state": "UNAVAILABLE",
                "reason": "not loaded",
            }
            client.load_model("versioned")
            assert add_one(client, "versioned") == 3.0
            client.unload_model("versioned")
            assert not client.is_model_ready("versioned")
            assert add_one(client, "small") == 0.5  # the others keep serving
    finally:
        assert server.stop() == 0


def test_explicit_mode_star_loads_all(tmp_path: Path):
    build_repository(tmp_path)
    server = start_server(
        "--model-repo",
        str(tmp_path),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--no-strict-readiness",
    )
    try:
        with client_of(server) as client:
            assert client.is_model_ready("versioned") and client.is_model_ready("small")
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model-control-mode", "explicit", "--load-model", "nosuch"), "--load-model nosuch"),
        (("--load-model", "digits"), "--load-model needs --model-control-mode explicit"),
        (("--repository-poll-secs", "3"), "--repository-poll-secs needs --model-control-mode"),
        (("--model-control-mode", "poll", "--repository-poll-secs", "0"), "must be positive"),
        (("--model-control-mode", "sometimes"), "'sometimes' is not one of"),
    ],
)
def test_bad_control_flags_refuse_startup_in_one_line(args: tuple[str, ...], message: str):
    proc = run_serve("--model-repo", str(EXAMPLE_REPO), *args)
    assert proc.returncode == 2
    assert message in proc.stderr


# -- poll --------------------------------------------------------------------------------------


def test_poll_mode_follows_the_repository(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_add(repo, "adder", 1, 1.0)
    write_slow_model(repo, "slow", 2_000_000)
    server = start_server(
        "--model-repo", str(repo), "--model-control-mode", "poll", "--repository-poll-secs", "0.2"
    )
    try:
        with client_of(server) as client:
            assert add_one(client, "adder") == 1.0
            with pytest.raises(InferenceServerException) as info:
                client.load_model("adder")
            assert info.value.status() == "403"
            assert "not allowed if polling is enabled" in info.value.message()

            write_add(repo, "added", 1, 7.0)  # a new model
            wait_for(lambda: _ready(client, "added"), timeout=60)
            assert add_one(client, "added") == 7.0

            write_add(repo, "adder", 2, 2.0)  # a new version of a served model
            wait_for(lambda: _ready(client, "adder", "2"), timeout=60)
            assert add_one(client, "adder") == 2.0

            # A changed model reloads without failing the request running on it.
            results: list[int] = []
            slow = threading.Thread(target=lambda: results.append(_post_slow(server)))
            slow.start()
            wait_for(lambda: _inflight(server) >= 1, timeout=60)
            config = repo / "slow" / "config.pbtxt"
            config.write_text(config.read_text() + "\n# touched\n")
            os.utime(config, None)
            slow.join(timeout=120)
            assert results == [200]

            (repo / "added").rename(tmp_path / "gone")  # a removed model
            wait_for(lambda: not _ready(client, "added"), timeout=60)
            with pytest.raises(InferenceServerException):
                add_one(client, "added")
            assert add_one(client, "adder") == 2.0
    finally:
        assert server.stop() == 0


def test_poll_mode_keeps_serving_when_a_change_does_not_load(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_add(repo, "adder", 1, 1.0)
    server = start_server(
        "--model-repo", str(repo), "--model-control-mode", "poll", "--repository-poll-secs", "0.2"
    )
    try:
        log = Log(server)
        with client_of(server) as client:
            (repo / "adder" / "2").mkdir()
            (repo / "adder" / "2" / "model.onnx").write_bytes(b"not a model")
            wait_for(lambda: "did not reload" in log, timeout=60)
            assert add_one(client, "adder") == 1.0
            (repo / "adder" / "config.pbtxt").write_text("max_batch_sise: 3")
            wait_for(lambda: "changed but does not load" in log, timeout=60)
            assert add_one(client, "adder") == 1.0
    finally:
        assert server.stop() == 0


def _ready(client: httpclient.InferenceServerClient, model: str, version: str = "") -> bool:
    try:
        return client.is_model_ready(model, version)
    except InferenceServerException:
        return False


def _request(server: ServerProcess, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _post_slow(server: ServerProcess) -> int:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}
    return _request(server, "POST", "/v2/models/slow/infer", json.dumps(body).encode())[0]


def _inflight(server: ServerProcess) -> int:
    text = _request(server, "GET", "/metrics")[1].decode()
    line = next(x for x in text.splitlines() if x.startswith("servekit_inflight_requests "))
    return int(float(line.split()[-1]))


# -- strict readiness ----------------------------------------------------------------------------


def test_strict_readiness_follows_the_models_that_should_be_loaded(tmp_path: Path):
    build_repository(tmp_path)  # holds "broken", whose artifact does not load
    server = start_server("--model-repo", str(tmp_path), "--model-control-mode", "explicit")
    try:
        with client_of(server) as client:
            assert client.is_server_ready()  # nothing asked for yet: nothing missing
            client.load_model("versioned")
            assert client.is_server_ready()
            with pytest.raises(InferenceServerException):
                client.load_model("broken")  # loads, with its only version failed
            assert not client.is_server_ready()
            assert add_one(client, "versioned") == 3.0  # unready, yet serving the others
            client.unload_model("broken")
            assert client.is_server_ready()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(("flag", "ready"), [((), False), (("--no-strict-readiness",), True)])
def test_broken_model_makes_the_server_unready_unless_not_strict(tmp_path: Path, flag, ready):
    build_repository(tmp_path)
    server = start_server("--model-repo", str(tmp_path), *flag)
    try:
        with client_of(server) as client:
            assert client.is_server_ready() is ready
            assert client.is_server_live()
            assert add_one(client, "small") == 0.5
    finally:
        assert server.stop() == 0
