"""Promotion gated on live figures: the gate language's ``live.`` namespace, and
``servekit promote --from-server`` against a real server shadowing the candidate."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from _candidates import X, build_registry, candidates, infer_body
from _serving import start_server, wait_for
from servekit.bench.gates import GateSyntaxError, Operand, evaluate, parse_gate


def test_live_operands_parse_for_the_candidate_and_for_an_alias():
    gate = parse_gate("live.latency_p99_ms <= production.live.latency_p99_ms * 1.1")
    assert gate.operands == [
        Operand("live.latency_p99_ms"),
        Operand("live.latency_p99_ms", "production"),
    ]
    assert gate.aliases == {"production"}
    vs = parse_gate("live.agreement >= live.agreement vs production")
    assert vs.operands[1] == Operand("live.agreement", "production")


@pytest.mark.parametrize("text", ["live.live.x >= 1", "a.b.c >= 1", "live >= live.x.y"])
def test_bad_live_names_point_at_the_column(text):
    with pytest.raises(GateSyntaxError, match="column"):
        parse_gate(text)


def test_a_live_gate_without_live_figures_says_where_they_come_from():
    result = evaluate(parse_gate("live.agreement >= 0.99"), {None: {"accuracy": 0.9}})
    assert not result.passed and "--from-server" in result.message


def promote_cli(registry_root, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", "promote", *args, "--registry", str(registry_root)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promotion_on_live_figures_is_refused_then_granted_and_both_are_audited(tmp_path):
    registry = build_registry(tmp_path)
    server = start_server(
        "--registry", str(registry.root), "--model", "digits@production",
        "--shadow", "digits@identical", "--poll-interval", "0.2",
    )  # fmt: skip
    url = f"http://{server.url}"
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(60):
                r = client.post("/v2/models/digits/infer", json=infer_body(X[i : i + 1]))
                assert r.status_code == 200 and r.json()["model_version"] == "1"
            wait_for(lambda: candidates(client)[0]["requests"] == 60, what="60 comparisons")
            (figures,) = candidates(client)
            assert figures["agreement"] == 1.0

            before = registry.history("digits")
            refused = promote_cli(
                registry.root, "digits:2", "--to", "production", "--from-server", url,
                "--gate", "live.agreement >= 0.99", "--gate", "live.requests >= 1000",
            )  # fmt: skip
            assert refused.returncode == 1, refused.stderr
            assert "FAIL" in refused.stdout and "1 of 2 gates failed" in refused.stderr
            assert registry.get("digits@production").version == 1
            event = registry.history("digits")[-1]
            assert len(registry.history("digits")) == len(before) + 1
            assert (event.action, event.previous_version, event.new_version) == ("refused", 1, 1)
            assert "live.requests >= 1000" in event.reason and "live.requests=60" in event.reason

            not_running = promote_cli(
                registry.root, "digits:3", "--to", "production", "--from-server", url,
                "--gate", "live.agreement >= 0.99",
            )  # fmt: skip
            assert not_running.returncode == 1
            assert "not a candidate there" in registry.history("digits")[-1].reason

            wrong_alias = promote_cli(
                registry.root, "digits:2", "--to", "production", "--from-server", url,
                "--gate", "live.latency_p99_ms <= weak.live.latency_p99_ms",
            )  # fmt: skip
            assert wrong_alias.returncode == 2 and "are not weak's" in wrong_alias.stderr

            granted = promote_cli(
                registry.root, "digits:2", "--to", "production", "--from-server", url,
                "--gate", "live.agreement >= 0.99", "--gate", "live.requests >= 50",
                "--gate", "live.errors == 0",
                "--gate", "live.latency_p99_ms <= production.live.latency_p99_ms * 1e9",
            )  # fmt: skip
            assert granted.returncode == 0, granted.stderr
            event = registry.history("digits")[-1]
            assert (event.action, event.previous_version, event.new_version) == ("promote", 1, 2)
            p99 = figures["latency_ms"]["candidate"]["p99"]
            prod_p99 = figures["latency_ms"]["production"]["p99"]
            for text in (
                "live.agreement=1",
                "live.requests=60",
                "live.errors=0",
                f"live.latency_p99_ms={p99:.6g}",
                f"production.live.latency_p99_ms={prod_p99:.6g}",
            ):
                assert text in event.reason, (text, event.reason)

            # The server follows the alias: version 2 answers without a restart, and the
            # shadow (now production's version) stops receiving copies.
            def switched() -> bool:
                r = client.post("/v2/models/digits/infer", json=infer_body(X[:1]))
                return r.status_code == 200 and r.json()["model_version"] == "2"

            wait_for(switched, what="the alias move")
            sampled = candidates(client)[0]["sampled"]
            for _ in range(5):
                assert (
                    client.post("/v2/models/digits/infer", json=infer_body(X[:1])).status_code
                    == 200
                )
            assert candidates(client)[0]["sampled"] == sampled
    finally:
        assert server.stop() == 0


def test_an_unreachable_server_is_one_error_line(tmp_path):
    registry = build_registry(tmp_path)
    proc = promote_cli(
        registry.root, "digits:2", "--to", "production",
        "--from-server", "http://127.0.0.1:9", "--gate", "live.requests >= 1",
    )  # fmt: skip
    assert proc.returncode == 2 and "cannot read live figures" in proc.stderr
    assert registry.get("digits@production").version == 1
