"""Serving benchmark: servekit serve vs a naive FastAPI + ONNX Runtime endpoint vs in-process
ONNX Runtime at its best batch size, on the digits MLP (tiny compute) and a compute-heavy MLP.

Each server runs in its own process; ``wrk`` (Debian package ``wrk``) drives it from another
process with a closed loop of 1, 8 and 64 connections (one request in flight each), posting
one-row KServe v2 requests (binary and JSON for servekit, JSON for the naive endpoint, which only
speaks JSON). A tritonclient correctness check against in-process ONNX Runtime runs first.

    python benchmarks/bench_serving.py [--quick] [--duration S]

Prints a table and writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
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


def request_bodies(x: np.ndarray, tmp: Path, name: str) -> dict[str, tuple[Path, dict]]:
    """One-row v2 request bodies: binary (Triton extension) and JSON."""
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
    binary = tmp / f"{name}.bin"
    binary.write_bytes(head + x.tobytes())
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }
    as_json = tmp / f"{name}.json"
    as_json.write_text(json.dumps(body))
    return {
        "binary": (
            binary,
            {
                "Inference-Header-Content-Length": str(len(head)),
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


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status in (200, 404, 405):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


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


def correctness_check(port: int, model_file: Path, model: str, x: np.ndarray) -> None:
    import tritonclient.http as httpclient

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"input": x})[0]
    with httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30) as client:
        for binary in (True, False):
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = client.infer(model, [inp]).as_numpy("probabilities")
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point instead of 10 s")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per server")
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    if shutil.which("wrk") is None:
        sys.exit("bench_serving: needs wrk (Debian/Ubuntu: apt-get install wrk)")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
    )
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
            limits[model] = in_process_limit(model_file, duration)
            servers = {
                "servekit": [
                    sys.executable,
                    "-m",
                    "servekit",
                    "serve",
                    "--model-repo",
                    str(tmp / "repo"),
                    "--threads",
                    str(args.threads),
                ],
                "naive FastAPI+ORT": [sys.executable, str(naive_file), str(model_file)],
            }
            for server, command in servers.items():
                port = free_port()
                proc = subprocess.Popen(
                    [*command, "--port", str(port)]
                    if server == "servekit"
                    else [*command, str(port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    wait_ready(port, proc)
                    if server == "servekit":
                        correctness_check(port, model_file, model, x)
                    encodings = ("binary", "json") if server == "servekit" else ("json",)
                    for encoding in encodings:
                        body, headers = bodies[encoding]
                        for conns in CONCURRENCY:
                            r = wrk(port, model, body, headers, conns, duration, tmp)
                            rows.append(
                                {
                                    "model": model,
                                    "server": server,
                                    "encoding": encoding,
                                    "concurrency": conns,
                                    **r,
                                }
                            )
                            print(
                                f"{model:7} {server:18} {encoding:6} c={conns:<3} "
                                f"{r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1e3:7.2f} ms  "
                                f"p90 {r['p90_us'] / 1e3:7.2f}  p99 {r['p99_us'] / 1e3:7.2f}  "
                                f"errors {r['errors'] + r['non2xx']}",
                                flush=True,
                            )
                finally:
                    stop(proc)
    print_table(rows, limits)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"duration_s": duration, "rows": rows, "in_process_limit": limits}, indent=2)
    )
    print(f"wrote {RESULTS}")


def print_table(rows: list[dict], limits: dict[str, dict]) -> None:
    print()
    print("| model | server | encoding | conc | req/s | p50 ms | p90 ms | p99 ms | errors |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['server']} | {r['encoding']} | {r['concurrency']} | "
            f"{r['rps']:.0f} | {r['p50_us'] / 1e3:.2f} | {r['p90_us'] / 1e3:.2f} | "
            f"{r['p99_us'] / 1e3:.2f} | {r['errors'] + r['non2xx']} |"
        )
    print()
    for model, limit in limits.items():
        print(
            f"in-process ONNX Runtime limit, {model}: {limit['rows_per_s']:.0f} rows/s "
            f"at batch {limit['batch']}"
        )

    def rps(model: str, server: str, encoding: str, conc: int) -> float:
        return next(
            (
                r["rps"]
                for r in rows
                if (r["model"], r["server"], r["encoding"], r["concurrency"])
                == (model, server, encoding, conc)
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
    print("Goals (servekit binary vs peers):")
    heavy = rps("heavy", "servekit", "binary", 64)
    print(
        f"  heavy c=64: {heavy / rps('heavy', naive, 'json', 64):.2f}x naive (goal >= 3), "
        f"{heavy / limits['heavy']['rows_per_s']:.0%} of in-process limit (goal >= 70%)"
    )
    tiny = rps("digits", "servekit", "binary", 64)
    print(f"  digits c=64: {tiny / rps('digits', naive, 'json', 64):.2f}x naive (goal >= 2)")
    for model in ("digits", "heavy"):
        ratio = p50(model, "servekit", "binary") / p50(model, naive, "json")
        print(f"  {model} c=1 p50: {ratio:.2f}x naive (goal <= 1.1)")


if __name__ == "__main__":
    main()
