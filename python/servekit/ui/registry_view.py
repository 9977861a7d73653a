"""The registry as the Models and Compare pages show it, read through :class:`Registry`.

Models: every model with its versions (digest, verification, signature, metrics, tags,
aliases), its aliases' audit log and its lineage as a graph. Compare: the versions of one
lineage with their bench metrics (the flat names ``servekit bench`` logs, see
:meth:`servekit.bench.report.VariantResult.metrics`), the accuracy-vs-latency Pareto front,
and the gates of the last promotion re-evaluated.
"""

from __future__ import annotations

import re
from typing import Any

from servekit.bench.gates import evaluate, parse_gate
from servekit.bench.report import pareto_front
from servekit.errors import NotFoundError, ServekitError
from servekit.registry import AliasEvent, ModelVersion, Registry

#: What ``promote`` writes as the reason of a promotion whose gates passed.
_GATES_REASON = "gates passed: "
_LATENCY = re.compile(r"^latency_(p50|p90|p99)_ms_b(\d+)$")
_THROUGHPUT = re.compile(r"^throughput_rows_s_b(\d+)$")
#: Quality metrics ``servekit bench`` logs, in the order the Pareto chart prefers them.
QUALITY_METRICS = ("accuracy", "r2")


def _event(e: AliasEvent) -> dict[str, Any]:
    return {
        "time": e.time,
        "alias": e.alias,
        "action": e.action,
        "previous_version": e.previous_version,
        "new_version": e.new_version,
        "actor": e.actor,
        "reason": e.reason,
    }


def _version(v: ModelVersion, problems: list[str]) -> dict[str, Any]:
    return {
        "ref": v.ref,
        "version": v.version,
        "variant": v.variant,
        "format": v.format,
        "kind": v.kind,
        "digest": v.digest,
        "size_bytes": v.size_bytes,
        "created_at": v.created_at,
        "parent": v.parent,
        "aliases": v.aliases,
        "archived": v.archived,
        "tags": v.tags,
        "metrics": v.metrics,
        "description": v.description,
        "verification": {"verified": not problems, "problems": problems},
        "signature": v.signature.to_dict() if v.signature is not None else None,
    }


def lineage_graph(versions: list[ModelVersion]) -> dict[str, Any]:
    """Nodes (one per version, with its depth below its root) and parent -> child edges
    among ``versions``; a parent outside the list (another model) is a root's ``parent``."""
    by_ref = {v.ref: v for v in versions}

    def depth(v: ModelVersion) -> int:
        seen, d = set(), 0
        while v.parent in by_ref and v.ref not in seen:
            seen.add(v.ref)
            v, d = by_ref[v.parent], d + 1
        return d

    nodes = [
        {"ref": v.ref, "variant": v.variant, "depth": depth(v), "aliases": v.aliases}
        for v in versions
    ]
    edges = [[v.parent, v.ref] for v in versions if v.parent in by_ref]
    return {"nodes": nodes, "edges": edges}


def models_view(registry: Registry) -> list[dict[str, Any]]:
    """Every registered model: description, tags, aliases, their audit log, every version
    (with its verification against its digest) and the lineage graph. Blocking (re-hashes
    every artifact): call it off the event loop."""
    problems: dict[str, list[str]] = {}
    for line in registry.verify():
        problems.setdefault(line.split(": ", 1)[0], []).append(line)
    out = []
    for m in registry.list_models():
        versions = registry.list_versions(m.name)
        out.append(
            {
                "name": m.name,
                "description": m.description,
                "tags": m.tags,
                "created_at": m.created_at,
                "latest_version": m.latest_version,
                "aliases": m.aliases,
                "alias_history": [_event(e) for e in registry.history(m.name)],
                "versions": [_version(v, problems.get(v.ref, [])) for v in versions],
                "lineage": lineage_graph(versions),
            }
        )
    return out


def _root(v: ModelVersion, by_ref: dict[str, ModelVersion]) -> str:
    seen = set()
    while v.parent in by_ref and v.ref not in seen:
        seen.add(v.ref)
        v = by_ref[v.parent]
    return v.ref


