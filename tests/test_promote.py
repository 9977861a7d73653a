"""Promotion through gates: refused, passed and forced promotions and their audit entries."""

from __future__ import annotations

import pytest

from servekit.bench.promote import PromotionRefused, promote
from servekit.errors import InvalidArgumentError, NotFoundError
from servekit.registry import Registry


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "reg")
    for i, metrics in enumerate(
        [
            {"accuracy": 0.97, "latency_p99_ms_b1": 2.0},
            {"accuracy": 0.968, "latency_p99_ms_b1": 0.8},
            {"accuracy": 0.90, "latency_p99_ms_b1": 0.5},
        ]
    ):
        art = tmp_path / f"m{i}.onnx"
        art.write_bytes(b"model %d" % i)
        reg.register("digits", art, format="onnx", metrics=metrics)
    reg.set_alias("digits:1", "production", reason="first release")
    return reg


def test_passing_gates_promote_and_are_audited(registry):
    result = promote(
        registry,
        "digits:2",
        "production",
        [
            "accuracy >= production.accuracy - 0.005",
            "latency_p99_ms_b1 <= 0.5 * production.latency_p99_ms_b1",
        ],
        actor="ci@test",
    )
    assert result.passed and not result.forced
    assert registry.get("digits@production").version == 2
    event = registry.history("digits")[-1]
    assert (event.action, event.previous_version, event.new_version) == ("promote", 1, 2)
    assert event.actor == "ci@test" and "accuracy >= production.accuracy" in event.reason
    assert "pass" in result.table()


def test_failing_gate_refuses_and_changes_nothing(registry):
    before = registry.history("digits")
    with pytest.raises(PromotionRefused, match="1 of 2 gates failed") as info:
        promote(
            registry,
            "digits:3",
            "production",
            ["accuracy >= production.accuracy - 0.005", "latency_p99_ms_b1 <= 1"],
        )
    table = info.value.result.table()
    assert "FAIL" in table and "0.965" in table and "0.9" in table
    assert registry.get("digits@production").version == 1
    assert registry.history("digits") == before


def test_missing_metric_fails_its_gate_naming_the_benchmark(registry):
    with pytest.raises(PromotionRefused) as info:
        promote(registry, "digits:2", "production", ["latency_p99_ms_b64 <= 3"])
    message = info.value.result.gates[0].message
    assert "latency_p99_ms_b64" in message and "servekit bench" in message


def test_gate_against_an_alias_that_points_nowhere(registry):
    with pytest.raises(PromotionRefused) as info:
        promote(registry, "digits:2", "staging", ["accuracy >= staging.accuracy"])
    assert "'staging'" in info.value.result.gates[0].message


def test_forced_promotion_needs_a_reason_and_is_recorded(registry):
    with pytest.raises(InvalidArgumentError, match="--reason"):
        promote(registry, "digits:3", "production", ["accuracy >= 0.95"], force=True)
    assert registry.get("digits@production").version == 1
    result = promote(
        registry,
        "digits:3",
        "production",
        ["accuracy >= 0.95"],
        force=True,
        reason="hotfix: latency incident",
    )
    assert result.forced and not result.passed
    event = registry.history("digits")[-1]
    assert event.action == "force" and event.reason == "hotfix: latency incident"
    assert registry.get("digits@production").version == 3


def test_no_gates_is_refused_and_unknown_refs_raise(registry):
    with pytest.raises(InvalidArgumentError, match="no gates given"):
        promote(registry, "digits:2", "production")
    with pytest.raises(NotFoundError):
        promote(registry, "digits:9", "production", ["accuracy >= 0"])


def test_cli_promote(run_cli, registry, tmp_path):
    root = str(registry.root)
    refused = run_cli(
        "promote",
        "digits:3",
        "--to",
        "production",
        "--gate",
        "accuracy >= production.accuracy - 0.005",
        "--registry",
        root,
    )
    assert refused.returncode == 1
    assert "FAIL" in refused.stdout and "refused" in refused.stderr
    bad = run_cli(
        "promote", "digits:2", "--to", "production", "--gate", "accuracy >=> 1", "--registry", root
    )
    assert bad.returncode == 2 and "column 12" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1  # one line, the column named
    gates = tmp_path / "gates.txt"
    gates.write_text("# promotion gates\naccuracy >= production.accuracy - 0.005\n")
    ok = run_cli(
        "promote",
        "digits:2",
        "--to",
        "production",
        "--gates-file",
        str(gates),
        "--registry",
        root,
        check=True,
    )
    assert "promoted: digits:2 is now digits@production" in ok.stdout
    assert Registry(root).get("digits@production").version == 2
    missing = run_cli(
        "promote",
        "digits:2",
        "--to",
        "production",
        "--gates-file",
        str(tmp_path / "nope.txt"),
        "--registry",
        root,
    )
    assert missing.returncode == 2 and "nope.txt" in missing.stderr
