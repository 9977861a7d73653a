"""Serving benchmark: servekit serve vs a naive FastAPI + ONNX Runtime endpoint vs in-process
ONNX Runtime at its best batch size, on the digits MLP (tiny compute) and a compute-heavy MLP;
and, when benchmarks/.venv-peers exists (``bash benchmarks/setup_peers.sh``), NVIDIA Triton
through PyTriton (dynamic batching) and MLServer (adaptive batching) serving the same ONNX files
(servers in benchmarks/peers/, run with the peers environment's python).

Each server runs in its own process; ``wrk`` (Debian package ``wrk``) drives it from another
process with a closed loop of 1, 8 and 64 connections (one request in flight each), posting
one-row KServe v2 requests (binary and JSON for servekit, JSON for the naive endpoint, which only
speaks JSON; a peer gets binary requests when it answers them, else JSON, marked in the table).
servekit's gRPC front end (``--grpc-port``) gets the same closed loop from ``h2load`` (Debian
package ``nghttp2-client``) posting one pre-serialized raw ``ModelInfer`` message per request
over 1, 8 and 64 HTTP/2 connections: like wrk it is a C client, so client cost does not favour
either protocol on a machine whose cores the client shares with the server (a Python gRPC
client would cost several times the server's own work per request). h2load sees only HTTP
status 200; gRPC-level failures are counted from the server's statistics before and after.
Without h2load the gRPC rows are reported as not measured.
Every run also serves the HTTP floor (benchmarks/floor_server.py: uvicorn + httptools + uvloop,
the same ASGI shape as servekit's infer handler, a fixed response, no model) with the same
requests, and reports each servekit row as a ratio of the floor's row at the same encoding and
concurrency: the floor is the ceiling any server on this HTTP stack reaches on the machine.
It also serves the floor plus one Rust batcher round trip to the real digits runner
(benchmarks/ceiling_server.py): the most any design that keeps uvicorn in front and the model
runner in Python (issue 14's) reaches, reported against the floor beside servekit.
With ``--runs N`` each point is measured N times in a row and reported as the median with its
spread (min-max).
A tritonclient correctness check against in-process ONNX Runtime runs first for every server
but the naive one and the floor. A peer that is missing, fails to start in time or answers
wrongly is reported with the reason and left out; the rest of the run goes on.

    python benchmarks/bench_serving.py [--quick] [--duration S] [--runs N] [--no-peers]

Prints a table and writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from _results import write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
PEERS_VENV = ROOT / "benchmarks" / ".venv-peers"
PEERS_DIR = ROOT / "benchmarks" / "peers"
PEER_START_TIMEOUT_S = 120
PYTRITON, MLSERVER = "PyTriton (Triton)", "MLServer"
FLOOR = "floor (bare uvicorn)"
FLOOR_SERVER = ROOT / "benchmarks" / "floor_server.py"
CEILING = "ceiling (floor + batcher)"
CEILING_SERVER = ROOT / "benchmarks" / "ceiling_server.py"
# MLServer's adaptive batcher is off unless max_batch_time > 0; 100 us is the nearest to the
# zero queue delay servekit and Triton use here. parallel_workers 0 keeps inference in the
# server process (a worker process only adds IPC on this 2-core machine); debug off drops
# uvicorn's access log.
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.0001}
MLSERVER_SETTINGS = {"debug": False, "parallel_workers": 0}
CONCURRENCY = (1, 8, 64)
HEAVY_HIDDEN, HEAVY_LAYERS, FEATURES = 2048, 4, 64

NAIVE_SERVER = """
import os, sys
import numpy as np, onnxruntime as ort, uvicorn
from fastapi import FastAPI, Request

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
app = FastAPI()

@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    body = await request.json()
    feeds = {
        i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"])
        for i in body["inputs"]
    }
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, feeds)
    return {"model_name": name, "outputs": [
        {"name": n, "datatype": "FP32" if o.dtype == np.float32 else "INT64",
         "shape": list(o.shape), "data": o.ravel().tolist()} for n, o in zip(names, outs)]}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            access_log=False)
