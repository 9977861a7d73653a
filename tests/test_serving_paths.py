"""Path safety: names from load requests and config.pbtxt stay inside their version directory,
and nothing a model loads leads outside the repository (raw HTTP against a real server)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _serving import ADD_CONFIG, ServerProcess, _save, add_model, http_call, start_server

ADD_INPUT = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}]}
).encode()


def load_with_config(server: ServerProcess, model: str, **fields: object) -> tuple[int, dict]:
    config = {
        "name": model,
        "platform": "onnxruntime_onnx",
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],
        **fields,
    }
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    return http_call(server, "POST", f"/v2/repository/models/{model}/load", body)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository, a directory outside it holding a valid model and a secret file)."""
    base = tmp_path_factory.mktemp("paths")
    repo, outside = base / "repo", base / "outside"
    _save(add_model(1.0), repo / "adder" / "1" / "model.onnx")
    (repo / "adder" / "config.pbtxt").write_text(ADD_CONFIG.format(name="adder", extra=""))
    _save(add_model(9.0), outside / "model.onnx")
    (outside / "secret.txt").write_text("not for clients")
    # A version whose model file is a symlink out of the repository.
    (repo / "linked_file" / "1").mkdir(parents=True)
    (repo / "linked_file" / "1" / "model.onnx").symlink_to(outside / "model.onnx")
    (repo / "linked_file" / "config.pbtxt").write_text(
        ADD_CONFIG.format(name="linked_file", extra="")
    )
    # A version directory that is a symlink out of the repository.
    (repo / "linked_dir").mkdir()
    (repo / "linked_dir" / "1").symlink_to(outside, target_is_directory=True)
    (repo / "linked_dir" / "config.pbtxt").write_text(
        ADD_CONFIG.format(name="linked_dir", extra="")
    )
    # A model directory that is a symlink out of the repository.
    (outside / "model_dir" / "1").mkdir(parents=True)
    _save(add_model(5.0), outside / "model_dir" / "1" / "model.onnx")
    (repo / "linked_model").symlink_to(outside / "model_dir", target_is_directory=True)
    return repo, outside


@pytest.fixture(scope="module")
def server(layout: tuple[Path, Path]) -> Iterator[ServerProcess]:
    repo, _ = layout
    srv = start_server(
        "--model-repo", str(repo), "--model-control-mode", "explicit", "--load-model", "adder"
    )
    yield srv
    assert srv.stop() == 0


def assert_still_serving(server: ServerProcess) -> None:
    status, body = http_call(server, "POST", "/v2/models/adder/infer", ADD_INPUT)
    assert status == 200 and body["outputs"][0]["data"] == [1.0] * 4


@pytest.mark.parametrize(
    "filename",
    [
        "{outside}/secret.txt",
        "../../../outside/model.onnx",
        "..",
        "model.onnx\x00.txt",
        "1/model.onnx",
        "",
    ],
)
def test_default_model_filename_must_be_a_plain_name(server, layout, filename: str):
    _, outside = layout
    filename = filename.format(outside=outside)
    status, body = load_with_config(server, "adder", default_model_filename=filename or ".")
    assert status == 400
    assert "default_model_filename" in body["error"]
    assert "must be one plain file name" in body["error"]
    assert "not for clients" not in body["error"]
    assert_still_serving(server)  # the failed load kept the model as it was


@pytest.mark.parametrize("model", ["linked_file", "linked_dir", "linked_model"])
def test_symlinks_out_of_the_repository_are_refused(server, model: str):
    status, body = http_call(server, "POST", f"/v2/repository/models/{model}/load", b"")
    assert status == 400, body
    assert "outside the model repository" in body["error"]
    status, _ = http_call(server, "POST", f"/v2/models/{model}/infer", ADD_INPUT)
    assert status in (404, 503)  # never served from outside
    assert_still_serving(server)


@pytest.mark.parametrize("name", ["..", "%00", "a%00b", ".hidden"])
def test_load_model_names_are_plain(server, name: str):
    status, body = http_call(server, "POST", f"/v2/repository/models/{name}/load", b"")
    assert status in (400, 404)
    assert "error" in body
    assert_still_serving(server)


def test_config_pbtxt_with_an_escaping_filename_refuses_startup(tmp_path: Path):
    _save(add_model(1.0), tmp_path / "evil" / "1" / "model.onnx")
    extra = 'default_model_filename: "../../evil/1/model.onnx"'
    (tmp_path / "evil" / "config.pbtxt").write_text(ADD_CONFIG.format(name="evil", extra=extra))
    proc = subprocess.run(
        [sys.executable, "-m", "servekit", "serve", "--model-repo", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "model 'evil': default_model_filename '../../evil/1/model.onnx'" in lines[0]
