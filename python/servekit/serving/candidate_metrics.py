"""Prometheus text of the candidates' live figures, rendered at scrape time.

Every series carries ``model``, ``version`` and ``role`` labels (``shadow`` or ``canary``; the
latency series has ``production`` rows too: production's latency over the same window, its
``version`` production's). Production's own Triton counters are untouched by candidates.
"""

from __future__ import annotations

from collections.abc import Callable

from servekit.serving.candidates import Candidate, CandidateSet
from servekit.serving.comparison import QUANTILES

_GAUGES: list[tuple[str, str, Callable[[Candidate], float | None]]] = [
    (
        "servekit_candidate_requests",
        "Requests compared (shadow) or answered (canary) since the candidate started",
        lambda c: c.figures.requests,
    ),
    (
        "servekit_candidate_sampled",
        "Requests sampled for a shadow (compared, failed, dropped or outstanding)",
        lambda c: c.figures.sampled,
    ),
    (
        "servekit_candidate_dropped",
        "Sampled requests dropped because the shadow queue was full",
        lambda c: c.figures.dropped,
    ),
    (
        "servekit_candidate_errors",
        "Candidate requests that failed",
        lambda c: c.figures.error_count,
    ),
    (
        "servekit_candidate_agreement",
        "Share of compared rows on which every classifier output agreed with production",
        lambda c: c.figures.agreement,
    ),
]


def _labels(model: str, version: int | str, role: str) -> str:
    name = model.replace("\\", "\\\\").replace('"', '\\"')
    return f'model="{name}",version="{version}",role="{role}"'


def render(candidates: CandidateSet) -> bytes:
    """The candidates' series (empty when there are none)."""
    every = [c for group in candidates.models.values() for c in group.all()]
    if not every:
        return b""
    lines: list[str] = []
    for name, help_text, value in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for c in every:
            v = value(c)
            if v is not None:
                lines.append(f"{name}{{{_labels(c.spec.model_name, c.version, c.spec.role)}}} {v}")
    name = "servekit_candidate_latency_seconds"
    lines += [
        f"# HELP {name} Request latency quantiles of a candidate and of production over the "
        "same window",
        f"# TYPE {name} gauge",
    ]
    for c in every:
        rows = [(c.version, c.spec.role, c.figures.candidate_latency)]
        rows.append((c.production_version, "production", c.figures.production_latency))
        for version, role, window in rows:
            if version is None or not len(window):
                continue
            qs = window.quantiles(1e-9)
            labels = _labels(c.spec.model_name, version, role)
            lines += [
                f'{name}{{{labels},candidate="{c.version}",quantile="{q}"}} {qs[key]}'
                for key, q in QUANTILES
            ]
    return ("\n".join(lines) + "\n").encode()
