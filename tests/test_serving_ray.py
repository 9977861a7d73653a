"""servekit on Ray Serve: one local Ray cluster for the module (2 CPUs, no dashboard, shut down
at the end), serving a model repository and registry models with two replicas behind Ray's
proxy on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from sklearn.datasets import load_digits

from _serving import EXAMPLE_REPO, add_model, start_server, wait_for
from servekit.registry import Registry
from servekit.telemetry import DriftMonitor, ReferenceProfile

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
from ray import serve  # noqa: E402

from servekit.serving.ray import ReplicaSpec, ScaleOptions, build_app  # noqa: E402
from servekit.serving.ray.ingress import ingress_environment  # noqa: E402

pytestmark = pytest.mark.slow

DIGITS = EXAMPLE_REPO / "digits" / "1" / "model.onnx"
DIGITS_INT8 = EXAMPLE_REPO / "digits_int8" / "1" / "model.onnx"
X = load_digits().data.astype(np.float32)
APP = "servekit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    text = body.decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def repository(root: Path) -> Path:
    """digits (with its reference profile) and a copy, digits_drift, that only the drift test
    sends to."""
    for name in ("digits", "digits_drift"):
        shutil.copytree(EXAMPLE_REPO / "digits", root / name)
        config = root / name / "config.pbtxt"
        config.write_text(config.read_text().replace('name: "digits"', f'name: "{name}"'))
    return root


def registry(root: Path) -> Registry:
    """regdigits@production -> version 1 (version 2: the int8 model); adder@production, whose
    artifact is tampered with (every replica must refuse it)."""
    reg = Registry(root)
    reg.register("regdigits", DIGITS, format="onnx")
    reg.register("regdigits", DIGITS_INT8, format="onnx")
    reg.set_alias("regdigits:1", "production")
    adder = root.parent / "adder.onnx"
    onnx.save(add_model(1.0), str(adder))
    reg.register("adder", adder, format="onnx")
    reg.set_alias("adder:1", "production")
    path = reg.model_file("adder:1", verify=False)
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return reg


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    repo = repository(tmp / "repo")
    reg = registry(tmp / "reg")
    spec = ReplicaSpec(
        model_repo=str(repo),
        registry=str(reg.root),
        models=["regdigits@production", "adder@production"],
        poll_interval=0.3,
        replica_host="127.0.0.1",
    )
    port = free_port()
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a busy machine is slow
    saved = dict(os.environ)
    os.environ.update(ingress_environment("haproxy"))  # what `servekit serve --ray` uses
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(spec, ScaleOptions(replicas=2, replica_cpus=0.5)), name=APP)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: len(replicas(base)) == 2, 60, "both replicas in the directory")
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
        yield {"base": base, "client": client, "registry": reg, "repo": repo}
        client.close()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(saved)


def replicas(base: str) -> dict[str, str]:
    status, body = get(f"{base}/servekit/replicas")
    assert status == 200, body
    return body["replicas"]


def infer(client: httpclient.InferenceServerClient, model: str, x: np.ndarray):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer(model, [inp])


def test_infer_through_ray_equals_single_process(app):
    single = start_server("--model-repo", str(app["repo"]))
    try:
        local = httpclient.InferenceServerClient(single.url)
        rows = X[:16]
        want = infer(local, "digits", rows)
        got = infer(app["client"], "digits", rows)
        np.testing.assert_array_equal(got.as_numpy("label"), want.as_numpy("label"))
        np.testing.assert_array_equal(got.as_numpy("probabilities"), want.as_numpy("probabilities"))
        local.close()
    finally:
        assert single.stop() == 0


def test_two_replicas_both_receive_traffic_and_label_their_statistics(app):
    before = _successes(app["base"], "digits")
    for i in range(40):
        infer(app["client"], "digits", X[i : i + 1])
    after = _successes(app["base"], "digits")
    assert set(after) == set(replicas(app["base"]))
    gained = {r: after[r] - before.get(r, 0) for r in after}
    assert sum(gained.values()) == 40
    assert all(n > 0 for n in gained.values()), gained
    # The merged scrape: one family, one series per replica.
    status, text = get(f"{app['base']}/metrics")
    assert status == 200
    series = [
        line
        for line in text.splitlines()
        if line.startswith("nv_inference_request_success{") and 'model="digits"' in line
    ]
    assert sorted(line.split('"')[1] for line in series) == sorted(after)
    assert text.count("# TYPE nv_inference_request_success counter") == 1
    # Each replica's own listener answers for itself alone.
    for replica, url in replicas(app["base"]).items():
        status, own = get(f"{url}/v2/models/digits/stats")
        assert status == 200
        assert [e["replica"] for e in own["model_stats"]] == [replica]


def _successes(base: str, model: str) -> dict[str, int]:
    status, body = get(f"{base}/v2/models/{model}/stats")
    assert status == 200, body
    return {e["replica"]: e["inference_stats"]["success"]["count"] for e in body["model_stats"]}


def test_bad_request_gets_the_kserve_400_body_and_tampered_artifact_is_refused(app):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1, 2, 3]}]}).encode()  # fmt: skip
    request = urllib.request.Request(
        f"{app['base']}/v2/models/digits/infer", data=body, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    error = json.loads(caught.value.read())
    assert set(error) == {"error"} and "shape" in error["error"]
    status, missing = get(f"{app['base']}/v2/models/nosuch")
    assert status == 404 and "nosuch" in missing["error"]
    status, _ = get(f"{app['base']}/v2/models/adder/ready")
    assert status == 503  # the digest check failed on every replica
    for url in replicas(app["base"]).values():
        assert get(f"{url}/v2/models/adder/ready")[0] == 503
    assert infer(app["client"], "digits", X[:1]).as_numpy("label").shape == (1, 1)


def test_merged_drift_equals_one_monitor_over_the_same_rows(app):
    profile = ReferenceProfile.load(EXAMPLE_REPO / "digits" / "1" / "reference_profile.json")
    monitor = DriftMonitor(profile, window_rows=10_000)
    rng = np.random.default_rng(0)
    shifted = X[:300] + rng.normal(0, 2, X[:300].shape).astype(np.float32)
    for start in range(0, 300, 10):
        rows = shifted[start : start + 10]
        labels = infer(app["client"], "digits_drift", rows).as_numpy("label")
        monitor.record(rows, labels)
    status, body = get(f"{app['base']}/v2/models/digits_drift/drift")
    assert status == 200, body
    assert sorted(body["replicas"]) == sorted(replicas(app["base"]))
    want = monitor.report().to_dict()
    assert {k: body[k] for k in want} == want
    assert body["window_rows"] == 300
    # Each replica holds only its share.
    per_replica = [
        get(f"{url}/v2/models/digits_drift/drift")[1]["window_rows"]
        for url in replicas(app["base"]).values()
    ]
    assert sum(per_replica) == 300 and all(0 < n < 300 for n in per_replica)


def test_alias_move_reaches_every_replica_without_failed_requests(app):
    reg: Registry = app["registry"]
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = httpclient.InferenceServerClient(app["base"].removeprefix("http://"))
        while not stop.is_set():
            try:
                infer(client, "regdigits", X[:2])
            except Exception as exc:
                failures.append(repr(exc))
        client.close()

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        reg.set_alias("regdigits:2", "production", reason="int8 promoted")

        def moved() -> bool:
            urls = replicas(app["base"]).values()
            return all(get(f"{u}/v2/models/regdigits")[1].get("versions") == ["2"] for u in urls)

        wait_for(moved, 60, "every replica to serve regdigits version 2")
    finally:
        stop.set()
        thread.join(timeout=60)
        reg.set_alias("regdigits:1", "production", reason="test done")
    assert failures == []


def test_killed_replica_is_restarted_and_traffic_resumes(app):
    before = replicas(app["base"])
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#ServekitReplica#")
    ]
    assert len(names) == 2
    victim = names[0].rsplit("#", 1)[1]
    ray.kill(ray.get_actor(names[0], namespace="serve"))

    def recovered() -> bool:
        try:
            status, body = get(f"{app['base']}/servekit/replicas")
        except ConnectionError:  # HAProxy sent it to the dead replica before marking it down
            return False
        return status == 200 and len(body["replicas"]) == 2 and victim not in body["replicas"]

    wait_for(recovered, 120, "Ray to replace the killed replica")
    after = replicas(app["base"])
    assert set(after) - set(before)  # a new replica id
    for i in range(20):
        assert infer(app["client"], "digits", X[i : i + 1]).as_numpy("label").shape == (1, 1)