"""

LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {{\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"non2xx\\":%d,"
    .. "\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d}}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def heavy_model(path: Path) -> None:
    """An MLP of HEAVY_LAYERS hidden layers of HEAVY_HIDDEN units (about a millisecond per row
    on one core), input ``input`` FP32 [-1, 64], output ``probabilities`` FP32 [-1, 10]."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, width = [], [], "input", FEATURES
    for i in range(HEAVY_LAYERS + 1):
        out_w = 10 if i == HEAVY_LAYERS else HEAVY_HIDDEN
        w = (rng.standard_normal((width, out_w)) / np.sqrt(width)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(out_w, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        if i < HEAVY_LAYERS:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            prev = f"h{i}"
        else:
            nodes.append(helper.make_node("Softmax", [f"a{i}"], ["probabilities"], axis=1))
        width = out_w
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        str(path),
    )


def build_repo(root: Path) -> dict[str, Path]:
    """digits (from model_repo/) and heavy, each with digits' dynamic batching config."""
    shutil.copytree(ROOT / "model_repo" / "digits", root / "digits")
    heavy_model(root / "heavy" / "1" / "model.onnx")
    config = (root / "digits" / "config.pbtxt").read_text()
    config = config.replace('name: "digits"', 'name: "heavy"')
    config = re.sub(r'output \{\n  name: "label".*?\n\}\n', "", config, flags=re.S)
    (root / "heavy" / "config.pbtxt").write_text(config)
    return {
        "digits": root / "digits" / "1" / "model.onnx",
        "heavy": root / "heavy" / "1" / "model.onnx",
    }


def body_bytes(x: np.ndarray) -> dict[str, tuple[bytes, int | None]]:
    """One v2 request for ``x`` as bytes: binary (Triton extension, with its JSON header's
    length) and JSON (no header length)."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    doc = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }
    return {"binary": (head + x.tobytes(), len(head)), "json": (json.dumps(doc).encode(), None)}


def request_bodies(x: np.ndarray, tmp: Path, name: str) -> dict[str, tuple[Path, dict]]:
    """One-row v2 request bodies as files for wrk, with their headers: binary (Triton
    extension) and JSON."""
    (binary_body, head_length), (json_body, _) = body_bytes(x).values()
    binary = tmp / f"{name}.bin"
    binary.write_bytes(binary_body)
    as_json = tmp / f"{name}.json"
    as_json.write_bytes(json_body)
    return {
        "binary": (
            binary,
            {
                "Inference-Header-Content-Length": str(head_length),
                "Content-Type": "application/octet-stream",
            },
        ),
        "json": (as_json, {"Content-Type": "application/json"}),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(
    port: int,
    proc: subprocess.Popen,
    timeout: float = 60,
    path: str = "/v2/health/ready",
    ok: tuple[int, ...] = (200, 404, 405),
) -> None:
    """Returns once GET ``path`` answers a status in ``ok``; raises RuntimeError when the
    server exits or ``timeout`` seconds pass first."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status in ok:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer {path} within {timeout:.0f} s")


