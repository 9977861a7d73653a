"""Telemetry through a real ``servekit serve`` process and tritonclient: drift JSON and gauges
after reference-like then shifted traffic, latency quantiles in the statistics extension,
webhook alerts (a live receiver and a dead URL), and the drift route's errors."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from click.testing import CliRunner
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, load_wine
from sklearn.linear_model import LogisticRegression

from _serving import EXAMPLE_REPO, ServerProcess, _save, add_model, start_server
from servekit.cli import main
from servekit.errors import NotFoundError
from servekit.registry import Registry
from servekit.serving import DataPlane, ModelRepository, RunnerOptions
from servekit.serving.codecs import InferRequest
from servekit.serving.registry_source import RegistrySource
from servekit.serving.telemetry import ServingTelemetry, TelemetryOptions
from servekit.telemetry import build_reference_profile

WINE_X, WINE_Y = load_wine(return_X_y=True)
WINE_X32 = WINE_X.astype(np.float32)
WINE_FEATURES = [f"f{i}" for i in range(WINE_X.shape[1])]
SHIFTED = WINE_FEATURES[:8]  # 8 of 13 features move: the dataset drifts (>= half)
WINDOW = 300
DIGITS_X = (load_digits().data / 16.0).astype(np.float32)

WINE_CONFIG = """name: "wine"
platform: "onnxruntime_onnx"
max_batch_size: 32
input { name: "X" data_type: TYPE_FP32 dims: [13] }
output { name: "label" data_type: TYPE_INT64 dims: [1] reshape { shape: [] } }
output { name: "probabilities" data_type: TYPE_FP32 dims: [3] }
"""


class Receiver:
    """A webhook receiver on 127.0.0.1 collecting JSON POST bodies."""

    def __init__(self) -> None:
        self.bodies: queue.Queue[dict] = queue.Queue()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        seen = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                body = self.bodies.get(timeout=remaining)
            except queue.Empty:
                break
            seen.append(body)
            if predicate(body):
                return body
        raise AssertionError(f"no matching alert within {timeout}s; got {seen}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/alerts"


def build_repos(tmp: Path) -> tuple[Path, Path, Path]:
    """The main repository (digits with its own profile, batched; wine, direct path; plain
    without profile; fourwide whose given profile does not fit) and the dead-webhook one."""
    repo = tmp / "repo"
    shutil.copytree(EXAMPLE_REPO / "digits", repo / "digits")
    model = LogisticRegression(max_iter=5000).fit(WINE_X, WINE_Y)
    proto = to_onnx(model, WINE_X32[:1], options={"zipmap": False}, target_opset=17)
    _save(proto, repo / "wine" / "1" / "model.onnx")
    (repo / "wine" / "config.pbtxt").write_text(WINE_CONFIG)
    _save(add_model(0.5), repo / "plain" / "1" / "model.onnx")
    _save(add_model(1.5), repo / "fourwide" / "1" / "model.onnx")
    profile = tmp / "wine_profile.json"
    build_reference_profile(
        WINE_X32, model.predict(WINE_X32).astype(np.int64), feature_names=WINE_FEATURES
    ).save(profile)
    dead_repo = tmp / "dead_repo"
    _save(add_model(0.5), dead_repo / "plain" / "1" / "model.onnx")
    return repo, dead_repo, profile


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("telemetry_serving")
    repo, dead_repo, profile = build_repos(tmp)
    receiver = Receiver()
    main_args = [
        "--model-repo", str(repo),
        "--reference-profile", f"wine={profile}",
        "--reference-profile", f"fourwide={profile}",
        "--alert-webhook", receiver.url,
        "--drift-window-rows", str(WINDOW),
        "--telemetry-interval", "0.2",
        "--slo-p99-ms", "60000",
    ]  # fmt: skip
    dead_args = [
        "--model-repo", str(dead_repo),
        "--alert-webhook", closed_port_url(),
        "--slo-p99-ms", "0.000001",  # every request violates: an alert at once
        "--telemetry-interval", "0.1",
    ]  # fmt: skip
    with ThreadPoolExecutor(2) as pool:  # both start at once: half the waiting
        futures = [pool.submit(start_server, *args) for args in (main_args, dead_args)]
        servers = [f.result() for f in futures]
    server, dead = servers
    client = httpclient.InferenceServerClient(server.url, network_timeout=30)
    try:
        yield {"server": server, "dead": dead, "client": client, "receiver": receiver}
    finally:
        client.close()
        for s in servers:
            s.stop()
        receiver.close()


def infer(client: httpclient.InferenceServerClient, model: str, name: str, x: np.ndarray):
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer(model, [inp])


def get(server: ServerProcess, path: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(f"http://{server.url}{path}", timeout=30) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read().decode(), exc.code
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body


def gauge(metrics: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels``."""
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
            pairs = dict(p.split("=", 1) for p in label_text.split('",'))
            pairs = {k: v.strip('"') for k, v in pairs.items()}
            if all(pairs.get(k) == v for k, v in labels.items()):
                return float(value)
    raise AssertionError(f"no sample {name}{labels}")


