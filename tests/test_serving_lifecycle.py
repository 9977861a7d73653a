"""Server lifecycle: startup failures in one line with a non-zero exit, graceful shutdown."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _serving import EXAMPLE_REPO, ServerProcess, start_server, write_slow_model

SLOW_ITERATIONS = 1_000_000


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_port_in_use_fails_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_serve("--model-repo", str(EXAMPLE_REPO), "--port", str(port))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"servekit: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


def test_missing_repository_fails_in_one_line(tmp_path: Path):
    missing = tmp_path / "nowhere"
    proc = run_serve("--model-repo", str(missing), "--port", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"servekit: error: model repository {missing} is not a directory"
    ]


def test_invalid_config_fails_in_one_line(tmp_path: Path):
    shutil.copytree(EXAMPLE_REPO / "digits", tmp_path / "digits")
    shutil.copytree(EXAMPLE_REPO / "digits", tmp_path / "typo")
    (tmp_path / "typo" / "config.pbtxt").write_text('name: "typo"\nmax_batch_sise: 8\n')
    proc = run_serve("--model-repo", str(tmp_path), "--port", "0")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"servekit: error: invalid {tmp_path / 'typo' / 'config.pbtxt'}")
    assert 'no field named "max_batch_sise"' in lines[0]


def test_invalid_dynamic_batching_config_fails(tmp_path: Path):
    shutil.copytree(EXAMPLE_REPO / "digits", tmp_path / "digits")
    config = tmp_path / "digits" / "config.pbtxt"
    text = config.read_text().replace(
        "dynamic_batching {", "dynamic_batching {\n  preferred_batch_size: 100"
    )
    config.write_text(text)
    proc = run_serve("--model-repo", str(tmp_path), "--port", "0")
    assert proc.returncode == 2
    assert "preferred_batch_size 100 must be in 1..max_batch_size (64)" in proc.stderr


def _post_slow(url: str, results: list[tuple[int, dict]]) -> None:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}
    conn.request("POST", "/v2/models/slow/infer", body=json.dumps(body))
    resp = conn.getresponse()
    results.append((resp.status, json.loads(resp.read())))
    conn.close()


def _pending(server: ServerProcess) -> int:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith('nv_inference_pending_request_count{model="slow"'):
            return int(float(line.split()[-1]))
    return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_finishes_in_flight_requests_and_exits_zero(tmp_path: Path, sig: int):
    write_slow_model(tmp_path, "slow", SLOW_ITERATIONS)
    server = start_server("--model-repo", str(tmp_path))
    results: list[tuple[int, dict]] = []
    threads = [
        threading.Thread(target=_post_slow, args=(server.url, results), daemon=True)
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while _pending(server) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pending(server) == 2
    assert server.stop(sig, timeout=60) == 0
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2
    for status, body in results:
        assert status == 200
        assert body["outputs"][0]["data"] == [float(SLOW_ITERATIONS)] * 4
    assert "servekit: stopped" in server.stderr_text()
    with pytest.raises(OSError), socket.create_connection(tuple_url(server.url), timeout=5):
        pass


def tuple_url(url: str) -> tuple[str, int]:
    host, port = url.split(":")
    return host, int(port)