def start(command: list[str], env: dict, log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Starts a server in its own process group (so stop() also ends the processes it
    spawns, e.g. tritonserver and its Python backend stubs), output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    # Children left behind by a server that exited (or was killed) first.
    signal_group(signal.SIGKILL)


def log_tail(log: Path, lines: int = 3) -> str:
    """The last ``lines`` lines of a server log that mention an error (else its last lines),
    joined for one message."""
    text = log.read_text(errors="replace") if log.exists() else ""
    all_lines = [x.strip() for x in text.splitlines() if x.strip()]
    errors = [x for x in all_lines if re.search(r"error|exception", x, re.IGNORECASE)]
    return " | ".join((errors or all_lines)[-lines:])


def wrk(
    port: int, model: str, body: Path, headers: dict, conns: int, duration: float, tmp: Path
) -> dict:
    lua = tmp / "post.lua"
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    lua.write_text(LUA.format(body=body, headers=header_lines))
    proc = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def grpc_body(x: np.ndarray, model: str, tmp: Path) -> Path:
    """One gRPC length-prefixed ``ModelInferRequest`` (raw_input_contents) for h2load."""
    import struct

    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    message = request.SerializeToString()
    path = tmp / f"{model}.grpc"
    path.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return path


def grpc_failures(port: int, model: str) -> tuple[int, int]:
    """(success, fail) request counts of ``model`` from the server's gRPC statistics."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        stats = client.get_inference_statistics(model).model_stats[0].inference_stats
        return stats.success.count, stats.fail.count


def h2load(port: int, model: str, body: Path, conns: int, duration: float, tmp: Path) -> dict:
    """h2load's closed loop of ``conns`` HTTP/2 connections (one gRPC call in flight each)
    posting ``body`` to ModelInfer; returns the fields ``wrk`` returns."""
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    before = grpc_failures(port, model)
    seconds = max(1, round(duration))
    proc = subprocess.run(
        [
            *("h2load", "-t1", f"-c{conns}", "-m1", "-D", str(seconds), "-d", str(body)),
            *("-H", "content-type: application/grpc", "-H", "te: trailers"),
            *("--log-file", str(log)),
            f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    if proc.returncode != 0 or not log.exists():
        raise RuntimeError(f"h2load failed: {proc.stdout[-500:]}\n{proc.stderr[-500:]}")
    fields = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = np.array([int(f[2]) for f in fields], dtype=np.float64)
    non2xx = sum(f[1] != "200" for f in fields)
    after = grpc_failures(port, model)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) if latencies.size else (0, 0, 0)
    return {
        "requests": len(fields),
        "duration_us": seconds * 1_000_000,
        "errors": after[1] - before[1],
        "non2xx": non2xx,
        "p50_us": int(p50),
        "p90_us": int(p90),
        "p99_us": int(p99),
        "rps": len(fields) / seconds,
    }


def correctness_check(
    port: int, model_file: Path, model: str, x: np.ndarray, require_binary: bool = True
) -> str | None:
    """Checks with tritonclient that the server's ``probabilities`` match in-process ONNX
    Runtime for binary and JSON requests. Returns None, or (when ``require_binary`` is False)
    the reason binary requests failed; raises when JSON fails, or binary when required."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"input": x})[0]
    binary_failure = None
    with httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30) as client:
        for binary in (True, False):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            try:
                out = client.infer(model, [inp]).as_numpy("probabilities")
            except InferenceServerException as exc:
                if not binary or require_binary:
                    raise
                binary_failure = f"HTTP {exc.status()}: {' '.join(str(exc).split())[-160:]}"
                continue
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    return binary_failure


