"""Slow clients and TLS: idle and trickling connections are closed at their deadlines while
other clients are served; a request whose body never arrives frees its in-flight slot."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _serving import EXAMPLE_REPO, ServerProcess, start_server, wait_for

DIGITS_BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
).encode()


def address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.split(":")
    return host, int(port)


def infer_ok(server: ServerProcess) -> bool:
    conn = http.client.HTTPConnection(*address(server), timeout=30)
    try:
        conn.request("POST", "/v2/models/digits/infer", body=DIGITS_BODY)
        resp = conn.getresponse()
        return resp.status == 200 and "outputs" in json.loads(resp.read())
    finally:
        conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset), False while it is open."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def metric(server: ServerProcess, name: str) -> float:
    conn = http.client.HTTPConnection(*address(server), timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return float(next(x for x in text.splitlines() if x.startswith(name + " ")).split()[-1])


def test_idle_and_trickling_connections_do_not_stop_other_clients():
    server = start_server(
        "--model-repo", str(EXAMPLE_REPO), "--http-header-timeout", "2", "--max-inflight", "8"
    )
    idle: list[socket.socket] = []
    partial: list[socket.socket] = []
    trickling: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(100):  # connected, never a byte
            idle.append(socket.create_connection(address(server), timeout=10))
        for _ in range(95):  # half a request line, then silence
            s = socket.create_connection(address(server), timeout=10)
            s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")
            partial.append(s)
        for _ in range(5):  # a header byte every 0.2 s: never complete within the deadline
            trickling.append(socket.create_connection(address(server), timeout=10))

        def trickle() -> None:
            request = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            for byte in request:
                if stop.is_set():
                    return
                for s in trickling:
                    with contextlib.suppress(OSError):  # closed by the server: expected
                        s.send(bytes([byte]))
                time.sleep(0.2)

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        # 200 slow connections are open, and other clients are served all along.
        for _ in range(20):
            assert infer_ok(server)
        everyone = idle + partial + trickling
        wait_for(lambda: all(closed_by_server(s) for s in everyone), timeout=30)
        assert infer_ok(server)
        assert server.proc.poll() is None
    finally:
        stop.set()
        for s in idle + partial + trickling:
            s.close()
        assert server.stop() == 0


def test_a_body_that_never_arrives_frees_its_slot():
    server = start_server(
        "--model-repo", str(EXAMPLE_REPO), "--http-body-timeout", "2", "--max-inflight", "3"
    )
    stalled = []
    try:
        for _ in range(3):  # headers promise 1000 bytes, 10 arrive
            s = socket.create_connection(address(server), timeout=10)
            s.sendall(
                b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"{" * 10
            )
            stalled.append(s)
        wait_for(lambda: metric(server, "servekit_inflight_requests") == 3, timeout=30)
        conn = http.client.HTTPConnection(*address(server), timeout=30)
        conn.request("POST", "/v2/models/digits/infer", body=DIGITS_BODY)
        resp = conn.getresponse()
        assert resp.status == 503
        assert json.loads(resp.read())["error"].startswith("Exceeds maximum queue size")
        conn.close()
        wait_for(lambda: metric(server, "servekit_inflight_requests") == 0, timeout=30)
        assert infer_ok(server)
        assert all(closed_by_server(s) for s in stalled)
    finally:
        for s in stalled:
            s.close()
        assert server.stop() == 0


def test_a_body_slower_than_the_header_timeout_but_within_its_own_is_answered():
    # The connection's one timer is set for the header deadline (1 s); the body deadline
    # (30 s) replaces it, so when the timer fires it must re-arm instead of closing. Then a
    # second request on the same connection gets a fresh header deadline, and is answered too.
    server = start_server(
        "--model-repo",
        str(EXAMPLE_REPO),
        "--http-header-timeout",
        "1",
        "--http-body-timeout",
        "30",
    )
    try:
        with socket.create_connection(address(server), timeout=30) as s:
            head = (
                b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n" % len(DIGITS_BODY)
            )
            reader = s.makefile("rb")
            for _ in range(2):
                s.sendall(head)
                third = len(DIGITS_BODY) // 3
                for start in range(0, len(DIGITS_BODY), third):  # about 2.4 s in all
                    time.sleep(0.8)  # the client's pace, past the 1 s header deadline
                    s.sendall(DIGITS_BODY[start : start + third])
                status = reader.readline()
                assert status.startswith(b"HTTP/1.1 200"), status
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                assert json.loads(reader.read(length))["model_name"] == "digits"
    finally:
        assert server.stop() == 0


def test_keep_alive_connection_closes_after_its_idle_timeout():
    server = start_server("--model-repo", str(EXAMPLE_REPO), "--http-keep-alive-timeout", "1")
    try:
        with socket.create_connection(address(server), timeout=10) as s:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.1 200")
            wait_for(lambda: closed_by_server(s), timeout=30)
    finally:
        assert server.stop() == 0


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl command line tool)."""
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    args = ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    args += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_serves_https_with_a_restricted_api(certificate: tuple[Path, Path]):
    cert, key = certificate
    server = start_server(
        "--model-repo",
        str(EXAMPLE_REPO),
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--http-restricted-api",
        "inference:admin-key=s3cret",
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        for headers, expected in (({}, 403), ({"admin-key": "s3cret"}, 200)):
            conn = http.client.HTTPSConnection(*address(server), timeout=30, context=context)
            conn.request("POST", "/v2/models/digits/infer", body=DIGITS_BODY, headers=headers)
            assert conn.getresponse().status == expected
            conn.close()
        plain = http.client.HTTPConnection(*address(server), timeout=30)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/v2/health/live")
            plain.getresponse()
        plain.close()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("which", ["cert only", "bad pair"])
def test_bad_tls_flags_refuse_startup(certificate: tuple[Path, Path], tmp_path: Path, which: str):
    cert, _ = certificate
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    args = ["--model-repo", str(EXAMPLE_REPO), "--port", "0", "--ssl-certfile", str(cert)]
    if which == "bad pair":
        args += ["--ssl-keyfile", str(bogus)]
    proc = subprocess.run(
        [sys.executable, "-m", "servekit", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("servekit: error:")
    assert ("go together" if which == "cert only" else "cannot load TLS certificate") in lines[0]
