"""A serve-only virtual environment (``servekit[serve]``, installed offline from the wheelhouse
that ``servekit containerize`` makes, without byte code as the image installs it) serves ONNX
models over HTTP and gRPC with neither tritonclient nor onnx, gets byte code for just what the
server imports from ``servekit.containerize.precompile``, and says which extra the other
commands need."""

from __future__ import annotations

import os
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

# tritonclient would pull ml_dtypes and python-rapidjson (rapidjson) into every serve image.
ABSENT = (
    "torch", "sklearn", "matplotlib", "skl2onnx", "skops", "tqdm", "onnx", "tritonclient",
    "ml_dtypes", "rapidjson",
)  # fmt: skip


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve-only")
    wheels = build_wheelhouse(["serve"], root / "wheels")
    assert {w.name for w in wheels}.isdisjoint(
        {"torch", "scikit_learn", "matplotlib", "onnx", "tritonclient", "ml_dtypes"}
    )
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
            "--no-compile",
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


def test_it_serves_an_onnx_model_over_http_and_grpc(serve_venv, tmp_path):
    import tritonclient.grpc as grpcclient  # the client runs here, not in the serve venv

    # No config.pbtxt: the configuration is completed from the graph, read by ONNX Runtime.
    (tmp_path / "repo" / "adder" / "1").mkdir(parents=True)
    onnx.save(add_model(1.5), str(tmp_path / "repo" / "adder" / "1" / "model.onnx"))
    server = start_server(
        "--model-repo", str(tmp_path / "repo"), "--grpc-port", "0",
        python=str(serve_venv / "bin" / "python"),
    )  # fmt: skip
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

        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            config = client.get_model_config("adder").config
            assert [(t.name, list(t.dims)) for t in config.input] == [("x", [4])]
            assert config.max_batch_size > 0  # the dynamic first dimension, found in the graph
            inp = grpcclient.InferInput("x", [2, 4], "FP32")
            inp.set_data_from_numpy(x)
            result = client.infer("adder", [inp])
            np.testing.assert_array_equal(result.as_numpy("y"), x + 1.5)
    finally:
        assert server.stop() == 0


def site_packages(venv: Path) -> Path:
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / python / "site-packages"


def test_precompile_writes_byte_code_for_what_the_server_imports(serve_venv):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(
        [str(serve_venv / "bin" / "python"), "-m", "servekit.containerize.precompile",
         "servekit.serving.registry_source", "onnxruntime"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    site = site_packages(serve_venv)
    tag = sys.implementation.cache_tag
    imported = (
        "servekit/serving/rest/server", "servekit/serving/grpc/service",
        "servekit/serving/registry_source", "uvicorn/main", "onnxruntime/__init__",
    )  # fmt: skip
    for module in imported:
        path = site / module
        assert (path.parent / "__pycache__" / f"{path.name}.{tag}.pyc").is_file(), module
    # Installed with --no-compile, and never imported by a server: no byte code.
    for never in ("numpy/_core/tests", "onnxruntime/transformers"):
        assert (site / never).is_dir() and not list((site / never).rglob("*.pyc")), never


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["nosuchmodule"], {}, "No module named 'nosuchmodule'"),
        ([], {"SERVEKIT_TELEMETRY": "maybe"}, "exited with status 2 before it listened"),
    ],
)
def test_precompile_fails_the_build_when_the_server_cannot_start(serve_venv, args, env, message):
    proc = subprocess.run(
        [str(serve_venv / "bin" / "python"), "-m", "servekit.containerize.precompile", *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("servekit: error: ")
    assert message in proc.stderr


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
        "servekit: error: this command needs 'onnx', which is not installed: "
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