def in_process_limit(model_file: Path, duration: float) -> dict:
    """Rows/s of in-process ONNX Runtime (one thread) at its best batch size."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    best = {"batch": 0, "rows_per_s": 0.0}
    for batch in (1, 8, 16, 32, 64):
        x = rng.random((batch, FEATURES), dtype=np.float32)
        session.run(None, {"input": x})
        rows, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration / 5:
            session.run(None, {"input": x})
            rows += batch
        rate = rows / (time.perf_counter() - start)
        if rate > best["rows_per_s"]:
            best = {"batch": batch, "rows_per_s": rate}
    return best


def peer_setup() -> tuple[Path | None, dict, dict[str, str]]:
    """Returns (the peers environment's python or None, its environment variables, reasons
    keyed by peer name for peers that cannot run). Each import is checked in its own bounded
    process (mlserver and tritonclient.grpc clash when imported together)."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        reason = f"{PEERS_VENV.relative_to(ROOT)} missing (bash benchmarks/setup_peers.sh)"
        return None, {}, {PYTRITON: reason, MLSERVER: reason}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(PEERS_DIR))
    missing: dict[str, str] = {}
    for peer, module in ((PYTRITON, "pytriton.triton"), (MLSERVER, "mlserver")):
        try:
            proc = subprocess.run(
                [str(python), "-c", f"import {module}, onnxruntime"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                missing[peer] = f"import {module} failed: {last[:200]}"
        except subprocess.TimeoutExpired:
            missing[peer] = f"import {module} took over 120 s"
    # PyTriton's bundled tritonserver runs a Python backend stub that links libpython.
    libdir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        x for x in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if x
    )
    return python, env, missing


def pytriton_command(python: Path, model: str, model_file: Path, port: int) -> list[str]:
    """PyTriton serving ``model_file`` as ``model``, Triton's HTTP port on ``port``."""
    return [
        str(python),
        str(PEERS_DIR / "pytriton_server.py"),
        "--http-port",
        str(port),
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        f"{model}={model_file}",
    ]


def mlserver_command(model: str, model_file: Path, port: int, root: Path) -> list[str]:
    """MLServer serving ``model_file`` as ``model`` through benchmarks/peers/mlserver_onnx.py
    with adaptive batching; writes its settings under ``root``."""
    (root / model).mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        **MLSERVER_SETTINGS,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": model,
        "implementation": "mlserver_onnx.OnnxRuntime",
        **MLSERVER_BATCH,
        "parameters": {"uri": str(model_file)},
    }
    (root / model / "model-settings.json").write_text(json.dumps(model_settings))
    return [str(PEERS_VENV / "bin" / "mlserver"), "start", str(root)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point instead of 10 s")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per server")
    parser.add_argument("--no-peers", action="store_true", help="skip PyTriton and MLServer")
    parser.add_argument(
        "--runs", type=int, default=None, help="measurements per point (default 3 with --quick, 1)"
    )
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else (3 if args.quick else 1)
    if runs < 1:
        sys.exit("bench_serving: --runs must be at least 1")
    duration = args.duration or (3.0 if args.quick else 10.0)
    if shutil.which("wrk") is None:
        sys.exit("bench_serving: needs wrk (Debian/Ubuntu: apt-get install wrk)")
    if shutil.which("h2load") is None:
        print("servekit gRPC: not measured: needs h2load (apt-get install nghttp2-client)")
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
    )
    if args.no_peers:
        peer_python, peer_env = None, {}
        skipped = {PYTRITON: "--no-peers", MLSERVER: "--no-peers"}
    else:
        peer_python, peer_env, skipped = peer_setup()
    for peer, reason in skipped.items():
        print(f"{peer}: not measured: {reason}", flush=True)
    rows: list[dict] = []
    limits: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        models = build_repo(tmp / "repo")
        x = np.random.default_rng(1).random((1, FEATURES), dtype=np.float32)
        naive_file = tmp / "naive.py"
        naive_file.write_text(textwrap.dedent(NAIVE_SERVER))
        for model, model_file in models.items():
            bodies = request_bodies(x, tmp, model)
            bodies["grpc"] = (grpc_body(x, model, tmp), {})
            limits[model] = in_process_limit(model_file, duration)
            port, grpc_port = free_port(), free_port()
            servers = []
            if model == "digits":
                servers += [
                    {"name": FLOOR, "command": [sys.executable, str(FLOOR_SERVER), str(port)]},
                    {
                        "name": CEILING,
                        "command": [
                            sys.executable,
                            str(CEILING_SERVER),
                            str(port),
                            str(model_file),
                        ],
                    },
                ]
            servers += [
                {
                    "name": "servekit",
                    "command": [
                        sys.executable,
                        *("-m", "servekit", "serve", "--model-repo", str(tmp / "repo")),
                        *("--threads", str(args.threads), "--port", str(port)),
                        *("--grpc-port", str(grpc_port)),
                    ],
                    "grpc_port": grpc_port,
                },
                {
                    "name": "naive FastAPI+ORT",
                    "command": [sys.executable, str(naive_file), str(model_file), str(port)],
                },
            ]
            if peer_python is not None and PYTRITON not in skipped:
                servers.append(
                    {
                        "name": PYTRITON,
                        "command": pytriton_command(peer_python, model, model_file, port),
                    }
                )
            if peer_python is not None and MLSERVER not in skipped:
                root = tmp / f"mlserver-{model}"
                servers.append(
                    {
                        "name": MLSERVER,
                        "command": mlserver_command(model, model_file, port, root),
                        "cwd": root,
                    }
                )
            for server in servers:
                rows += run_server(
                    server,
                    model,
                    model_file,
                    port,
                    x,
                    bodies,
                    env,
                    peer_env,
                    tmp,
                    duration,
                    skipped,
                    runs,
                )
    print_table(rows, limits, skipped)
    write_results(
        RESULTS,
        {
            "duration_s": duration,
            "runs_per_point": runs,
            "rows": rows,
            "in_process_limit": limits,
            "peers_not_measured": skipped,
            "mlserver": {"model_settings": MLSERVER_BATCH, "settings": MLSERVER_SETTINGS},
        },
    )
    print(f"wrote {RESULTS}")