def test_reference_then_shifted_traffic_shows_drift_in_json_gauges_and_webhook(env):
    client, server = env["client"], env["server"]
    rng = np.random.default_rng(7)
    reference = WINE_X32[rng.integers(0, len(WINE_X32), WINDOW)]
    for chunk in np.split(reference, WINDOW // 10):
        infer(client, "wine", "X", chunk)
    status, body = get(server, "/v2/models/wine/drift")
    assert status == 200, body
    assert body["model_name"] == "wine" and body["model_version"] == "1"
    assert body["window_rows"] == WINDOW and body["reference_rows"] == len(WINE_X)
    assert body["monitored_input"] == "X" and body["monitored_output"] == "label"
    assert body["drifted_features"] == [] and not body["drift_detected"]
    assert body["judged_features"] == 13

    std = WINE_X32.std(axis=0)
    shifted = WINE_X32[rng.integers(0, len(WINE_X32), WINDOW)].copy()
    shifted[:, : len(SHIFTED)] += std[: len(SHIFTED)]
    for chunk in np.split(shifted, WINDOW // 10):
        infer(client, "wine", "X", chunk)
    status, body = get(server, "/v2/models/wine/versions/1/drift")
    assert status == 200, body
    assert body["window_rows"] == WINDOW and body["total_rows"] == 2 * WINDOW
    assert body["drifted_features"] == SHIFTED
    assert body["dataset_drift"] and body["drift_detected"]
    by_name = {f["name"]: f for f in body["features"]}
    for name in SHIFTED:
        assert by_name[name]["statistics"]["psi"]["exceeded"], by_name[name]
    for name in WINE_FEATURES[len(SHIFTED) :]:
        assert not by_name[name]["drifted"], by_name[name]

    status, metrics = get(server, "/metrics")
    assert status == 200
    mv = {"model": "wine", "version": "1"}
    assert gauge(metrics, "servekit_drift_detected", **mv) == 1.0
    assert gauge(metrics, "servekit_drift_window_rows", **mv) == WINDOW
    psi = by_name["f0"]["statistics"]["psi"]
    assert gauge(metrics, "servekit_feature_drift", feature="f0", statistic="psi", **mv) > 0.2
    assert psi["value"] > psi["threshold"]
    assert gauge(metrics, "servekit_feature_drift", feature="f12", statistic="psi", **mv) < 0.2
    for stat in ("psi", "ks", "js"):
        gauge(metrics, "servekit_prediction_drift", statistic=stat, **mv)
    assert gauge(metrics, "servekit_slo_violation", **mv) == 0.0
    assert gauge(metrics, "nv_inference_request_success", **mv) == 2 * WINDOW // 10

    alert = env["receiver"].wait_for(lambda a: a["event"] == "drift" and a["model"] == "wine")
    assert alert["state"] == "drift" and alert["version"] == "1"
    assert alert["drifted_features"] and set(alert["drifted_features"]) <= set(SHIFTED)


def test_batched_model_records_every_request(env):
    server = env["server"]
    rng = np.random.default_rng(3)
    rows = DIGITS_X[rng.integers(0, len(DIGITS_X), 200)]
    # Concurrent requests (4 in flight) go through the dynamic batcher together.
    with httpclient.InferenceServerClient(server.url, concurrency=4) as batch_client:
        pending = []
        for chunk in np.split(rows, 50):
            inp = httpclient.InferInput("input", list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk, binary_data=True)
            pending.append(batch_client.async_infer("digits", [inp]))
        for request in pending:
            assert request.get_result(timeout=30).as_numpy("label").shape == (4, 1)
    status, body = get(server, "/v2/models/digits/drift")
    assert status == 200, body
    assert body["window_rows"] == 200 and body["judged_features"] == 64
    assert body["monitored_output"] == "label" and not body["dataset_drift"]
    assert body["reference_profile"].endswith("digits/1/reference_profile.json")
    assert body["prediction"]["window_size"] == 200


def test_statistics_extension_has_latency_quantiles(env):
    client = env["client"]
    infer(client, "plain", "x", np.ones((2, 4), np.float32))
    stats = client.get_inference_statistics("plain")["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert entry["inference_stats"]["success"]["count"] >= 1  # Triton's fields intact
    q = entry["latency_quantiles"]
    assert q["relative_accuracy"] == 0.01 and q["window_seconds"] == 60.0
    for kind in ("request", "queue", "compute"):
        assert q[kind]["count"] >= 1
        assert 0 <= q[kind]["p50_ns"] <= q[kind]["p90_ns"] <= q[kind]["p99_ns"]
    assert q["compute"]["p99_ns"] <= q["request"]["p99_ns"] * 1.02
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} >= {"digits", "wine", "plain", "fourwide"}
    assert all("latency_quantiles" in s for s in everything)
    status, metrics = get(env["server"], "/metrics")
    assert status == 200
    value = gauge(
        metrics,
        "servekit_latency_quantile_seconds",
        model="plain",
        version="1",
        kind="request",
        quantile="0.99",
    )
    assert value > 0


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v2/models/nope/drift", 404, "unknown model: 'nope'"),
        ("/v2/models/wine/versions/7/drift", 404, "'wine' version 7 is not found"),
        ("/v2/models/wine/versions/x1/drift", 400, "model version 'x1' is not an integer"),
        ("/v2/models/plain/drift", 404, "'plain' version 1 has no reference profile"),
        ("/v2/models/fourwide/versions/1/drift", 404, "profile has 13 features, but no"),
    ],
)
def test_bad_drift_requests_get_error_bodies(env, path, status, words):
    got, body = get(env["server"], path)
    assert got == status
    assert isinstance(body, dict) and words in body["error"], body
    infer(env["client"], "plain", "x", np.zeros((1, 4), np.float32))  # still serving


