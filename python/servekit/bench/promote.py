"""Promotion of a registry version to an alias, only through explicit gates.

Every promotion is recorded in the registry's append-only alias audit log: ``promote`` when
every gate passed (the reason lists the gates), ``force`` when an operator overrode failing or
missing gates (a reason is then required).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from servekit.bench.gates import LIVE, Gate, GateResult, evaluate, parse_gate
from servekit.bench.live import LiveEvidence
from servekit.errors import (
    InvalidArgumentError,
    NotFoundError,
    PreconditionFailedError,
    ServekitError,
)
from servekit.registry import AliasEvent, ModelVersion, Registry


@dataclass(frozen=True)
class PromotionResult:
    """The gates evaluated for one candidate, and the alias event if it was promoted."""

    candidate: ModelVersion
    alias: str
    gates: list[GateResult]
    event: AliasEvent | None
    forced: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def table(self) -> str:
        """One row per gate: the expression, both sides' values and the verdict."""
        rows = [("gate", "left", "right", "verdict")]
        for g in self.gates:
            rows.append(
                (
                    g.gate.text,
                    "-" if g.left is None else f"{g.left:.6g}",
                    "-" if g.right is None else f"{g.right:.6g}",
                    "pass" if g.passed else f"FAIL {g.message}".rstrip(),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
            for r in rows
        )


class PromotionRefused(ServekitError):
    """A gate failed and the promotion was not forced; ``result`` holds every gate's verdict."""

    def __init__(self, result: PromotionResult) -> None:
        failed = [g.gate.text for g in result.gates if not g.passed]
        super().__init__(
            f"promotion of {result.candidate.ref} to {result.alias!r} refused: "
            f"{len(failed)} of {len(result.gates)} gates failed ({'; '.join(failed)})"
        )
        self.result = result


class PromotionRaced(PreconditionFailedError):
    """The alias moved between reading the figures the gates judged and moving it; nothing
    changed and the attempt is in the audit log. Re-run the promotion to judge the new state."""


def promote(
    registry: Registry,
    ref: str,
    alias: str,
    gates: Sequence[str | Gate] = (),
    *,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    live: LiveEvidence | None = None,
) -> PromotionResult:
    """Point ``alias`` at the version ``ref`` resolves to if every gate passes.

    Gates read the candidate's metrics and, through ``ALIAS.metric``, those of the version an
    alias points to now. The alias is then moved only if it still points at the version read
    (a compare-and-swap inside the registry's write transaction), so a concurrent promotion is
    never overwritten by a decision made on stale figures. Returns the PromotionResult with the
    recorded event. Raises PromotionRefused when a gate fails (nothing changes), PromotionRaced
    when the alias moved meanwhile (nothing changes; the attempt is recorded),
    InvalidArgumentError when no gate is given without ``force`` or ``force`` comes without a
    ``reason``, and the registry's errors for an unknown reference or alias name.

    ``live``: a server's figures for the candidate (``live.*`` and ``ALIAS.live.*`` metrics,
    see :mod:`servekit.bench.live`); the audit entry then lists the live figures used, and a
    refusal is recorded too (action ``refused``), since those figures cannot be read again.
    InvalidArgumentError when the figures are of another version, or a gate reads
    ``ALIAS.live.*`` while the server's production is not the version ALIAS points at.
    """
    parsed = [g if isinstance(g, Gate) else parse_gate(g) for g in gates]
    if force and not (reason and reason.strip()):
        raise InvalidArgumentError("--force needs --reason: say why the gates are overridden")
    if not parsed and not force:
        raise InvalidArgumentError(
            "no gates given: promote needs at least one gate (--gate EXPR or --gates-file), "
            "or --force with --reason"
        )
    candidate = registry.get(ref)
    read_aliases = {alias, *(a for g in parsed for a in g.aliases)}
    read = _alias_versions(registry, candidate.name, read_aliases)
    scopes: dict[str | None, dict[str, float]] = {None: candidate.metrics}
    for name, version in read.items():
        # An alias that points nowhere stays out: evaluate() fails its gates, naming it.
        if version is not None:
            scopes[name] = registry.get(f"{candidate.name}:{version}").metrics
    live_used = [str(o) for g in parsed for o in g.operands if o.metric.startswith(LIVE + ".")]
    if live is not None:
        _add_live(candidate, parsed, scopes, live, read)
    results = [evaluate(g, scopes) for g in parsed]
    draft = PromotionResult(candidate, alias, results, None)
    evidence = f"; {live.describe(list(dict.fromkeys(live_used)))}" if live is not None else ""
    if not draft.passed and not force:
        if live is not None:
            failed = "; ".join(g.gate.text for g in results if not g.passed)
            why = f"refused {candidate.ref}: gates failed: {failed}{evidence}"
            registry.record_refusal(candidate.ref, alias, reason=why, actor=actor)
        raise PromotionRefused(draft)
    action = "promote" if draft.passed else "force"
    why = (reason or "gates passed: " + "; ".join(g.text for g in parsed)) + evidence
    # Compare-and-swap: the alias moves only if it still points where the gates read it.
    try:
        event = registry.set_alias(
            candidate.ref, alias, reason=why, actor=actor, action=action, expect=read[alias]
        )
    except PreconditionFailedError as exc:
        raise PromotionRaced(str(exc)) from None
    return PromotionResult(candidate, alias, results, event, forced=not draft.passed)


def _alias_versions(registry: Registry, model: str, aliases: set[str]) -> dict[str, int | None]:
    """The version each alias of ``model`` points at now (None: unset)."""
    out: dict[str, int | None] = {}
    for name in sorted(aliases):
        try:
            out[name] = registry.get(f"{model}@{name}").version
        except NotFoundError:
            out[name] = None
    return out


def _add_live(
    candidate: ModelVersion,
    gates: list[Gate],
    scopes: dict[str | None, dict[str, float]],
    live: LiveEvidence,
    read: dict[str, int | None],
) -> None:
    """Merge the live figures into the candidate's scope and into the scope of each alias a
    gate reads ``ALIAS.live.*`` of (production's side, when it is the version the alias
    pointed at when the gates were read: ``read``)."""
    if (live.model, live.version) != (candidate.name, candidate.version):
        raise InvalidArgumentError(
            f"live figures of {live.model}:{live.version} cannot gate {candidate.ref}"
        )
    scopes[None] = {**scopes[None], **live.candidate}
    for name in sorted(
        {o.alias for g in gates for o in g.operands if o.alias and o.metric.startswith(LIVE)}
    ):
        at = read.get(name)
        if at is None:
            continue  # the alias points nowhere: evaluate() says so
        if live.production_version != at:
            raise InvalidArgumentError(
                f"{live.url} serves {candidate.name} version {live.production_version} as "
                f"production, but {candidate.name}@{name} is version {at}: its live figures "
                f"are not {name}'s"
            )
        scopes[name] = {**scopes[name], **live.production}
