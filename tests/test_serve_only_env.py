"""A serve-only virtual environment (``servekit[serve]``, installed offline from the wheelhouse
that ``servekit containerize`` makes) serves ONNX models, and says which extra the other
commands need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from _serving import add_model, start_server
from servekit.containerize.wheelhouse import build_wheelhouse

pytestmark = pytest.mark.slow

ABSENT = ("torch", "sklearn", "matplotlib", "skl2onnx", "skops", "tqdm")


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-only")
    wheels = build_wheelhouse(["serve"], root / "wheels")
    assert {w.name for w in wheels}.isdisjoint({"torch", "scikit_learn", "matplotlib"})
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(root / "wheels"),
            "servekit[serve]",
        ],
        check=True,
        timeout=900,
    )
    return venv


def test_the_venv_lacks_the_packaging_and_training_stacks(serve_venv):
    probe = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
    probe += f"for m in {ABSENT!r}}}))"
    proc = subprocess.run(
        [str(serve_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{" + ", ".join(f'"{m}": false' for m in ABSENT) + "}"


def test_it_serves_an_onnx_model(serve_venv, tmp_path):
    (tmp_path / "repo" / "adder" / "1").mkdir(parents=True)
    onnx.save(add_model(1.5), str(tmp_path / "repo" / "adder" / "1" / "model.onnx"))
    server = start_server(
        "--model-repo", str(tmp_path / "repo"), python=str(serve_venv / "bin" / "python")
    )
    try:
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        body = {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        response = httpx.post(f"http://{server.url}/v2/models/adder/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == (x + 1.5).ravel().tolist()
    finally:
        assert server.stop() == 0


def test_package_says_which_extra_to_install(serve_venv, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 4), dtype=np.float32))
    (tmp_path / "model.skops").write_bytes(b"not read: the extra is missing first")
    proc = subprocess.run(
        [
            str(serve_venv / "bin" / "servekit"),
            "package",
            "model.skops",
            "--framework",
            "sklearn",
            "--inputs",
            "x.npy",
            "--name",
            "m",
            "--out",
            "out",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "servekit: error: this command needs 'skops', which is not installed: "
        "pip install 'servekit[package]'"
    ]
    assert not (tmp_path / "out").exists()


def test_help_lists_every_command_in_a_partial_install(serve_venv):
    # Command modules import their stage's libraries when they run, so help lists them all
    # (the missing extra is named when the command needs it: see the package test above).
    proc = subprocess.run(
        [str(serve_venv / "bin" / "servekit"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("bench", "package", "serve", "containerize", "registry"):
        assert re.search(rf"\n  {command} ", proc.stdout), proc.stdout
