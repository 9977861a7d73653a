"""Helpers for the serving tests: a model repository with every kind of model, and a real
``servekit serve`` process on 127.0.0.1 with bounded waits."""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REPO = ROOT / "model_repo"

#: KServe datatype -> (ONNX element type, Triton config type, numpy dtype).
DATATYPES = {
    "BOOL": (TensorProto.BOOL, "TYPE_BOOL", np.bool_),
    "UINT8": (TensorProto.UINT8, "TYPE_UINT8", np.uint8),
    "UINT16": (TensorProto.UINT16, "TYPE_UINT16", np.uint16),
    "UINT32": (TensorProto.UINT32, "TYPE_UINT32", np.uint32),
    "UINT64": (TensorProto.UINT64, "TYPE_UINT64", np.uint64),
    "INT8": (TensorProto.INT8, "TYPE_INT8", np.int8),
    "INT16": (TensorProto.INT16, "TYPE_INT16", np.int16),
    "INT32": (TensorProto.INT32, "TYPE_INT32", np.int32),
    "INT64": (TensorProto.INT64, "TYPE_INT64", np.int64),
    "FP16": (TensorProto.FLOAT16, "TYPE_FP16", np.float16),
    "FP32": (TensorProto.FLOAT, "TYPE_FP32", np.float32),
    "FP64": (TensorProto.DOUBLE, "TYPE_FP64", np.float64),
    "BYTES": (TensorProto.STRING, "TYPE_STRING", np.object_),
}


def _save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def identity_model() -> onnx.ModelProto:
    """One Identity per datatype: input ``in_<DT>`` -> output ``out_<DT>``, shape [-1]."""
    inputs, outputs, nodes = [], [], []
    for dt, (elem, _, _) in DATATYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{dt}", elem, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"out_{dt}", elem, ["n"]))
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def identity_config(name: str) -> str:
    tensors = []
    for dt, (_, triton, _) in DATATYPES.items():
        tensors.append(f'input {{ name: "in_{dt}" data_type: {triton} dims: [-1] }}')
        tensors.append(f'output {{ name: "out_{dt}" data_type: {triton} dims: [-1] }}')
    return f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n' + "\n".join(tensors)


def add_model(value: float) -> onnx.ModelProto:
    """``y = x + value`` on FP32 [-1, 4]."""
    const = helper.make_tensor("c", TensorProto.FLOAT, [1], [value])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [const],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


ADD_CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input {{ name: "x" data_type: TYPE_FP32 dims: [4] }}
output {{ name: "y" data_type: TYPE_FP32 dims: [4] }}
{extra}
"""


def build_repository(root: Path) -> Path:
    """A repository with: digits and digits_int8 (the example repository), ``identity`` (every
    datatype), ``versioned`` (versions 1-3, policy latest 2), ``auto`` (no config.pbtxt),
    ``small`` (max_batch_size 8, two instances) and ``broken`` (an artifact that is not ONNX)."""
    for name in ("digits", "digits_int8"):
        shutil.copytree(EXAMPLE_REPO / name, root / name)
    _save(identity_model(), root / "identity" / "1" / "model.onnx")
    (root / "identity" / "config.pbtxt").write_text(identity_config("identity"))
    for version in (1, 2, 3):
        _save(add_model(float(version)), root / "versioned" / str(version) / "model.onnx")
    (root / "versioned" / "config.pbtxt").write_text(
        ADD_CONFIG.format(name="versioned", extra="version_policy { latest { num_versions: 2 } }")
    )
    _save(add_model(10.0), root / "auto" / "1" / "model.onnx")
    _save(add_model(0.5), root / "small" / "1" / "model.onnx")
    (root / "small" / "config.pbtxt").write_text(
        ADD_CONFIG.format(name="small", extra="instance_group { count: 2 kind: KIND_CPU }")
    )
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    (root / "broken" / "config.pbtxt").write_text(ADD_CONFIG.format(name="broken", extra=""))
    return root


@dataclass
class ServerProcess:
    """A running ``servekit serve``; ``url`` is ``127.0.0.1:PORT`` (tritonclient's form)."""

    proc: subprocess.Popen[str]
    url: str
    stderr_lines: queue.Queue[str]
    #: ``127.0.0.1:PORT`` of the gRPC front end ("" without --grpc-port).
    grpc_url: str = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait (bounded) for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def stderr_text(self) -> str:
        lines = []
        while not self.stderr_lines.empty():
            lines.append(self.stderr_lines.get_nowait())
        return "".join(lines)


_LISTENING = ("servekit: serving on http://", "servekit: serving on https://")
_GRPC_LISTENING = "servekit: serving gRPC on "


def http_call(
    server: ServerProcess, method: str, path: str, body: bytes = b"", timeout: float = 120
) -> tuple[int, dict]:
    """One raw HTTP request to ``server``; return the status and the JSON body ({} if empty)."""
    host, port = server.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        content = resp.read()
        return resp.status, json.loads(content) if content else {}
    finally:
        conn.close()


def _pump(stream: object, sink: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put(line)


def start_server(
    *args: str,
    timeout: float = 60,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start ``servekit serve --port 0 ARGS`` with ``python`` (plus ``env`` over this
    environment) and wait (bounded) for its listening line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.Popen(
        [python, "-m", "servekit", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True).start()
    deadline = time.monotonic() + timeout
    grpc_url = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait(timeout=10)
            server = ServerProcess(proc, "", err)
            raise AssertionError(f"server did not start:\n{server.stderr_text()}")
        try:
            line = out.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line.startswith(_GRPC_LISTENING):
            grpc_url = line.strip().split("://", 1)[1]
        for prefix in _LISTENING:
            if line.startswith(prefix):
                return ServerProcess(proc, line.strip().removeprefix(prefix), err, grpc_url)


def slow_model(iterations: int) -> onnx.ModelProto:
    """``y = x + iterations`` on FP32 [-1, 4], computed by a Loop of that many Adds (slow)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Add", ["v", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["n", 4]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            helper.make_tensor("trips", TensorProto.INT64, [], [iterations]),
            helper.make_tensor("keep_going", TensorProto.BOOL, [], [True]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write_slow_model(root: Path, name: str, iterations: int, extra: str = "") -> None:
    """A repository entry ``name`` running :func:`slow_model` (max_batch_size 8)."""
    _save(slow_model(iterations), root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(ADD_CONFIG.format(name=name, extra=extra))


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Poll ``condition()`` every ``interval`` seconds until it returns a truthy value (which
    is returned); AssertionError naming ``what`` once ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