def bench_figures(metrics: dict[str, float]) -> dict[str, Any]:
    """The bench metrics of one version: size, load time, per batch size p50/p90/p99 and
    throughput, quality and agreement (None where not measured)."""
    batches: dict[int, dict[str, float]] = {}
    for key, value in metrics.items():
        if m := _LATENCY.match(key):
            batches.setdefault(int(m[2]), {})[f"{m[1]}_ms"] = value
        elif m := _THROUGHPUT.match(key):
            batches.setdefault(int(m[1]), {})["throughput_rows_s"] = value
    return {
        "size_bytes": metrics.get("size_bytes"),
        "load_time_ms": metrics.get("load_time_ms"),
        "peak_memory_mb": metrics.get("peak_memory_mb"),
        "batches": [{"batch_size": n, **batches[n]} for n in sorted(batches)],
        "quality": {k: metrics[k] for k in QUALITY_METRICS if k in metrics},
        "agreement_with_parent": metrics.get("agreement_with_parent"),
    }


def _pareto(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    quality = next(
        (q for q in QUALITY_METRICS if any(q in r["figures"]["quality"] for r in rows)), None
    )
    sizes = [{b["batch_size"] for b in r["figures"]["batches"] if "p50_ms" in b} for r in rows]
    common = set.intersection(*sizes) if sizes else set()
    if quality is None or not common:
        return None
    batch = min(common)
    scored = [r for r in rows if quality in r["figures"]["quality"]]
    points = [
        (
            next(b["p50_ms"] for b in r["figures"]["batches"] if b["batch_size"] == batch),
            r["figures"]["quality"][quality],
        )
        for r in scored
    ]
    front = set(pareto_front(points))
    return {
        "x": f"latency_p50_ms_b{batch}",
        "y": quality,
        "points": [
            {"ref": r["ref"], "variant": r["variant"], "x": x, "y": y, "front": i in front}
            for i, (r, (x, y)) in enumerate(zip(scored, points, strict=True))
        ],
    }


def last_promotion(registry: Registry, name: str) -> dict[str, Any] | None:
    """The model's last ``promote`` or ``force`` event, with its gates re-evaluated.

    ``promote`` records its gate texts in the reason; they are evaluated again on the promoted
    version's metrics against those of the version the alias left (the gate's alias read at
    the time of the move), so values logged since may differ from what the gate saw.
    """
    events = [e for e in registry.history(name) if e.action in ("promote", "force")]
    if not events:
        return None
    e = events[-1]
    gates: list[dict[str, Any]] = []
    if e.action == "promote" and e.reason and e.reason.startswith(_GATES_REASON):
        candidate = registry.get(f"{name}:{e.new_version}").metrics
        previous = (
            registry.get(f"{name}:{e.previous_version}").metrics
            if e.previous_version is not None
            else {}
        )
        for text in e.reason[len(_GATES_REASON) :].split("; "):
            try:
                gate = parse_gate(text)
            except ServekitError as exc:
                gates.append({"gate": text, "passed": None, "message": str(exc)})
                continue
            scopes: dict[str | None, dict[str, float]] = {None: candidate}
            for alias in gate.aliases:
                if alias == e.alias:
                    scopes[alias] = previous
                else:
                    try:
                        scopes[alias] = registry.get(f"{name}@{alias}").metrics
                    except NotFoundError:
                        continue
            r = evaluate(gate, scopes)
            gates.append(
                {
                    "gate": gate.text,
                    "left": r.left,
                    "right": r.right,
                    "passed": r.passed,
                    "message": r.message,
                }
            )
    return {"event": _event(e), "gates": gates}


def compare_view(registry: Registry, name: str) -> dict[str, Any]:
    """The versions of model ``name`` grouped by lineage (a root and its descendants), each
    with its bench figures and the group's Pareto chart data, plus the last promotion.
    Raises NotFoundError for an unknown model."""
    versions = [v for v in registry.list_versions(name) if not v.archived]
    by_ref = {v.ref: v for v in versions}
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in versions:
        groups.setdefault(_root(v, by_ref), []).append(
            {
                "ref": v.ref,
                "variant": v.variant,
                "format": v.format,
                "parent": v.parent,
                "aliases": v.aliases,
                "metrics": v.metrics,
                "figures": bench_figures(v.metrics),
            }
        )
    lineages = [
        {"root": root, "variants": rows, "pareto": _pareto(rows)} for root, rows in groups.items()
    ]
    return {"model": name, "lineages": lineages, "promotion": last_promotion(registry, name)}
