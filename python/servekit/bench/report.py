"""Benchmark results and their outputs: terminal table, Markdown, JSON and PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servekit.bench.measure import BatchFigures


@dataclass
class VariantResult:
    """Everything measured for one registry version."""

    ref: str
    variant: str | None
    format: str
    size_bytes: int
    load_time_ms: float
    memory_mb: float
    batches: list[BatchFigures]
    metric_name: str | None = None
    metric: float | None = None
    agreement_with_parent: float | None = None
    http: list[BatchFigures] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The figures as flat registry metrics (``latency_p99_ms_b1``, ``accuracy``, ...)."""
        out: dict[str, float] = {
            "size_bytes": float(self.size_bytes),
            "load_time_ms": self.load_time_ms,
            "peak_memory_mb": self.memory_mb,
        }
        for prefix, figures in (("", self.batches), ("http_", self.http)):
            for b in figures:
                n = b.batch_size
                out[f"{prefix}latency_p50_ms_b{n}"] = b.p50_ms
                out[f"{prefix}latency_p90_ms_b{n}"] = b.p90_ms
                out[f"{prefix}latency_p99_ms_b{n}"] = b.p99_ms
                out[f"{prefix}throughput_rows_s_b{n}"] = b.throughput_rows_s
        if self.metric_name is not None and self.metric is not None:
            out[self.metric_name] = self.metric
        if self.agreement_with_parent is not None:
            out["agreement_with_parent"] = self.agreement_with_parent
        return out


@dataclass
class BenchReport:
    """A side-by-side benchmark of several versions of one model."""

    name: str
    device: str
    settings: dict[str, Any]
    results: list[VariantResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "settings": self.settings,
            "results": [asdict(r) for r in self.results],
        }

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        sizes = [b.batch_size for b in self.results[0].batches] if self.results else []
        head = ["version", "variant", "size", "load ms", metric_label(self.results)]
        head += ["agree"]
        for n in sizes:
            head += [f"p50/p99 ms b{n}", f"rows/s b{n}"]
        rows = []
        for r in self.results:
            row = [
                r.ref,
                r.variant or "-",
                human_bytes(r.size_bytes),
                f"{r.load_time_ms:.1f}",
                "-" if r.metric is None else f"{r.metric:.4f}",
                "-" if r.agreement_with_parent is None else f"{r.agreement_with_parent:.4f}",
            ]
            for b in r.batches:
                row += [
                    f"{b.p50_ms:.3f}/{b.p99_ms:.3f} ±{b.spread:.0%}",
                    f"{b.throughput_rows_s:,.0f}",
                ]
            rows.append(row)
        return head, rows

    def table(self) -> str:
        """A fixed-width table for the terminal."""
        head, rows = self._rows()
        widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def markdown(self) -> str:
        """A Markdown table with the settings above it."""
        head, rows = self._rows()
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        lines = [f"# Benchmark of {self.name} ({self.device})", "", settings, ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> list[Path]:
        """Write report.json, report.md, latency.png and pareto.png; return their paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / "report.json", out_dir / "report.md"]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2))
        paths[1].write_text(self.markdown())
        paths += plot(self, out_dir)
        return paths


def metric_label(results: list[VariantResult]) -> str:
    names = {r.metric_name for r in results if r.metric_name}
    return names.pop() if len(names) == 1 else "metric"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when lower x (latency) and higher y (metric) are better."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def plot(report: BenchReport, out_dir: Path) -> list[Path]:
    """latency.png (p50 by batch size per variant) and, with a metric, pareto.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report.results:
        xs = [b.batch_size for b in r.batches]
        ax.plot(xs, [b.p50_ms for b in r.batches], marker="o", label=f"{r.ref} ({r.variant})")
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (ms)")
    ax.set_title(f"{report.name}: latency by batch size ({report.device})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    scored = [r for r in report.results if r.metric is not None and r.batches]
    if scored:
        points = [(r.batches[0].p50_ms, float(r.metric)) for r in scored]  # type: ignore[arg-type]
        front = set(pareto_front(points))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (r, (x, y)) in enumerate(zip(scored, points, strict=True)):
            ax.scatter(x, y, s=60, marker="*" if i in front else "o", zorder=3)
            ax.annotate(
                f"{r.ref} ({r.variant})",
                (x, y),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        fx = sorted((points[i] for i in front), key=lambda p: p[0])
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "--", color="gray", label="Pareto front")
        bs = scored[0].batches[0].batch_size
        ax.set(xlabel=f"p50 latency at batch {bs} (ms)", ylabel=metric_label(scored))
        ax.set_title(f"{report.name}: {metric_label(scored)} vs latency")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "pareto.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
