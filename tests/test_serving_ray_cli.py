"""``servekit serve --ray`` as users run it: a local Ray cluster started by the command, the
proxy it asked for on the given port, one line when serving, and a clean stop on SIGTERM."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from sklearn.datasets import load_digits

from _serving import EXAMPLE_REPO

pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready_status(port: int) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status
    except OSError:
        return 0


def listener(port: int) -> str:
    """The command name of the process listening on 127.0.0.1:``port`` ('' when none)."""
    wanted = f"0100007F:{port:04X}"
    inodes = {
        fields[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if (fields := line.split())[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
    }
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            if any(f"socket:[{inode}]" in links for inode in inodes):
                return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
    return ""


@pytest.mark.parametrize(
    ("proxy", "process"), [(None, "haproxy"), ("ray", "ray::ProxyActor")], ids=["haproxy", "ray"]
)
def test_serve_ray_answers_on_its_port_and_stops_cleanly_on_sigterm(tmp_path, proxy, process):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "servekit", "serve", "--ray", "--replicas", "1",
         "--replica-cpus", "0.5", "--model-repo", str(EXAMPLE_REPO), "--port", str(port),
         *(["--ray-proxy", proxy] if proxy else [])],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
    )  # fmt: skip
    lines: list[str] = []
    printed = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("servekit: serving on"):
                printed.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert printed.wait(timeout=240), f"no serving line: {lines}"
        assert lines[-1].strip() == f"servekit: serving on http://127.0.0.1:{port}"
        seen = set()
        deadline = time.monotonic() + 60
        while (status := ready_status(port)) != 200 and time.monotonic() < deadline:
            seen.add(status)
            threading.Event().wait(0.5)
        assert status == 200, seen
        assert listener(port) == process
        x = (load_digits().data[:4] / 16).astype(np.float32)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        labels = client.infer("digits", [inp]).as_numpy("label").ravel()
        assert labels.shape == (4,)
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise
    assert code == 0
    assert ready_status(port) == 0  # the proxy is gone with the local cluster