def test_dead_webhook_does_not_fail_requests_and_shutdown_is_clean(env):
    dead: ServerProcess = env["dead"]
    client = httpclient.InferenceServerClient(dead.url, network_timeout=30)
    log = ""
    try:
        x = np.ones((1, 4), np.float32)
        deadline = time.monotonic() + 20
        sent = 0
        # Requests flow while the violation alert is delivered (and retried) to a closed port.
        while "alert webhook" not in log and time.monotonic() < deadline:
            assert infer(client, "plain", "x", x).as_numpy("y")[0, 0] == 1.5
            sent += 1
            log += dead.stderr_text()
            time.sleep(0.01)
        assert "servekit alert" in log and '"state": "violation"' in log, log
        assert "alert webhook" in log and "failed" in log, log
        assert (
            client.get_inference_statistics("plain")["model_stats"][0]["inference_stats"][
                "success"
            ]["count"]
            == sent
        )
    finally:
        client.close()
    assert dead.stop(signal.SIGTERM) == 0
    assert "servekit: stopped" in log + dead.stderr_text()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--reference-profile", "missing.json"], "cannot read reference profile missing.json"),
        (["--reference-profile", "bad.json"], "bad.json: not valid JSON"),
        (["--reference-profile", "m=p.json", "--reference-profile", "m=p.json"], "given twice"),
        (["--drift-window-rows", "0"], "--drift-window-rows must be a positive number"),
        (["--slo-p99-ms", "-1"], "--slo-p99-ms must be a positive number"),
        (["--alert-webhook", "ftp://x"], "alert webhook must be an http(s) URL"),
        (["--no-telemetry", "--slo-p99-ms", "5"], "telemetry flags need telemetry"),
    ],
)
def test_bad_telemetry_flags_fail_startup_with_one_line(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    build_reference_profile(WINE_X[:20]).save(tmp_path / "p.json")
    result = CliRunner().invoke(main, ["serve", "--model-repo", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert words in result.output


def image_repo(root: Path) -> Path:
    """``images``: Identity on FP32 [n, 3, 4] (dynamic batching), three channels of four."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "images",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    _save(model, root / "images" / "1" / "model.onnx")
    return root


@pytest.mark.parametrize(
    ("features", "flatten", "columns"),
    [(12, True, lambda x: x.reshape(len(x), -1)), (3, False, lambda x: x.mean(axis=2))],
)
def test_nd_inputs_are_flattened_or_summarised_per_channel(tmp_path, features, flatten, columns):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(500, 3, 4)).astype(np.float32)
    build_reference_profile(columns(reference)).save(tmp_path / "p.json")
    telemetry = ServingTelemetry(TelemetryOptions(reference_profiles=(str(tmp_path / "p.json"),)))
    repository = ModelRepository(image_repo(tmp_path / "repo"), telemetry=telemetry)
    plane = DataPlane(repository)

    async def run() -> None:
        await plane.load_all()
        try:
            model = plane.model("images")
            assert model.telemetry is not None and model.telemetry.flatten is flatten
            live = reference[:200] + 3.0  # every feature moves
            for chunk in np.split(live, 50):  # max_batch_size 4 (completed from the graph)
                await model.infer(InferRequest({"x": chunk}, {"x": "FP32"}))
            body = plane.drift("images")
            assert body["window_rows"] == 200 and len(body["features"]) == features
            assert body["dataset_drift"] and len(body["drifted_features"]) == features
        finally:
            await plane.close()

    try:
        asyncio.run(run())
    finally:
        telemetry.close()


def test_profile_that_fits_no_input_leaves_latency_only(tmp_path):
    build_reference_profile(np.zeros((10, 5))).save(tmp_path / "p.json")
    telemetry = ServingTelemetry(
        TelemetryOptions(reference_profiles=(f"images={tmp_path / 'p.json'}",))
    )
    repository = ModelRepository(image_repo(tmp_path / "repo"), telemetry=telemetry)
    plane = DataPlane(repository)

    async def run() -> None:
        await plane.load_all()
        try:
            model = plane.model("images")
            x = np.ones((2, 3, 4), np.float32)
            await model.infer(InferRequest({"x": x}, {"x": "FP32"}))
            with pytest.raises(NotFoundError, match="5 features, but no numeric input has 5"):
                plane.drift("images")
            stats = plane.statistics("images")["model_stats"][0]
            assert stats["latency_quantiles"]["request"]["count"] == 1
            assert len(telemetry.hub.all()) == 1
            await plane.drop("images")  # unload, whatever the control mode
            assert telemetry.hub.all() == []  # unloading detaches the version's telemetry
        finally:
            await plane.close()

    try:
        asyncio.run(run())
    finally:
        telemetry.close()


def test_registry_directory_artifact_brings_its_profile_and_alias_moves_follow(tmp_path):
    registry = Registry(tmp_path / "reg")
    packaged = tmp_path / "packaged"  # what servekit package registers: a directory artifact
    packaged.mkdir()
    shutil.copy(EXAMPLE_REPO / "digits" / "1" / "model.onnx", packaged / "model.onnx")
    shutil.copy(EXAMPLE_REPO / "digits" / "1" / "reference_profile.json", packaged)
    registry.register("digits", packaged, format="onnx")
    registry.register("digits", EXAMPLE_REPO / "digits" / "1" / "model.onnx", format="onnx")
    registry.set_alias("digits:1", "production")
    telemetry = ServingTelemetry()
    plane = DataPlane(ModelRepository(None, telemetry=telemetry))
    source = RegistrySource(registry, ["digits@production"], RunnerOptions())

    async def run() -> None:
        await source.load_all(plane)
        try:
            body = plane.drift("digits")
            assert body["model_version"] == "1" and body["judged_features"] == 0
            assert body["reference_profile"].endswith("reference_profile.json")
            registry.set_alias("digits:2", "production")  # a single-file artifact: no profile
            await source._refresh(plane, "digits")
            assert [t.key for t in telemetry.hub.all()] == [("digits", "2")]
            with pytest.raises(NotFoundError, match="'digits' version 2 has no reference"):
                plane.drift("digits")
        finally:
            await plane.close()

    try:
        asyncio.run(run())
    finally:
        telemetry.close()