def run_server(
    server: dict,
    model: str,
    model_file: Path,
    port: int,
    x: np.ndarray,
    bodies: dict[str, tuple[Path, dict]],
    env: dict,
    peer_env: dict,
    tmp: Path,
    duration: float,
    skipped: dict[str, str],
    runs: int = 1,
) -> list[dict]:
    """Starts one server, checks it and drives it with wrk at each concurrency, ``runs`` times
    per point (the row holds the medians and every run). Returns the result rows. A peer that
    fails to start, answers wrongly or breaks under load is recorded in ``skipped`` with the
    reason and yields no rows; servekit, naive and floor failures raise."""
    name = server["name"]
    peer = name in (PYTRITON, MLSERVER)
    log = tmp / f"{re.sub(r'[^A-Za-z0-9]+', '-', name)}-{model}.log"
    proc = start(server["command"], peer_env if peer else env, log, server.get("cwd"))
    rows: list[dict] = []
    try:
        binary_failure = None
        if peer:
            # Triton and MLServer are ready before their models are: wait for the model.
            wait_ready(port, proc, PEER_START_TIMEOUT_S, f"/v2/models/{model}/ready", (200,))
            binary_failure = correctness_check(port, model_file, model, x, require_binary=False)
        else:
            wait_ready(port, proc)
            if name == "servekit":
                correctness_check(port, model_file, model, x)
        if name == "servekit":
            grpc = ("grpc",) if shutil.which("h2load") else ()
            encodings = ("binary", "json", *grpc)
        elif name in (FLOOR, CEILING):
            encodings = ("binary", "json")
        elif not peer or binary_failure:
            encodings = ("json",)
        else:
            encodings = ("binary",)
        if binary_failure:
            print(f"{name}: binary v2 requests refused ({binary_failure}); driven with JSON")
        for encoding in encodings:
            body, headers = bodies[encoding]
            for conns in CONCURRENCY:
                measured = []
                for _ in range(runs):
                    if encoding == "grpc":
                        measured.append(
                            h2load(server["grpc_port"], model, body, conns, duration, tmp)
                        )
                    else:
                        measured.append(wrk(port, model, body, headers, conns, duration, tmp))
                r = median_run(measured)
                rows.append(
                    {
                        "model": model,
                        "server": name,
                        "encoding": encoding,
                        "concurrency": conns,
                        **r,
                        **({"binary_refused": binary_failure} if binary_failure else {}),
                    }
                )
                print(
                    f"{model:7} {name:20} {encoding:6} c={conns:<3} "
                    f"{r['rps']:9.0f} req/s ({spread(r['rps_runs'])})  "
                    f"p50 {r['p50_us'] / 1e3:7.2f} ms  "
                    f"p90 {r['p90_us'] / 1e3:7.2f}  p99 {r['p99_us'] / 1e3:7.2f}  "
                    f"errors {r['errors'] + r['non2xx']}",
                    flush=True,
                )
    except Exception as exc:
        if not peer:
            raise
        reason = f"{model}: {type(exc).__name__}: {str(exc)[:300]}"
        tail = log_tail(log)
        skipped[f"{name} ({model})"] = f"{reason}; log: {tail[-400:]}" if tail else reason
        print(f"{name}: left out for {reason}", flush=True)
        rows = []
    finally:
        stop(proc)
    return rows


