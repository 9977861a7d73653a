"""Shadow and canary candidates on a real ``servekit serve``: figures against an offline
computation, production answers untouched by failing, slow or hanging shadows, the bounded
shadow queue, canary shares and stickiness, and the management API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from _candidates import KINDS, X, build_registry, candidates, infer_body
from _serving import EXAMPLE_REPO, ServerProcess, start_server, wait_for
from servekit.registry import Registry
from servekit.serving.candidates import CANARY, SHADOW, STICKY_HEADER, unit_interval
from servekit.serving.comparison import REL_FLOOR


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return build_registry(tmp_path_factory.mktemp("candidates"))


def serve(registry: Registry, *args: str) -> ServerProcess:
    return start_server(
        "--registry", str(registry.root), "--model", "digits@production", *args
    )  # fmt: skip


def client_of(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://{server.url}", timeout=30)


def _requests() -> list[tuple[str, bytes]]:
    """The same mixed requests for every server: rows of 1-3, binary outputs, bad ones."""
    out = []
    for i in range(24):
        rows = X[i * 3 : i * 3 + i % 3 + 1]
        out.append(("/v2/models/digits/infer", json.dumps(infer_body(rows, f"q{i}")).encode()))
    binary = infer_body(X[:2], "bin", binary_data_output=True)
    out.append(("/v2/models/digits/infer", json.dumps(binary).encode()))
    wrong_shape = infer_body(X[:1, :10], "bad-shape")
    out.append(("/v2/models/digits/infer", json.dumps(wrong_shape).encode()))
    out.append(("/v2/models/digits/infer", b'{"inputs": [}'))
    out.append(("/v2/models/digits/versions/1/infer", json.dumps(infer_body(X[5:6])).encode()))
    return out


REQUESTS = _requests()


def answers(server: ServerProcess) -> list[tuple[int, bytes]]:
    with client_of(server) as client:
        return [
            (r.status_code, r.content) for r in (client.post(p, content=b) for p, b in REQUESTS)
        ]


@pytest.fixture(scope="module")
def baseline(registry: Registry) -> list[tuple[int, bytes]]:
    server = serve(registry)
    try:
        return answers(server)
    finally:
        assert server.stop() == 0


def settled(client: httpx.Client, expected: int) -> dict:
    """The only candidate's read-out once every sampled request finished or was dropped."""

    def done() -> dict | None:
        (c,) = candidates(client)
        finished = c["requests"] + c["errors"] + c["dropped"]
        return c if c["sampled"] == expected and finished == expected else None

    return wait_for(done, what=f"{expected} shadow requests")


def test_shadow_figures_equal_an_offline_computation_over_the_sampled_requests(registry):
    server = serve(registry, "--shadow", "digits@weak=0.5")
    ids = [f"r{i}" for i in range(90)]
    batches = {rid: X[i * 2 : i * 2 + i % 3 + 1] for i, rid in enumerate(ids)}
    try:
        with client_of(server) as client:
            for rid in ids:
                r = client.post("/v2/models/digits/infer", json=infer_body(batches[rid], rid))
                assert r.status_code == 200 and r.json()["model_version"] == "1"
            sampled = [rid for rid in ids if unit_interval(rid, SHADOW) < 0.5]
            assert 20 < len(sampled) < 70
            figures = settled(client, len(sampled))
            stats = client.get("/v2/models/digits/stats").json()["model_stats"]
    finally:
        assert server.stop() == 0
    assert [s["version"] for s in stats] == ["1"]  # the statistics extension: production only
    assert stats[0]["inference_stats"]["success"]["count"] == len(ids)
    assert stats[0]["inference_count"] == sum(len(b) for b in batches.values())

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    prod = ort.InferenceSession(str(registry.model_file("digits@production")), options)
    cand = ort.InferenceSession(str(registry.model_file("digits@weak")), options)
    rows = np.concatenate([batches[rid] for rid in sampled])
    p_label, p_prob = prod.run(["label", "probabilities"], {"input": rows})
    c_label, c_prob = cand.run(["label", "probabilities"], {"input": rows})
    label_agree = c_label == p_label
    top1_agree = c_prob.argmax(axis=1) == p_prob.argmax(axis=1)
    diff = np.abs(c_prob.astype(np.float64) - p_prob.astype(np.float64))
    abs_err = diff.max(axis=1)
    rel_err = (diff / np.maximum(np.abs(p_prob.astype(np.float64)), REL_FLOOR)).max(axis=1)

    assert figures["version"] == "3" and figures["production_version"] == "1"
    assert figures["requests"] == len(sampled) and figures["rows"] == len(rows)
    assert figures["errors"] == 0 and figures["dropped"] == 0
    assert figures["agreement"] == pytest.approx(np.mean(label_agree & top1_agree), abs=1e-12)
    assert 0.3 < figures["agreement"] < 1.0
    label, prob = figures["outputs"]["label"], figures["outputs"]["probabilities"]
    assert (label["kind"], prob["kind"]) == ("label", "scores")
    assert label["agreement"] == pytest.approx(label_agree.mean(), abs=1e-12)
    assert prob["agreement"] == pytest.approx(top1_agree.mean(), abs=1e-12)
    for key, offline in (("abs_error", abs_err), ("rel_error", rel_err)):
        expected = dict(
            zip(["p50", "p90", "p99"], np.quantile(offline, [0.5, 0.9, 0.99]), strict=True)
        )
        expected["max"] = offline.max()
        for name, value in expected.items():
            assert prob[key][name] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, name)
    latency = figures["latency_ms"]
    assert latency["candidate"]["p50"] > 0 and latency["production"]["p50"] > 0


