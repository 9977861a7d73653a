"""Serving registry models: digest verification, alias moves without failed requests, and
``servekit export triton`` read back with Triton's schema and served."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format

from _serving import EXAMPLE_REPO, add_model, start_server
from servekit.registry import Registry
from servekit.serving.triton_proto import model_config_pb2 as mc

DIGITS = EXAMPLE_REPO / "digits" / "1" / "model.onnx"
DIGITS_INT8 = EXAMPLE_REPO / "digits_int8" / "1" / "model.onnx"


def tamper(registry: Registry, ref: str) -> None:
    path = registry.model_file(ref, verify=False)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", *args], capture_output=True, text=True, timeout=120
    )


def test_export_triton_writes_a_config_triton_parses_and_serves(tmp_path):
    registry = Registry(tmp_path / "reg")
    registry.register("digits", DIGITS, format="onnx")
    registry.set_alias("digits:1", "production")
    out = tmp_path / "triton"
    proc = run_cli(
        "export", "triton", "digits@production", "--out", str(out),
        "--registry", str(tmp_path / "reg"), "--max-batch-size", "32",
        "--preferred-batch-size", "8", "--preferred-batch-size", "16", "--instances", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "digits")
    config = text_format.Parse((out / "digits" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == (
        "digits",
        "onnxruntime_onnx",
        32,
    )
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("input", mc.TYPE_FP32, [64])
    ]
    outputs = {t.name: (t.data_type, list(t.dims)) for t in config.output}
    assert outputs == {"label": (mc.TYPE_INT64, [1]), "probabilities": (mc.TYPE_FP32, [10])}
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (
        2,
        mc.ModelInstanceGroup.KIND_CPU,
    )
    assert (out / "digits" / "1" / "model.onnx").read_bytes() == DIGITS.read_bytes()

    server = start_server("--model-repo", str(out))
    try:
        with httpclient.InferenceServerClient(server.url, network_timeout=30) as client:
            assert client.get_model_config("digits")["max_batch_size"] == 32
            x = np.zeros((3, 64), dtype=np.float32)
            inp = httpclient.InferInput("input", [3, 64], "FP32")
            inp.set_data_from_numpy(x)
            assert client.infer("digits", [inp]).as_numpy("probabilities").shape == (3, 10)
    finally:
        assert server.stop() == 0


def test_export_refuses_tampered_artifacts_and_unservable_formats(tmp_path):
    registry = Registry(tmp_path / "reg")
    registry.register("digits", DIGITS, format="onnx")
    tamper(registry, "digits:1")
    reg = ["--registry", str(tmp_path / "reg")]
    proc = run_cli("export", "triton", "digits", "--out", str(tmp_path / "o"), *reg)
    assert proc.returncode == 2
    assert proc.stderr.startswith("servekit: error: ") and "digits" in proc.stderr
    assert not (tmp_path / "o" / "digits" / "config.pbtxt").exists()
    (tmp_path / "weights.bin").write_bytes(b"\x00" * 16)
    registry.register("blob", tmp_path / "weights.bin", format="other")
    proc = run_cli("export", "triton", "blob", "--out", str(tmp_path / "o"), *reg)
    assert proc.returncode == 2
    assert "blob:1: format 'other' cannot be served by Triton" in proc.stderr


@pytest.fixture
def registry_with_models(tmp_path: Path) -> tuple[Registry, Path]:
    root = tmp_path / "reg"
    registry = Registry(root)
    registry.register("digits", DIGITS, format="onnx")
    registry.register("digits", DIGITS_INT8, format="onnx")
    registry.set_alias("digits:1", "production")
    adder = tmp_path / "adder.onnx"
    import onnx

    onnx.save(add_model(1.0), str(adder))
    registry.register("adder", adder, format="onnx")
    registry.set_alias("adder:1", "production")
    tamper(registry, "adder:1")
    return registry, root


def test_registry_models_verified_and_alias_moves_without_failures(registry_with_models):
    registry, root = registry_with_models
    server = start_server(
        "--registry", str(root), "--model", "digits@production", "--model", "adder@production",
        "--poll-interval", "0.2",
    )  # fmt: skip
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
        with httpclient.InferenceServerClient(server.url, network_timeout=30) as c:
            inp = httpclient.InferInput("input", [2, 64], "FP32")
            inp.set_data_from_numpy(x)
            while not stop.is_set():
                try:
                    result = c.infer("digits", [inp])
                    versions.append(result.get_response()["model_version"])
                except Exception as exc:  # every failure is recorded and fails the test
                    failures.append(repr(exc))

    try:
        with httpclient.InferenceServerClient(server.url, network_timeout=30) as client:
            assert client.is_model_ready("digits", "1")
            assert not client.is_model_ready("adder")
            index = {r["name"]: r for r in client.get_model_repository_index()}
            assert index["adder"]["state"] == "UNAVAILABLE"
            assert "adder:1" in index["adder"]["reason"]
            thread = threading.Thread(target=traffic, daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while len(versions) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            registry.set_alias("digits:2", "production", reason="int8 promoted")
            while "2" not in versions[-5:] and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
            thread.join(timeout=30)
            assert failures == []
            assert versions[0] == "1" and versions[-1] == "2"
            switch = versions.index("2")
            assert set(versions[switch:]) == {"2"}  # switched once, never back
            assert client.is_model_ready("digits", "2")
            assert client.get_model_metadata("digits")["versions"] == ["2"]
    finally:
        stop.set()
        assert server.stop() == 0
    log = server.stderr_text()
    assert "adder:1 refused" in log
    assert "digits@production now serves version 2" in log


def test_serve_needs_a_source():
    proc = run_cli("serve", "--port", "0")
    assert proc.returncode == 2
    assert "give --model-repo DIR, --model NAME@ALIAS, or both" in proc.stderr
