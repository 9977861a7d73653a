"""Promotion gates: parsing, evaluation against aliases, missing metrics, syntax errors."""

from __future__ import annotations

import pytest

from servekit.bench.gates import (
    GateSyntaxError,
    Operand,
    evaluate,
    load_gate_file,
    parse_gate,
)
from servekit.errors import InvalidArgumentError

CANDIDATE = {"accuracy": 0.96, "latency_p99_ms_b1": 1.5, "size_bytes": 400.0}
PRODUCTION = {"accuracy": 0.962, "size_bytes": 1000.0, "latency_p99_ms_b1": 2.0}


def check(text: str, metrics=None) -> bool:
    result = evaluate(parse_gate(text), metrics or {None: CANDIDATE, "production": PRODUCTION})
    return result.passed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("accuracy >= 0.95", True),
        ("accuracy >= 0.97", False),
        ("latency_p99_ms_b1 <= 2", True),
        ("latency_p99_ms_b1 < 1.5", False),
        ("accuracy >= production.accuracy - 0.005", True),
        ("accuracy >= production.accuracy", False),
        ("size_bytes <= 0.5 * production.size_bytes", True),
        ("size_bytes <= 0.3 * production.size_bytes", False),
        ("size_bytes <= 0.5 * size_bytes vs production", True),
        ("latency_p99_ms_b1 <= (latency_p99_ms_b1 - 0.4) vs production", True),
        ("-accuracy < -0.9", True),
        ("accuracy != 0.96", False),
        ("accuracy == 9.6e-1", True),
    ],
)
def test_gates_evaluate(text, expected):
    assert check(text) is expected


def test_gate_reports_values_and_aliases():
    gate = parse_gate("accuracy >= production.accuracy - 0.005")
    assert gate.aliases == {"production"}
    assert gate.operands == [Operand("accuracy"), Operand("accuracy", "production")]
    result = evaluate(gate, {None: CANDIDATE, "production": PRODUCTION})
    assert result.left == pytest.approx(0.96) and result.right == pytest.approx(0.957)


def test_missing_metric_fails_and_names_the_producer():
    result = evaluate(parse_gate("latency_p99_ms_b64 <= 3"), {None: CANDIDATE})
    assert not result.passed
    assert "latency_p99_ms_b64" in result.message and "servekit bench" in result.message
    result = evaluate(parse_gate("accuracy >= staging.accuracy"), {None: CANDIDATE})
    assert not result.passed and "'staging'" in result.message


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("accuracy >= ", 13),
        ("accuracy 0.9", 10),
        ("accuracy >= 0.9 extra", 17),
        ("accuracy >= (0.9", 17),
        ("accuracy >= 0.9 vs", 19),
        ("accuracy >= $x", 13),
    ],
)
def test_syntax_errors_point_at_the_column(text, column):
    with pytest.raises(GateSyntaxError, match=f"column {column}:") as info:
        parse_gate(text)
    assert isinstance(info.value, InvalidArgumentError)
    caret_line = str(info.value).splitlines()[-1]
    assert caret_line.index("^") - 2 == column - 1


def test_gate_file_skips_comments_and_numbers_bad_lines():
    gates = load_gate_file("# gates for digits\naccuracy >= 0.9\n\nsize_bytes < 1e6  # small\n")
    assert [g.text for g in gates] == ["accuracy >= 0.9", "size_bytes < 1e6"]
    with pytest.raises(GateSyntaxError, match="line 2"):
        load_gate_file("accuracy >= 0.9\naccuracy >>= 1\n")
    with pytest.raises(GateSyntaxError, match="empty"):
        parse_gate("  ")
