"""Prometheus text exposition of the serving statistics, rendered at scrape time.

Triton's counters keep their exact names (no ``_total`` suffix, which prometheus_client would
add to a counter), so this text is written here; whatever else registered with
prometheus_client's default registry (e.g. telemetry gauges) is appended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from servekit.serving.model import ServedModel
from servekit.serving.stats import Histogram, ModelStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS: list[tuple[str, str, Callable[[ModelStats], float]]] = [
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (a batch of n counts n)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (a batch counts once)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds",
        lambda s: (s.success.ns + s.fail.ns) // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds",
        lambda s: s.compute_infer.ns // 1000,
    ),
]

_HISTOGRAMS: list[tuple[str, str, Callable[[ModelStats], Histogram]]] = [
    (
        "servekit_request_duration_seconds",
        "Inference request duration in seconds, from decoded request to outputs",
        lambda s: s.request_seconds,
    ),
    (
        "servekit_queue_duration_seconds",
        "Time a request waited before its model execution started, in seconds",
        lambda s: s.queue_seconds,
    ),
    (
        "servekit_batch_size",
        "Rows per model execution",
        lambda s: s.batch_size,
    ),
]


def _labels(model: ServedModel, extra: str = "") -> str:
    name = model.name.replace("\\", "\\\\").replace('"', '\\"')
    return f'model="{name}",version="{model.version}"{extra}'


def _extra(label: str, value: str) -> str:
    return f',{label}="{value}"'


def render(
    models: Iterable[ServedModel],
    registries: Iterable[CollectorRegistry] = (REGISTRY,),
    *,
    inflight: int | None = None,
) -> bytes:
    """Prometheus text for ``models`` followed by the collectors of ``registries`` (by default
    prometheus_client's default registry; the server adds its telemetry gauges' registry).
    ``inflight``, when given, is the server's requests in flight
    (``servekit_inflight_requests``)."""
    models = list(models)
    lines: list[str] = []
    if inflight is not None:
        name = "servekit_inflight_requests"
        lines += [
            f"# HELP {name} Requests holding one of the server's --max-inflight slots",
            f"# TYPE {name} gauge",
            f"{name} {inflight}",
        ]
    for name, help_text, value in _COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f"{name}{{{_labels(m)}}} {value(m.stats)}" for m in models]
    name = "nv_inference_request_failure"
    lines += [
        f"# HELP {name} Number of failed inference requests, all batch sizes",
        f"# TYPE {name} counter",
    ]
    for m in models:
        for reason, count in sorted(m.stats.failures.items()):
            lines.append(f"{name}{{{_labels(m, _extra('reason', reason))}}} {count}")
    name = "nv_inference_pending_request_count"
    lines += [
        f"# HELP {name} Instantaneous number of pending requests awaiting execution",
        f"# TYPE {name} gauge",
    ]
    lines += [f"{name}{{{_labels(m)}}} {m.stats.pending}" for m in models]
    for name, help_text, pick in _HISTOGRAMS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for m in models:
            hist = pick(m.stats)
            for bound, count in hist.cumulative():
                lines.append(f"{name}_bucket{{{_labels(m, _extra('le', bound))}}} {count}")
            lines.append(f"{name}_sum{{{_labels(m)}}} {hist.sum}")
            lines.append(f"{name}_count{{{_labels(m)}}} {hist.count}")
    return b"\n".join(["\n".join(lines).encode(), *(generate_latest(r) for r in registries)])
