"""Benchmark model variants side by side and promote one through explicit gates."""

from servekit.bench.gates import Gate, GateResult, GateSyntaxError, evaluate, parse_gate

__all__ = ["Gate", "GateResult", "GateSyntaxError", "evaluate", "parse_gate"]
