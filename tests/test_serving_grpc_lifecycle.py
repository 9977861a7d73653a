"""The gRPC front end's limits, security and shutdown, each against its own ``servekit serve``
process: restricted protocols, the in-flight limit, TLS, flag errors and the SIGTERM drain."""

from __future__ import annotations

import http.client
import queue
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from _serving import EXAMPLE_REPO, ServerProcess, start_server, wait_for, write_slow_model

SLOW_ITERATIONS = 1_000_000


def _x_input(rows: int = 1) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("x", [rows, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((rows, 4), dtype=np.float32))
    return inp


def _digits_input() -> grpcclient.InferInput:
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    return inp


def _metric(server: ServerProcess, prefix: str) -> int:
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(prefix):
            return int(float(line.split()[-1]))
    return 0


def _repo(tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(EXAMPLE_REPO / "digits", tmp_path / "digits")
    write_slow_model(tmp_path, "slow", SLOW_ITERATIONS)
    return tmp_path


def test_restricted_protocol_with_and_without_the_key(tmp_path: Path):
    server = start_server(
        "--model-repo",
        str(_repo(tmp_path)),
        "--grpc-port",
        "0",
        "--grpc-restricted-protocol",
        "inference,model-repository:admin-key=s3cret",
    )
    try:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            assert c.is_server_live()  # health stays open
            assert c.get_model_metadata("digits").name == "digits"
            for headers in (None, {"admin-key": "wrong"}):
                with pytest.raises(InferenceServerException) as info:
                    c.infer("digits", [_digits_input()], headers=headers)
                assert info.value.status() == "StatusCode.UNAVAILABLE"
                assert (
                    info.value.message() == "This API is restricted, expecting header 'admin-key'"
                )
            with pytest.raises(InferenceServerException) as info:
                c.get_model_repository_index()
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            ok = c.infer("digits", [_digits_input()], headers={"admin-key": "s3cret"})
            assert ok.as_numpy("probabilities").shape == (1, 10)
            assert c.get_model_repository_index(headers={"admin-key": "s3cret"}).models
            sink: queue.Queue = queue.Queue()
            c.start_stream(callback=lambda result, error: sink.put((result, error)))
            result, error = sink.get(timeout=30)  # the stream is refused as it opens
            c.stop_stream()
            assert result is None and error.status() == "StatusCode.UNAVAILABLE"
            assert "expecting header 'admin-key'" in error.message()
            c.start_stream(
                callback=lambda result, error: sink.put((result, error)),
                headers={"admin-key": "s3cret"},
            )
            c.async_stream_infer("digits", [_digits_input()])
            result, error = sink.get(timeout=30)
            c.stop_stream()
            assert error is None and result.as_numpy("label").shape == (1, 1)
        # HTTP is not restricted by the gRPC flag (Triton's flags are per protocol).
        host, port = server.url.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v2/repository/index", body=b"{}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--grpc-port", "0", "--grpc-restricted-protocol", "bogus:k=v"],
            "--grpc-restricted-protocol 'bogus:k=v': unknown API 'bogus'",
        ),
        (["--grpc-use-ssl"], "the --grpc-* flags need --grpc-port"),
        (["--grpc-port", "0", "--grpc-use-ssl"], "--grpc-use-ssl needs --grpc-server-cert"),
        (["--grpc-port", "0", "--grpc-use-ssl-mutual"], "--grpc-use-ssl-mutual needs"),
    ],
)
def test_bad_grpc_flags_refuse_startup_in_one_line(tmp_path: Path, flags, message):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "servekit",
            "serve",
            "--port",
            "0",
            "--model-repo",
            str(tmp_path),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, proc.stderr


def test_grpc_port_in_use_refuses_startup(tmp_path: Path):
    server = start_server("--model-repo", str(_repo(tmp_path)), "--grpc-port", "0")
    try:
        port = server.grpc_url.split(":")[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "servekit",
                "serve",
                "--port",
                "0",
                "--model-repo",
                str(tmp_path),
                "--grpc-port",
                port,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2
        assert f"cannot listen for gRPC on 127.0.0.1:{port}" in proc.stderr
    finally:
        assert server.stop() == 0


def test_inflight_limit_refuses_grpc_calls_at_once(tmp_path: Path):
    server = start_server(
        "--model-repo", str(_repo(tmp_path)), "--grpc-port", "0", "--max-inflight", "1"
    )
    results: list = []
    worker = threading.Thread(
        target=lambda: results.append(
            grpcclient.InferenceServerClient(server.grpc_url).infer("slow", [_x_input()])
        )
    )
    try:
        worker.start()
        wait_for(lambda: _metric(server, "servekit_inflight_requests ") == 1)
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            with pytest.raises(InferenceServerException) as info:
                c.infer("digits", [_digits_input()])
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            assert info.value.message().startswith("Exceeds maximum queue size")
            assert c.is_server_ready()  # health holds no slot
            worker.join(timeout=60)
            assert results[0].as_numpy("y")[0, 0] == float(SLOW_ITERATIONS)
            assert c.infer("digits", [_digits_input()]).as_numpy("label").shape == (1, 1)
    finally:
        worker.join(timeout=60)
        assert server.stop() == 0


def _put(sink: queue.Queue, result, error) -> None:
    sink.put((result, error))


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls(tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    repo = _repo(tmp_path / "repo")
    server = start_server(
        "--model-repo",
        str(repo),
        "--grpc-port",
        "0",
        "--grpc-use-ssl",
        "--grpc-server-cert",
        str(cert),
        "--grpc-server-key",
        str(key),
    )
    assert server.grpc_url.startswith("127.0.0.1:")
    try:
        with grpcclient.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(cert)
        ) as c:
            assert c.is_server_live()
            assert c.infer("digits", [_digits_input()]).as_numpy("label").shape == (1, 1)
        with (
            grpcclient.InferenceServerClient(server.grpc_url) as plain,
            pytest.raises(InferenceServerException),
        ):
            plain.is_server_live(client_timeout=5)
    finally:
        assert server.stop() == 0


def test_sigterm_drains_unary_calls_and_streams(tmp_path: Path):
    # A drain timeout long enough for the three slow requests on a shared 2-core machine.
    server = start_server(
        "--model-repo", str(_repo(tmp_path)), "--grpc-port", "0", "--drain-timeout", "120"
    )
    unary: list = []
    sink: queue.Queue = queue.Queue()

    def call() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            unary.append(c.infer("slow", [_x_input()]))

    threads = [threading.Thread(target=call) for _ in range(2)]
    stream = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for t in threads:
            t.start()
        stream.start_stream(callback=partial(_put, sink))
        stream.async_stream_infer("slow", [_x_input()], request_id="in-stream")
        pending = 'nv_inference_pending_request_count{model="slow",version="1"}'
        wait_for(lambda: _metric(server, pending) == 3)
        assert server.stop(timeout=150) == 0
        for t in threads:
            t.join(timeout=60)
        assert [r.as_numpy("y")[0, 0] for r in unary] == [float(SLOW_ITERATIONS)] * 2
        result, error = sink.get(timeout=30)
        assert error is None and result.get_response().id == "in-stream"
        assert result.as_numpy("y")[0, 0] == float(SLOW_ITERATIONS)
        result, error = sink.get(timeout=30)  # then the stream ends: UNAVAILABLE
        assert result is None and error.status() == "StatusCode.UNAVAILABLE"
        assert "the server is shutting down" in error.message()
        assert "servekit: stopped" in server.stderr_text()
    finally:
        stream.stop_stream()
        stream.close()
        for t in threads:
            t.join(timeout=60)
