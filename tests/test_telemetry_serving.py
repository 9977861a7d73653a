"""The server-facing telemetry: ModelTelemetry, Prometheus gauges, alerts and webhooks."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.errors import ConflictError, InvalidArgumentError, NotFoundError
from servekit.telemetry import (
    AlertDispatcher,
    LatencyTracker,
    ModelTelemetry,
    TelemetryHub,
    build_reference_profile,
)

X, Y = load_iris(return_X_y=True)
MODEL = LogisticRegression(max_iter=500).fit(X, Y)
PROFILE = build_reference_profile(X, MODEL.predict(X), feature_names=list("abcd"))


class Receiver:
    """A real HTTP server on 127.0.0.1 collecting JSON POSTs; ``hold`` makes it hang until
    ``release``."""

    def __init__(self, hold: bool = False) -> None:
        self.bodies: list[dict] = []
        self.arrived = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.set()
                receiver.released.wait(30)
                receiver.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/alerts"


def shifted(n: int = 200) -> np.ndarray:
    x = X[np.random.default_rng(0).integers(0, len(X), n)].copy()
    x[:, :3] += 3 * X[:, :3].std(axis=0)
    return x


def test_observe_drift_and_latency_then_expose_gauges():
    hub = TelemetryHub()
    registry = CollectorRegistry()
    hub.register(registry)
    tel = ModelTelemetry("iris", "1", profile=PROFILE, drift_window_rows=150, slo_p99_ms=5.0)
    hub.add(tel)
    hub.add(ModelTelemetry("plain", "2"))  # no profile: latency only
    for i in range(0, 150, 10):
        batch = X[i : i + 10]
        tel.observe(batch, MODEL.predict(batch), request_s=0.002, queue_s=0.0005, compute_s=1e-4)
    text = generate_latest(registry).decode()
    assert 'servekit_drift_detected{model="iris",version="1"} 0.0' in text
    assert 'servekit_drift_window_rows{model="iris",version="1"} 150.0' in text
    assert 'servekit_feature_drift{feature="c",model="iris",statistic="psi",version="1"}' in text
    assert 'servekit_prediction_drift{model="iris",statistic="js",version="1"}' in text
    assert 'servekit_slo_violation{model="iris",version="1"} 0.0' in text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("servekit_latency_quantile_seconds")
        and 'kind="request"' in ln
        and 'quantile="0.99"' in ln
        and 'model="iris"' in ln
    )
    assert float(line.split()[-1]) == pytest.approx(0.002, rel=0.01)
    assert 'servekit_drift_detected{model="plain"' not in text

    for _ in range(10):
        x = shifted(15)
        tel.observe(x, MODEL.predict(x), request_s=0.050)
    text = generate_latest(registry).decode()
    assert 'servekit_drift_detected{model="iris",version="1"} 1.0' in text
    assert 'servekit_slo_violation{model="iris",version="1"} 1.0' in text
    body = tel.drift_json()
    assert body["model_name"] == "iris" and body["dataset_drift"] is True
    assert set(body["drifted_features"]) >= {"a", "c"}
    assert body["features"][0]["statistics"]["psi"]["threshold"] == 0.2


def test_observe_skips_mismatched_batches_without_raising(caplog):
    tel = ModelTelemetry("iris", "1", profile=PROFILE)
    with caplog.at_level(logging.WARNING, logger="servekit.telemetry"):
        tel.observe(np.zeros((2, 7)), request_s=0.001)
        tel.observe(np.zeros((2, 7)), request_s=-1.0)
    assert tel.record_errors == 2
    assert sum("skipped a batch" in r.message for r in caplog.records) == 1
    tel.observe(X[:5], MODEL.predict(X[:5]), request_s=0.001)
    assert tel.evaluate().drift.window_rows == 5


def test_state_changes_alert_once_with_log_line_and_webhook(receiver, caplog):
    alerts = AlertDispatcher(receiver.url, timeout_s=5.0, retries=1, backoff_s=0.01)
    tel = ModelTelemetry("iris", "1", profile=PROFILE, drift_window_rows=150, alerts=alerts)
    with caplog.at_level(logging.WARNING, logger="servekit.alerts"):
        tel.observe(X, MODEL.predict(X))
        tel.evaluate()  # no drift: no alert (initial state is ok)
        x = shifted(150)
        tel.observe(x, MODEL.predict(x))
        tel.evaluate()
        tel.evaluate()  # unchanged: no second alert
        tel.observe(X, MODEL.predict(X))
        tel.evaluate()  # back to ok
    assert alerts.flush(30)
    alerts.close()
    assert [b["state"] for b in receiver.bodies] == ["drift", "ok"]
    first = receiver.bodies[0]
    assert first["event"] == "drift" and first["model"] == "iris" and first["version"] == "1"
    assert first["dataset_drift"] is True and "a" in first["drifted_features"]
    lines = [r.getMessage() for r in caplog.records if r.name == "servekit.alerts"]
    assert len(lines) == 2 and json.loads(lines[0].split(" ", 2)[2])["state"] == "drift"
    assert alerts.delivered == 2 and alerts.failed == 0


def test_slo_alerts_on_violation_and_recovery(receiver):
    alerts = AlertDispatcher(receiver.url, retries=0)
    tel = ModelTelemetry("iris", "1", slo_p99_ms=10.0, latency_window_seconds=60, alerts=alerts)
    for _ in range(100):
        tel.observe(request_s=0.002)
    assert tel.evaluate().slo_violated is False
    for _ in range(10):
        tel.observe(request_s=0.5)
    assert tel.evaluate().slo_violated is True
    assert alerts.flush(30)
    alerts.close()
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "slo" and body["state"] == "violation"
    assert body["objective_p99_ms"] == 10.0 and body["p99_ms"] == pytest.approx(500, rel=0.01)


def test_dead_webhook_is_retried_off_the_request_path():
    alerts = AlertDispatcher(closed_port_url(), timeout_s=1.0, retries=2, backoff_s=0.01)
    tel = ModelTelemetry("iris", "1", profile=PROFILE, drift_window_rows=150, alerts=alerts)
    for i in range(6):
        x = shifted(150) if i % 2 == 0 else X
        tel.observe(x, MODEL.predict(x), request_s=0.001)
        tel.evaluate()
    assert alerts.flush(60)
    alerts.close()
    assert alerts.failed == 6 and alerts.delivered == 0
    assert alerts.attempts == 6 * 3
    # Recording carried on normally throughout.
    assert tel.evaluate().drift.total_rows == 900 and tel.record_errors == 0


def test_hanging_webhook_never_blocks_the_caller():
    receiver = Receiver(hold=True)
    try:
        alerts = AlertDispatcher(receiver.url, timeout_s=30.0, retries=0, queue_size=5)
        alerts.emit({"event": "test", "n": 0})
        assert receiver.arrived.wait(30)  # the worker is now stuck inside the first POST
        for n in range(1, 21):
            alerts.emit({"event": "test", "n": n})  # returns although nothing is delivered
        assert alerts.delivered == 0
        assert alerts.dropped == 15  # 5 queued behind the stuck POST, the rest dropped
        receiver.released.set()
        assert alerts.flush(30)
        assert alerts.delivered == 6
        assert [b["n"] for b in receiver.bodies] == [0, 1, 2, 3, 4, 5]
        alerts.close()
    finally:
        receiver.close()


def test_bad_settings_are_refused():
    with pytest.raises(InvalidArgumentError, match="'ftp://x'"):
        AlertDispatcher("ftp://x")
    with pytest.raises(InvalidArgumentError, match="timeout_s > 0"):
        AlertDispatcher("http://127.0.0.1:1/", timeout_s=0)
    with pytest.raises(InvalidArgumentError, match="slo_p99_ms must be > 0"):
        LatencyTracker(slo_p99_ms=-1)
    with pytest.raises(InvalidArgumentError, match="relative accuracy"):
        LatencyTracker(alpha=2.0)
    hub = TelemetryHub()
    hub.add(ModelTelemetry("m", "1"))
    with pytest.raises(ConflictError, match="m/1 already exists"):
        hub.add(ModelTelemetry("m", "1"))
    with pytest.raises(NotFoundError, match="m/2"):
        hub.get("m", "2")
    assert hub.remove("m", "1").key == ("m", "1") and hub.all() == []
    with pytest.raises(InvalidArgumentError, match="interval_s"):
        hub.start(0)


def test_hub_timer_evaluates_and_alerts_without_a_scrape(receiver):
    alerts = AlertDispatcher(receiver.url, retries=0)
    hub = TelemetryHub()
    tel = ModelTelemetry("iris", "1", profile=PROFILE, drift_window_rows=100, alerts=alerts)
    hub.add(tel)
    x = shifted(100)
    tel.observe(x, MODEL.predict(x))
    hub.start(interval_s=0.05)
    try:
        assert receiver.arrived.wait(30)
    finally:
        hub.stop()
    assert alerts.flush(30)
    alerts.close()
    assert receiver.bodies[0]["event"] == "drift"


def test_cli_drift_report_writes_json_and_png(run_cli, tmp_path):
    PROFILE.save(tmp_path / "profile.json")
    np.save(tmp_path / "current.npy", shifted(150))
    np.save(tmp_path / "pred.npy", MODEL.predict(shifted(150)))
    proc = run_cli(
        "drift", "report", "--profile", "profile.json", "--data", "current.npy",
        "--predictions", "pred.npy", "--out", "out", check=True,
    )  # fmt: skip
    assert "dataset drift: yes" in proc.stdout and "drift  a  psi=" in proc.stdout
    body = json.loads((tmp_path / "out" / "drift_report.json").read_text())
    assert body["dataset_drift"] is True and body["window"] == {"kind": "cumulative"}
    assert body["plot"] == "drift_report.png" and "a" in body["plotted"]
    assert body["prediction"]["window_size"] == 150
    png = (tmp_path / "out" / "drift_report.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_cli_drift_report_bad_inputs(run_cli, tmp_path):
    PROFILE.save(tmp_path / "profile.json")
    np.save(tmp_path / "wrong.npy", np.zeros((5, 3)))
    (tmp_path / "junk.npy").write_text("not numpy")
    proc = run_cli("drift", "report", "--profile", "profile.json", "--data", "wrong.npy")
    assert proc.returncode == 2 and "shape (5, 3)" in proc.stderr and "4 features" in proc.stderr
    proc = run_cli("drift", "report", "--profile", "profile.json", "--data", "junk.npy")
    assert proc.returncode == 2 and "junk.npy: not a numpy .npy input array" in proc.stderr
    proc = run_cli("drift", "report", "--profile", "missing.json", "--data", "wrong.npy")
    assert proc.returncode == 2 and "missing.json: no such file" in proc.stderr
