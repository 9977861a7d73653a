"""``serve`` refuses to run with nothing to serve; every HTTP error body is ``{"error": ...}``."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from _serving import EXAMPLE_REPO, start_server
from servekit.errors import NotFoundError, UnavailableError
from servekit.registry import Registry
from servekit.serving import DataPlane, ModelRepository, RunnerOptions
from servekit.serving.export import export_triton
from servekit.serving.registry_source import RegistrySource
from servekit.serving.startup import require_served

MODEL = EXAMPLE_REPO / "digits" / "1" / "model.onnx"


def _plane_and_source(tmp_path: Path) -> tuple[Registry, DataPlane, RegistrySource]:
    registry = Registry(tmp_path / "reg")
    registry.register("digits", MODEL, format="onnx")
    plane = DataPlane(ModelRepository(None))
    source = RegistrySource(registry, ["digits@production"], RunnerOptions())
    return registry, plane, source


def test_an_alias_set_during_the_grace_period_is_served(tmp_path: Path) -> None:
    registry, plane, source = _plane_and_source(tmp_path)

    async def run() -> None:
        await source.load_all(plane)
        try:
            assert not plane.repository.entries()[0].versions  # no alias yet: nothing loaded
            waiting = asyncio.create_task(require_served(plane, source, 60.0, 0.05))
            await asyncio.sleep(0)  # the task is now in its first wait
            registry.set_alias("digits:1", "production")
            await asyncio.wait_for(waiting, timeout=60)
            assert list(plane.repository.entries()[0].versions) == [1]
        finally:
            await plane.close()

    asyncio.run(run())


def test_nothing_served_after_the_grace_period_names_each_model(tmp_path: Path) -> None:
    _, plane, source = _plane_and_source(tmp_path)

    async def run() -> None:
        await source.load_all(plane)
        try:
            with pytest.raises(UnavailableError, match=r"nothing to serve.*digits \(digits@prod"):
                await require_served(plane, source, 0.1, 0.05)
        finally:
            await plane.close()

    asyncio.run(run())


def test_an_empty_repository_starts(tmp_path: Path) -> None:
    plane = DataPlane(ModelRepository(tmp_path))

    async def run() -> None:
        await plane.load_all()
        await require_served(plane, None, 0.0, 1.0)  # returns: nothing was asked for
        await plane.close()

    asyncio.run(run())


def test_serve_exits_2_when_no_repository_model_loads(tmp_path: Path) -> None:
    broken = tmp_path / "repo" / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    proc = subprocess.run(
        [sys.executable, "-m", "servekit", "serve", "--model-repo", "repo", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("servekit: error: nothing to serve") and "broken" in last


def _request(host: str, method: str, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_unknown_routes_and_methods_answer_the_kserve_error_body() -> None:
    server = start_server("--model-repo", str(EXAMPLE_REPO))
    try:
        assert _request(server.url, "GET", "/") == (404, {"error": "Not Found"})
        assert _request(server.url, "GET", "/v2/nosuch/route") == (404, {"error": "Not Found"})
        status, body = _request(server.url, "DELETE", "/v2/health/ready")
        assert status == 405 and set(body) == {"error"}
        # The server answered and still serves.
        assert _request(server.url, "GET", "/v2/models/digits")[0] == 200
    finally:
        assert server.stop() == 0


def test_export_triton_names_the_model_and_brings_the_reference_profile(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    for name in ("model.onnx", "reference_profile.json"):
        (packaged / name).write_bytes((MODEL.parent / name).read_bytes())
    registry.register("digits", packaged, format="onnx")
    model_dir = export_triton(registry, "digits:1", tmp_path / "repo", name="digits_fp32")
    assert model_dir == tmp_path / "repo" / "digits_fp32"
    assert 'name: "digits_fp32"' in (model_dir / "config.pbtxt").read_text()
    assert (model_dir / "1" / "reference_profile.json").read_bytes() == (
        packaged / "reference_profile.json"
    ).read_bytes()


def test_registry_without_create_refuses_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no registry there"):
        Registry(tmp_path / "nosuch", create=False)
    assert not (tmp_path / "nosuch").exists()
    Registry(tmp_path / "made")
    assert Registry(tmp_path / "made", create=False).list_models() == []