def median_run(measured: list[dict]) -> dict:
    """One point from several runs: the median of each figure, errors summed, and every run's
    requests/s and p50 kept (``rps_runs``, ``p50_runs``) for the spread."""
    point = {
        key: float(np.median([m[key] for m in measured]))
        for key in ("rps", "p50_us", "p90_us", "p99_us")
    }
    point.update(
        requests=sum(m["requests"] for m in measured),
        duration_us=sum(m["duration_us"] for m in measured),
        errors=sum(m["errors"] for m in measured),
        non2xx=sum(m["non2xx"] for m in measured),
        rps_runs=[round(m["rps"]) for m in measured],
        p50_runs=[m["p50_us"] for m in measured],
    )
    return point


def spread(values: list[float], digits: int = 0) -> str:
    """``min-max`` of several runs with ``digits`` decimals ("1 run" for one)."""
    if len(values) < 2:
        return "1 run"
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def floor_ratio(rows: list[dict], row: dict) -> float:
    """A row's requests/s over the floor's at the same model, encoding and concurrency (NaN:
    none; the floor runs with digits, whose response its fixed one is)."""
    key = (row["model"], row["encoding"], row["concurrency"])
    floor = next(
        (
            r["rps"]
            for r in rows
            if r["server"] == FLOOR and (r["model"], r["encoding"], r["concurrency"]) == key
        ),
        float("nan"),
    )
    return row["rps"] / floor


