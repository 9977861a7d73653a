"""``servekit serve`` options from SERVEKIT_<OPTION> variables, and --exit-on-error."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import onnx
import pytest

from _serving import add_model, start_server
from servekit.registry import Registry


@pytest.fixture
def adder_registry(tmp_path: Path) -> Path:
    model = tmp_path / "adder.onnx"
    onnx.save(add_model(1.0), str(model))
    registry = Registry(tmp_path / "reg")
    registry.register("adder", model, format="onnx")
    registry.set_alias("adder:1", "production")
    return tmp_path / "reg"


def serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def infer(url: str, model: str) -> list[float]:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]}
    response = httpx.post(f"http://{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def test_options_come_from_the_environment_and_flags_win(adder_registry):
    env = {
        "SERVEKIT_HOME": str(adder_registry),
        "SERVEKIT_MODEL": "adder@production",
        "SERVEKIT_TELEMETRY": "false",
        "SERVEKIT_MAX_JSON_DEPTH": "1",  # would refuse every request: the flag below wins
        "SERVEKIT_PORT": "1",  # start_server's --port 0 wins
    }
    server = start_server("--max-json-depth", "64", env=env)
    try:
        assert infer(server.url, "adder") == [1.0, 2.0, 3.0, 4.0]
        drift = httpx.get(f"http://{server.url}/v2/models/adder/drift", timeout=30)
        assert drift.status_code == 404  # SERVEKIT_TELEMETRY=false took effect
        assert "--no-telemetry" in drift.json()["error"]
    finally:
        assert server.stop() == 0


def test_servekit_registry_and_home_must_agree(adder_registry, tmp_path):
    env = {
        "SERVEKIT_HOME": str(adder_registry),
        "SERVEKIT_REGISTRY": str(tmp_path / "other"),
        "SERVEKIT_MODEL": "adder@production",
    }
    proc = serve("--port", "0", env=env)
    assert proc.returncode == 2
    assert "two registry roots" in proc.stderr
    assert not (tmp_path / "other").exists()


def test_servekit_home_alone_does_not_turn_a_repository_server_into_a_registry_one(
    tmp_path, adder_registry
):
    repo = tmp_path / "repo"
    (repo / "adder2" / "1").mkdir(parents=True)
    onnx.save(add_model(2.0), str(repo / "adder2" / "1" / "model.onnx"))
    server = start_server("--model-repo", str(repo), env={"SERVEKIT_HOME": str(adder_registry)})
    try:
        assert infer(server.url, "adder2") == [2.0, 3.0, 4.0, 5.0]
    finally:
        assert server.stop() == 0


def test_exit_on_error_refuses_a_tampered_artifact_with_one_line(adder_registry):
    path = Registry(adder_registry).model_file("adder:1", verify=False)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    env = {"SERVEKIT_EXIT_ON_ERROR": "true", "SERVEKIT_MODEL": "adder@production"}
    env_no_exit = {"SERVEKIT_MODEL": "adder@production"}
    proc = serve("--port", "0", "--registry", str(adder_registry), env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("servekit: error: --model adder@production:")
    assert "--exit-on-error" in lines[0]
    # Without it, the start-up rule still refuses a server with nothing to serve, after its
    # grace period, and names the digest that failed.
    proc = serve(
        "--port", "0", "--registry", str(adder_registry), "--startup-grace", "0", env=env_no_exit
    )
    assert proc.returncode == 2, proc.stderr
    assert "nothing to serve" in proc.stderr and "does not match" in proc.stderr


def test_exit_on_error_refuses_a_repository_model_that_fails_to_load(tmp_path):
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    proc = serve("--port", "0", "--model-repo", str(tmp_path / "repo"), "--exit-on-error", env={})
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("servekit: error: not serving (--exit-on-error): broken")
