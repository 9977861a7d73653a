"""Promotion gates: small comparisons over a version's metrics, parsed and evaluated safely.

Grammar (no Python ``eval``)::

    gate    := expr OP expr [ "vs" ALIAS ]          OP: >=  <=  >  <  ==  !=
    expr    := term (("+" | "-") term)*
    term    := factor (("*" | "/") factor)*
    factor  := NUMBER | METRIC | ALIAS "." METRIC | "(" expr ")" | "-" factor

A bare ``METRIC`` is the candidate version's metric; ``ALIAS.METRIC`` is the metric of the
version that alias points to (``accuracy >= production.accuracy - 0.005``). With a trailing
``vs ALIAS``, bare metrics on the right-hand side refer to that alias
(``size_bytes <= 0.5 * size_bytes vs production``).

Live figures: ``live.METRIC`` is a figure a running server measured for the candidate (as a
shadow or canary) and ``ALIAS.live.METRIC`` the same figure of production there
(``live.latency_p99_ms <= production.live.latency_p99_ms * 1.1``); they are read with
``servekit promote --from-server URL`` (see :mod:`servekit.bench.live`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from servekit.errors import InvalidArgumentError

_COMPARATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,2})"
    r"|(?P<op>>=|<=|==|!=|[<>+\-*/()]))"
)


#: The namespace of figures measured by a running server.
LIVE = "live"


class GateSyntaxError(InvalidArgumentError):
    """A gate expression that does not parse; the message points at the column."""


@dataclass(frozen=True)
class Operand:
    """A metric reference: ``alias`` None means the candidate version."""

    metric: str
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.alias}.{self.metric}" if self.alias else self.metric


Node = float | Operand | tuple[str, "Node", "Node"] | tuple[str, "Node"]


@dataclass(frozen=True)
class Gate:
    """A parsed gate: ``left OP right``."""

    text: str
    op: str
    left: Node
    right: Node

    @property
    def operands(self) -> list[Operand]:
        """Every metric the gate reads, left to right."""
        found: list[Operand] = []
        _collect(self.left, found)
        _collect(self.right, found)
        return found

    @property
    def aliases(self) -> set[str]:
        """The aliases whose versions the gate compares against."""
        return {o.alias for o in self.operands if o.alias}


def _collect(node: Node, out: list[Operand]) -> None:
    if isinstance(node, Operand):
        out.append(node)
    elif isinstance(node, tuple):
        for child in node[1:]:
            _collect(child, out)  # type: ignore[arg-type]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                col = pos + len(text[pos:]) - len(text[pos:].lstrip())
                self.fail(col, f"unexpected character {text[col]!r}")
            kind = m.lastgroup or ""
            start = m.start(kind)
            self.tokens.append((kind, m.group(kind), start))
            pos = m.end()
        self.i = 0

    def fail(self, col: int, what: str) -> None:
        raise GateSyntaxError(
            f"cannot parse gate {self.text!r} at column {col + 1}: {what}\n"
            f"  {self.text}\n  {' ' * col}^"
        )

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def col(self) -> int:
        tok = self.peek()
        return tok[2] if tok else len(self.text)

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            self.fail(len(self.text), "unexpected end of the expression")
        self.i += 1
        return tok  # type: ignore[return-value]

    def gate(self) -> Gate:
        left = self.expr()
        tok = self.peek()
        if tok is None or tok[1] not in _COMPARATORS:
            self.fail(self.col(), "expected a comparison (>=, <=, >, <, ==, !=)")
        op = self.take()[1]
        right = self.expr()
        tok = self.peek()
        if tok is not None and tok == ("name", "vs", tok[2]):
            self.take()
            alias_tok = self.peek()
            if alias_tok is None or alias_tok[0] != "name" or "." in alias_tok[1]:
                self.fail(self.col(), "expected an alias name after 'vs'")
            right = _qualify(right, self.take()[1])
        if self.peek() is not None:
            self.fail(self.col(), f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return Gate(self.text.strip(), op, left, right)

    def operand(self, text: str, col: int) -> Operand:
        found = _operand(text)
        if found is None:
            self.fail(
                col, f"{text!r} is not METRIC, ALIAS.METRIC, live.METRIC or ALIAS.live.METRIC"
            )
        return found  # type: ignore[return-value]

    def expr(self) -> Node:
        node = self.term()
        while (tok := self.peek()) and tok[1] in "+-" and tok[0] == "op":
            node = (self.take()[1], node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while (tok := self.peek()) and tok[1] in "*/" and tok[0] == "op":
            node = (self.take()[1], node, self.factor())
        return node

    def factor(self) -> Node:
        tok = self.peek()
        if tok is None:
            self.fail(len(self.text), "expected a number or a metric name")
        kind, value, col = tok  # type: ignore[misc]
        if kind == "num":
            self.take()
            return float(value)
        if kind == "name" and value != "vs":
            self.take()
            return self.operand(value, col)
        if value == "(":
            self.take()
            node = self.expr()
            if (close := self.peek()) is None or close[1] != ")":
                self.fail(self.col(), "expected ')'")
            self.take()
            return node
        if value == "-":
            self.take()
            return ("neg", self.factor())
        self.fail(col, "expected a number or a metric name")
        raise AssertionError("unreachable")


def _operand(text: str) -> Operand | None:
    """``METRIC``, ``ALIAS.METRIC``, ``live.METRIC`` or ``ALIAS.live.METRIC`` (None: none)."""
    parts = text.split(".")
    if parts[0] == LIVE and len(parts) == 2:
        return Operand(text)
    if len(parts) == 3 and parts[1] == LIVE and parts[0] != LIVE:
        return Operand(f"{LIVE}.{parts[2]}", parts[0])
    if len(parts) <= 2 and LIVE not in parts:
        alias, _, metric = text.rpartition(".")
        return Operand(metric, alias or None)
    return None


def _qualify(node: Node, alias: str) -> Node:
    if isinstance(node, Operand):
        return node if node.alias else Operand(node.metric, alias)
    if isinstance(node, tuple):
        return (node[0], *(_qualify(c, alias) for c in node[1:]))  # type: ignore[return-value]
    return node


def parse_gate(text: str) -> Gate:
    """Parse one gate expression; raises GateSyntaxError pointing at the offending column."""
    if not text or not text.strip():
        raise GateSyntaxError("a gate expression cannot be empty")
    return _Parser(text).gate()


#: Where each metric comes from, for the message of a gate whose metric is missing.
_PRODUCERS: list[tuple[str, str]] = [
    (
        r"^live\.",
        "a server running the candidate as a shadow or canary: servekit promote ... "
        "--from-server URL",
    ),
    (
        r"^(accuracy|r2)$",
        "servekit bench NAME --data X.npy --labels y.npy (or package with labels)",
    ),
    (r"^http_", "servekit bench NAME --data X.npy --url http://HOST:PORT"),
    (r"^(latency_|throughput_|load_time_ms|peak_memory_mb)", "servekit bench NAME --data X.npy"),
    (r"^agreement_with_parent$", "servekit bench NAME --data X.npy (versions with a parent)"),
    (r"^size_bytes$", "registration (every version records it)"),
]


def producer_of(metric: str) -> str:
    """The command that records ``metric``, for error messages."""
    for pattern, producer in _PRODUCERS:
        if re.search(pattern, metric):
            return producer
    return "Registry.log_metrics or the benchmark that defines it"


class MissingMetricError(LookupError):
    """A gate reads a metric the version does not have."""


def _value(node: Node, metrics: Mapping[str | None, Mapping[str, float]]) -> float:
    if isinstance(node, float):
        return node
    if isinstance(node, Operand):
        scope = metrics.get(node.alias)
        if scope is None:
            raise MissingMetricError(f"alias {node.alias!r} points at no version")
        if node.metric not in scope:
            who = f"the version at {node.alias!r}" if node.alias else "the candidate"
            raise MissingMetricError(
                f"{who} has no metric {node.metric!r} (recorded by {producer_of(node.metric)})"
            )
        return float(scope[node.metric])
    if node[0] == "neg":
        return -_value(node[1], metrics)
    op, a, b = node  # type: ignore[misc]
    x, y = _value(a, metrics), _value(b, metrics)
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    return x / y if y != 0 else float("inf") if x > 0 else float("-inf") if x < 0 else float("nan")


@dataclass(frozen=True)
class GateResult:
    """One evaluated gate: the values of both sides, and the verdict or why it failed."""

    gate: Gate
    left: float | None
    right: float | None
    passed: bool
    message: str = ""


def evaluate(gate: Gate, metrics: Mapping[str | None, Mapping[str, float]]) -> GateResult:
    """Evaluate ``gate``; ``metrics[None]`` is the candidate's, ``metrics[alias]`` an alias's.

    A missing metric fails the gate with a message naming the command that produces it.
    """
    try:
        left = _value(gate.left, metrics)
        right = _value(gate.right, metrics)
    except MissingMetricError as exc:
        return GateResult(gate, None, None, False, str(exc))
    return GateResult(gate, left, right, _COMPARATORS[gate.op](left, right))


def load_gate_file(text: str) -> list[Gate]:
    """Parse a gates file: one gate per line; blank lines and ``#`` comments are skipped."""
    gates = []
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if body:
            try:
                gates.append(parse_gate(body))
            except GateSyntaxError as exc:
                raise GateSyntaxError(f"line {lineno}: {exc}") from None
    return gates