@pytest.mark.parametrize("kind", ["identical", *KINDS])
def test_production_answers_and_statuses_do_not_change_with_a_shadow(registry, baseline, kind):
    server = serve(registry, "--shadow", f"digits@{kind}")
    try:
        got = answers(server)
        with client_of(server) as client:
            (c,) = candidates(client)
    finally:
        assert server.stop() == 0
    assert [s for s, _ in baseline].count(400) == 2
    assert got == baseline  # byte for byte, statuses included
    good = sum(1 for s, _ in baseline if s == 200)
    assert c["sampled"] == good
    if kind == "failing":
        assert c["requests"] == 0 and c["errors"] == c["sampled"] - c["outstanding"]
        assert set(c["errors_by_kind"]) == {"InferenceError"}
    if kind == "identical":
        assert c["errors"] == 0


def shadowed(registry: Registry, kind: str, batches: list[np.ndarray]) -> tuple[dict, str]:
    """Serve production with ``digits@kind`` as its shadow, send each of ``batches`` (all
    answered by production: 200, version 1); return the shadow's read-out once every copy
    finished, and the metrics text."""
    server = serve(registry, "--shadow", f"digits@{kind}")
    try:
        with client_of(server) as client:
            for rows in batches:
                r = client.post("/v2/models/digits/infer", json=infer_body(rows))
                assert r.status_code == 200 and r.json()["model_version"] == "1"
            return settled(client, len(batches)), client.get("/metrics").text
    finally:
        assert server.stop() == 0


def test_a_failing_shadow_counts_every_error(registry):
    c, text = shadowed(registry, "failing", [X[i : i + 1] for i in range(10)])
    assert (c["errors"], c["requests"], c["error_rate"]) == (10, 0, 1.0)
    assert 'servekit_candidate_errors{model="digits",version="4",role="shadow"} 10' in text


def test_a_slow_shadow_is_compared_after_production_answered(registry):
    c, _ = shadowed(registry, "slow", [X[i : i + 1] for i in range(12)])
    assert (c["requests"], c["errors"], c["agreement"]) == (12, 0, 1.0)
    assert c["outputs"]["probabilities"]["abs_error"]["max"] == 0.0


def test_copies_run_together_but_each_one_fails_or_compares_on_its_own(registry):
    # The picky candidate fails on a request with a row starting with 99: gathered with good
    # copies into one run, it fails the run, and each copy is then run alone.
    bad = X[:1].copy()
    bad[0, 0] = 99.0
    c, _ = shadowed(registry, "picky", [b for i in range(10) for b in (X[i * 2 : i * 2 + 2], bad)])
    assert (c["requests"], c["rows"], c["errors"]) == (10, 20, 10)
    assert c["errors_by_kind"] == {"InferenceError": 10}
    assert c["agreement"] == 1.0


