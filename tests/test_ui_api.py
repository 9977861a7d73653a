"""The dashboard's JSON API against real servers over a model repository (no registry), and
its bad inputs: clear errors, the process keeps serving."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

from _serving import EXAMPLE_REPO, start_server
from servekit.registry import Registry
from servekit.ui.registry_view import bench_figures, compare_view, lineage_graph, models_view


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = resp.read()
            kind = resp.headers.get("content-type", "")
            return resp.status, json.loads(body) if "json" in kind else body
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if "json" in exc.headers.get("content-type", "") else body


@pytest.fixture(scope="module")
def repo_server():
    proc = start_server("--model-repo", str(EXAMPLE_REPO), "--drift-window-rows", "200")
    yield proc
    assert proc.stop() == 0


def test_repository_server_lists_served_models_with_configs(repo_server):
    url = f"http://{repo_server.url}"
    status, info = get(f"{url}/v2/ui/info")
    assert status == 200 and info["registry"] is False and info["serving"]
    assert info["pages"] == ["models", "live", "drift"]
    status, body = get(f"{url}/v2/ui/models")
    assert status == 200 and body["registry"] is None and body["registry_root"] is None
    served = {m["name"]: m for m in body["served"]}
    assert set(served) == {"digits", "digits_int8"}
    digits = served["digits"]
    assert digits["versions"] == [{"version": "1", "state": "READY"}]
    status, config = get(f"{url}/v2/models/digits/config")
    assert digits["config"] == config


def test_live_counts_requests_and_errors_by_status(repo_server):
    url = f"http://{repo_server.url}"
    client = httpclient.InferenceServerClient(repo_server.url)
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    before = {(m["name"], m["version"]): m for m in get(f"{url}/v2/ui/live")[1]["models"]}
    for _ in range(5):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.infer("digits", [inp])
    bad = urllib.request.Request(
        f"{url}/v2/models/digits/infer", data=b'{"inputs": [{"name": "input"}]}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bad, timeout=30)
    assert info.value.code == 400
    status, body = get(f"{url}/v2/ui/live")
    assert status == 200
    now = {(m["name"], m["version"]): m for m in body["models"]}
    d = now[("digits", "1")]
    assert d["requests"] - before[("digits", "1")]["requests"] == 6
    assert d["rows"] - before[("digits", "1")]["rows"] == 20
    assert {"reason": "OTHER", "status": 400, "count": 1} in d["errors"]
    assert d["latency_ms"]["request"]["p50"] > 0
    assert d["series"] and set(d["series"][-1]) >= {"time", "request_rate", "p99_ms"}


def test_drift_without_a_profile_says_why(repo_server):
    status, body = get(f"http://{repo_server.url}/v2/ui/drift")
    assert status == 200 and body["telemetry"] is True
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["digits"]["report"] is not None  # the example repository ships a profile
    hist = by_name["digits"]["histograms"]["x10"]
    assert len(hist["reference"]) == len(hist["window"]) == len(hist["cuts"]) + 1
    assert abs(sum(hist["reference"]) - 1) < 1e-6


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(repo_server):
    url = f"http://{repo_server.url}"
    for route in ("compare", "compare/digits"):
        status, body = get(f"{url}/v2/ui/{route}")
        assert status == 404 and "no registry" in body["error"]
    status, page = get(f"{url}/ui/")
    assert status == 200 and b"servekit dashboard" in page
    status, _ = get(f"{url}/ui/static/nosuch.js")
    assert status == 404
    status, _ = get(f"{url}/ui/static/../../routes.py")
    assert status == 404
    assert get(f"{url}/v2/health/ready")[0] == 200


def test_openapi_documents_every_json_route(repo_server):
    status, doc = get(f"http://{repo_server.url}/v2/ui/openapi.json")
    assert status == 200
    assert set(doc["paths"]) == {
        "/v2/ui/info",
        "/v2/ui/models",
        "/v2/ui/compare",
        "/v2/ui/compare/{model}",
        "/v2/ui/live",
        "/v2/ui/drift",
    }
    assert "Pareto" in doc["paths"]["/v2/ui/compare/{model}"]["get"]["description"]


def test_registry_views_read_the_registry_api(tmp_path):
    reg = Registry(tmp_path / "reg")
    for i, metrics in enumerate(
        [
            {"accuracy": 0.9, "latency_p50_ms_b1": 2.0, "latency_p99_ms_b1": 3.0},
            {"accuracy": 0.95, "latency_p50_ms_b1": 1.0, "throughput_rows_s_b1": 900.0},
            {"accuracy": 0.85, "latency_p50_ms_b1": 1.5},
        ]
    ):
        art = tmp_path / f"m{i}.onnx"
        art.write_bytes(b"model %d" % i)
        parent = "digits:1" if i else None
        reg.register("digits", art, format="onnx", metrics=metrics, parent=parent)
    reg.set_alias("digits:1", "production", reason="first")
    from servekit.bench.promote import promote

    promote(reg, "digits:2", "production", ["accuracy >= production.accuracy"])
    (view,) = models_view(reg)
    assert [v["verification"]["verified"] for v in view["versions"]] == [True] * 3
    assert view["lineage"]["edges"] == [["digits:1", "digits:2"], ["digits:1", "digits:3"]]
    compare = compare_view(reg, "digits")
    (lineage,) = compare["lineages"]
    points = {p["ref"]: p["front"] for p in lineage["pareto"]["points"]}
    assert points == {"digits:1": False, "digits:2": True, "digits:3": False}
    (gate,) = compare["promotion"]["gates"]
    assert (gate["left"], gate["right"], gate["passed"]) == (0.95, 0.9, True)
    assert bench_figures({"latency_p99_ms_b8": 2.0, "throughput_rows_s_b8": 5.0})["batches"] == [
        {"batch_size": 8, "p99_ms": 2.0, "throughput_rows_s": 5.0}
    ]
    assert lineage_graph([]) == {"nodes": [], "edges": []}


def test_a_tampered_artifact_shows_as_not_verified(tmp_path):
    reg = Registry(tmp_path / "reg")
    art = tmp_path / "m.onnx"
    art.write_bytes(b"model")
    v = reg.register("digits", art, format="onnx")
    stored = reg.artifact_path(v.ref)
    stored.chmod(0o644)
    stored.write_bytes(b"tampered")
    (view,) = models_view(reg)
    verification = view["versions"][0]["verification"]
    assert verification["verified"] is False and "digits:1" in verification["problems"][0]


def test_compare_of_an_unknown_model_is_not_found(tmp_path):
    from servekit.errors import NotFoundError

    with pytest.raises(NotFoundError):
        compare_view(Registry(tmp_path / "reg"), "nosuch")


def test_servekit_ui_refuses_a_missing_registry(run_cli, tmp_path):
    proc = run_cli("ui", "--registry", str(tmp_path / "nowhere"), "--port", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"servekit: error: no registry at {tmp_path / 'nowhere'} (give --registry DIR)"
    ]
    assert not (tmp_path / "nowhere").exists()


def test_alert_log_keeps_the_recent_alerts_oldest_first():
    from servekit.telemetry.alerts import RECENT_ALERTS, AlertDispatcher

    alerts = AlertDispatcher()
    for i in range(RECENT_ALERTS + 5):
        alerts.emit({"event": "drift", "state": "drift" if i % 2 else "ok", "n": i})
    recent = alerts.recent()
    assert len(recent) == RECENT_ALERTS
    assert [a["n"] for a in recent[:2]] == [5, 6] and "time" in recent[0]


def test_prediction_histogram_against_its_reference():
    from servekit.telemetry import DriftMonitor, build_reference_profile

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3))
    labels = rng.integers(0, 3, 1000)
    monitor = DriftMonitor(build_reference_profile(x, predictions=labels), window_rows=500)
    assert monitor.prediction_histogram() is not None
    bins, reference, window = monitor.prediction_histogram()
    assert bins == {"labels": [0, 1, 2]} and window.sum() == 0
    monitor.record(x[:200], np.zeros(200, dtype=np.int64))
    _, reference, window = monitor.prediction_histogram()
    assert len(reference) == len(window) == 4  # and one bin of unseen labels
    assert window.tolist() == [1.0, 0.0, 0.0, 0.0]
    no_predictions = DriftMonitor(build_reference_profile(x))
    assert no_predictions.prediction_histogram() is None