def print_table(rows: list[dict], limits: dict[str, dict], skipped: dict[str, str]) -> None:
    print()
    print(
        "| model | server | encoding | conc | req/s (spread) | x floor | p50 ms (spread) | "
        "p90 ms | p99 ms | errors |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        encoding = r["encoding"] + (" (binary refused)" if "binary_refused" in r else "")
        ratio = floor_ratio(rows, r)
        p50_spread = spread([p / 1e3 for p in r.get("p50_runs", [r["p50_us"]])], 2)
        print(
            f"| {r['model']} | {r['server']} | {encoding} | {r['concurrency']} | "
            f"{r['rps']:.0f} ({spread(r.get('rps_runs', [r['rps']]))}) | "
            f"{'-' if np.isnan(ratio) else f'{ratio:.2f}'} | "
            f"{r['p50_us'] / 1e3:.2f} ({p50_spread}) | {r['p90_us'] / 1e3:.2f} | "
            f"{r['p99_us'] / 1e3:.2f} | {r['errors'] + r['non2xx']} |"
        )
    print()
    for model, limit in limits.items():
        print(
            f"in-process ONNX Runtime limit, {model}: {limit['rows_per_s']:.0f} rows/s "
            f"at batch {limit['batch']}"
        )
    refused = {r["server"]: r["binary_refused"] for r in rows if "binary_refused" in r}
    for server, why in refused.items():
        print(f"{server} refused binary v2 requests ({why}): driven with JSON")
    for peer, reason in skipped.items():
        print(f"not measured: {peer}: {reason}")

    def rps(model: str, server: str, encoding: str | None, conc: int) -> float:
        """Requests/s of one row; ``encoding`` None takes the server's only encoding."""
        return next(
            (
                r["rps"]
                for r in rows
                if (r["model"], r["server"], r["concurrency"]) == (model, server, conc)
                and encoding in (None, r["encoding"])
            ),
            float("nan"),
        )

    def p50(model: str, server: str, encoding: str) -> float:
        return next(
            (
                r["p50_us"]
                for r in rows
                if (r["model"], r["server"], r["encoding"], r["concurrency"])
                == (model, server, encoding, 1)
            ),
            float("nan"),
        )

    naive = "naive FastAPI+ORT"
    print()
    print("Goals against the floor (issue 14; servekit binary unless said):")
    tiny, floor_tiny = rps("digits", "servekit", "binary", 64), rps("digits", FLOOR, "binary", 64)
    print(f"  digits c=64: {tiny / floor_tiny:.0%} of the floor's requests/s (goal >= 70%)")
    extra = p50("digits", "servekit", "binary") - p50("digits", FLOOR, "binary")
    print(f"  digits c=1 p50: floor + {extra:.0f} us (goal <= floor + 60 us)")
    ceiling = rps("digits", CEILING, "binary", 64)
    ceiling_extra = p50("digits", CEILING, "binary") - p50("digits", FLOOR, "binary")
    print(
        f"  the ceiling of that design (floor + one batcher round trip): c=64 "
        f"{ceiling / floor_tiny:.0%} of the floor, c=1 p50 floor + {ceiling_extra:.0f} us; "
        f"servekit reaches {tiny / ceiling:.0%} of it at c=64"
    )
    heavy = rps("heavy", "servekit", "binary", 64)
    print(
        f"  heavy c=64: {heavy / limits['heavy']['rows_per_s']:.0%} of in-process limit "
        "(goal >= 80%)"
    )
    as_json = rps("digits", "servekit", "json", 64)
    print(f"  digits c=64: JSON {as_json / tiny:.0%} of binary requests/s (goal >= 85%)")
    print("Goals (servekit binary vs peers):")
    print(f"  heavy c=64: {heavy / rps('heavy', naive, 'json', 64):.2f}x naive (goal >= 3)")
    tiny = rps("digits", "servekit", "binary", 64)
    print(f"  digits c=64: {tiny / rps('digits', naive, 'json', 64):.2f}x naive (goal >= 2)")
    triton = rps("digits", PYTRITON, None, 64)
    if np.isnan(triton):
        print("  digits c=64: PyTriton not measured (goal: servekit >= 1.5x PyTriton)")
    else:
        print(f"  digits c=64: {tiny / triton:.2f}x PyTriton (goal >= 1.5)")
    for model in ("digits", "heavy"):
        ratio = p50(model, "servekit", "binary") / p50(model, naive, "json")
        print(f"  {model} c=1 p50: {ratio:.2f}x naive (goal <= 1.1)")
    for model in ("digits", "heavy"):
        if np.isnan(rps(model, "servekit", "grpc", 64)):
            print(f"  {model}: gRPC not measured (goals: c=64 >= HTTP binary, c=1 p50 <= it)")
            continue
        ratio = rps(model, "servekit", "grpc", 64) / rps(model, "servekit", "binary", 64)
        print(f"  {model} c=64: gRPC {ratio:.2f}x HTTP binary throughput (goal >= 1)")
        ratio = p50(model, "servekit", "grpc") / p50(model, "servekit", "binary")
        print(f"  {model} c=1 p50: gRPC {ratio:.2f}x HTTP binary (goal <= 1)")
    print("Peers without a goal (servekit binary at c=64 over the peer):")
    for model in ("digits", "heavy"):
        for peer in (PYTRITON, MLSERVER):
            other = rps(model, peer, None, 64)
            if not np.isnan(other) and (model, peer) != ("digits", PYTRITON):
                print(f"  {model} c=64: {rps(model, 'servekit', 'binary', 64) / other:.2f}x {peer}")


if __name__ == "__main__":
    main()