def test_a_shadow_without_batching_compares_every_copy_on_its_own(registry):
    c, _ = shadowed(registry, "unbatched", [X[i : i + 1] for i in range(12)])
    assert (c["version"], c["requests"], c["rows"], c["errors"]) == ("8", 12, 12, 0), c
    assert c["agreement"] == 1.0
    assert c["outputs"]["probabilities"]["abs_error"]["max"] == 0.0


SCHED_IDLE = 5  # the policy number in /proc/PID/task/TID/stat (field 41)


def idle_threads(pid: int) -> list[str]:
    """The names of ``pid``'s threads in the SCHED_IDLE class."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        if int(stat.rsplit(")", 1)[1].split()[38]) == SCHED_IDLE:
            names.append(stat.split("(", 1)[1].rsplit(")", 1)[0])
    return names


def test_only_the_shadows_execution_threads_run_on_idle_cpu_time(registry):
    for args, expected in ((["--shadow", "digits@weak"], 2), (["--canary", "digits@weak=0.5"], 0)):
        server = serve(registry, *args)
        try:
            with client_of(server) as client:
                for i in range(20):
                    r = client.post(
                        "/v2/models/digits/infer", json=infer_body(X[i : i + 1], f"t{i}")
                    )
                    assert r.status_code == 200
                if expected:
                    settled(client, 20)
                idle = idle_threads(server.proc.pid)
        finally:
            assert server.stop() == 0
        # The shadow's worker and its one instance; production's instance and the event loop
        # keep theirs.
        assert len(idle) == expected, (args, idle)


def test_the_bounded_shadow_queue_drops_and_counts_under_overload(registry):
    server = serve(registry, "--shadow", "digits@hanging", "--shadow-queue-size", "2")
    try:
        with client_of(server) as client:
            for i in range(20):
                r = client.post("/v2/models/digits/infer", json=infer_body(X[i : i + 1]))
                assert r.status_code == 200 and r.json()["model_version"] == "1"
            (c,) = candidates(client)
            text = client.get("/metrics").text
    finally:
        assert server.stop() == 0
    assert c["sampled"] == 20 and c["queue_size"] == 2
    assert c["outstanding"] <= 2
    assert c["dropped"] == 20 - c["outstanding"] - c["requests"] - c["errors"]
    assert c["dropped"] >= 16
    dropped = (
        f'servekit_candidate_dropped{{model="digits",version="6",role="shadow"}} {c["dropped"]}'
    )
    assert dropped in text


def test_canary_share_over_2000_requests_and_sticky_keys(registry):
    server = serve(registry, "--canary", "digits@identical=0.3")
    try:
        with client_of(server) as client:
            versions = Counter()
            body = json.dumps(infer_body(X[:1])).encode()
            for _ in range(2000):
                versions[
                    client.post("/v2/models/digits/infer", content=body).json()["model_version"]
                ] += 1
            # 2000 draws at 0.3: 600 expected, sd 20.5; 5 sd either side.
            assert set(versions) == {"1", "2"} and abs(versions["2"] - 600) <= 103, versions
            seen: dict[str, set[str]] = {}
            for i in range(60):
                key = f"user-{i}"
                for by_header in (False, True, False):
                    if by_header:
                        r = client.post(
                            "/v2/models/digits/infer",
                            content=body,
                            headers={STICKY_HEADER: key},
                        )
                    else:
                        r = client.post(
                            "/v2/models/digits/infer", json=infer_body(X[:1], canary_key=key)
                        )
                    seen.setdefault(key, set()).add(r.json()["model_version"])
            named = {
                client.post("/v2/models/digits/versions/1/infer", content=body).json()[
                    "model_version"
                ]
                for _ in range(20)
            }
            (c,) = candidates(client)
            stats = client.get("/v2/models/digits/stats").json()["model_stats"]
    finally:
        assert server.stop() == 0
    assert all(len(v) == 1 for v in seen.values()), seen
    for key, (version,) in seen.items():
        assert (version == "2") == (unit_interval(key, CANARY) < 0.3), key
    assert named == {"1"}
    served_by_canary = versions["2"] + 3 * sum(1 for (v,) in seen.values() if v == "2")
    assert c["role"] == "canary" and c["requests"] == served_by_canary
    assert [s["version"] for s in stats] == ["1"]
    assert stats[0]["inference_stats"]["success"]["count"] == 2000 + 180 + 20 - served_by_canary


def test_management_api_adds_replaces_and_removes_candidates(registry):
    server = serve(registry)
    url = "/v2/repository/models/digits/candidates"
    try:
        with client_of(server) as client:
            assert candidates(client) == []
            r = client.post(url, json={"ref": "digits@weak", "role": "shadow", "fraction": 1.0})
            assert r.status_code == 200, r.text
            assert (r.json()["version"], r.json()["role"]) == ("3", "shadow")
            for i in range(5):
                assert (
                    client.post(
                        "/v2/models/digits/infer", json=infer_body(X[i : i + 1])
                    ).status_code
                    == 200
                )
            assert settled(client, 5)["requests"] == 5
            bad = [
                ({"ref": "digits@weak", "role": "mirror"}, 400),
                ({"role": "shadow"}, 400),
                ({"ref": "digits@weak", "role": "shadow", "fraction": 2}, 400),
                ({"ref": "digits@weak", "role": "canary"}, 400),
                ({"ref": "other@weak", "role": "shadow"}, 400),
                ({"ref": "digits@production", "role": "shadow"}, 400),
                ({"ref": "digits@nosuch", "role": "shadow"}, 404),
                ({"ref": "digits@weak", "role": "shadow", "extra": 1}, 400),
                ({"ref": "digits@slow", "role": "canary", "fraction": 0.7}, 200),
                ({"ref": "digits@hanging", "role": "canary", "fraction": 0.5}, 400),
            ]
            for body, status in bad:
                r = client.post(url, json=body)
                assert r.status_code == status, (body, r.text)
                if status != 200:
                    assert "error" in r.json()
            assert client.post(url, content=b"[1, 2]").status_code == 400
            assert (
                client.post(
                    "/v2/repository/models/nosuch/candidates",
                    json={"ref": "nosuch@a", "role": "shadow"},
                ).status_code
                == 404
            )
            # Nothing already running was lost: the shadow kept its figures.
            roles = {c["ref"]: (c["role"], c["requests"]) for c in candidates(client)}
            assert roles == {"digits@weak": ("shadow", 5), "digits@slow": ("canary", 0)}
            r = client.post(url, json={"ref": "digits@weak", "role": "shadow", "fraction": 0.5})
            assert r.status_code == 200 and r.json()["requests"] == 0  # replaced: fresh figures
            remove = url + "/remove"
            assert client.post(remove, json={"ref": "digits@weak"}).status_code == 200
            assert client.post(remove, json={"ref": "digits@weak"}).status_code == 404
            assert client.post(remove, json={"ref": "digits@slow", "role": "x"}).status_code == 400
            assert (
                client.post(remove, json={"ref": "digits@slow", "role": "canary"}).status_code
                == 200
            )
            assert candidates(client) == []
            assert client.get("/v2/models/nosuch/candidates").status_code == 404
            r = client.post("/v2/models/digits/infer", json=infer_body(X[:1]))
            assert r.status_code == 200 and r.json()["model_version"] == "1"
    finally:
        assert server.stop() == 0


def _serve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shadow", "digits"], "expected NAME@ALIAS"),
        (["--canary", "digits@weak"], "a canary needs =FRACTION"),
        (["--canary", "digits@weak=1.5"], "fraction must be in (0, 1]"),
        (["--shadow", "digits@weak=abc"], "is not a number"),
        (["--shadow", "digits@production"], "which production serves already"),
        (["--shadow", "digits@weak", "--canary", "digits:3=0.1"], "one role per version"),
        (["--shadow", "digits@weak", "--shadow-queue-size", "0"], "--shadow-queue-size"),
    ],
)
def test_bad_candidate_flags_fail_with_one_line(registry, args, message):
    proc = _serve_cli("--registry", str(registry.root), "--model", "digits@production", *args)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("servekit: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def test_candidates_need_a_registry_model():
    proc = _serve_cli("--model-repo", str(EXAMPLE_REPO), "--shadow", "digits@candidate")
    assert proc.returncode == 2 and "--model NAME@ALIAS" in proc.stderr
