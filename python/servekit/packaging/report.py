"""The result of packaging: one row per variant, printable as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from servekit.errors import InvalidArgumentError
from servekit.packaging.parity import ParityResult
from servekit.signature import Signature

Status = Literal["passed", "failed", "not-verified", "not-applicable", "error"]


@dataclass
class VariantResult:
    """One variant: its kind, status, artifact and parity.

    ``status``: ``passed`` (within tolerance; registered when a registry is given), ``failed``
    (outside tolerance: not registered unless forced), ``not-verified`` (no parity check could
    run: not registered unless forced), ``not-applicable`` (``reason`` says why)
    or ``error`` (building it failed; ``reason`` holds the error).
    """

    kind: str
    status: Status
    reason: str | None = None
    directory: Path | None = None
    model_file: Path | None = None
    size_bytes: int | None = None
    signature: Signature | None = None
    parity: ParityResult | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    ref: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping."""
        return {
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "directory": str(self.directory) if self.directory else None,
            "model_file": str(self.model_file) if self.model_file else None,
            "size_bytes": self.size_bytes,
            "signature": self.signature.to_dict() if self.signature else None,
            "parity": self.parity.to_dict() if self.parity else None,
            "params": self.params,
            "metrics": self.metrics,
            "ref": self.ref,
        }


@dataclass
class PackageReport:
    """Everything ``package`` produced: the variants in order (fp32 first) and where they are."""

    name: str
    framework: str
    task: str
    out_dir: Path
    variants: list[VariantResult]
    model_type: str = ""

    def variant(self, kind: str) -> VariantResult:
        """The result for ``kind``; InvalidArgumentError if it was not requested."""
        for v in self.variants:
            if v.kind == kind:
                return v
        kinds = ", ".join(v.kind for v in self.variants)
        raise InvalidArgumentError(f"no variant {kind!r} in this report (it has {kinds})")

    @property
    def registered(self) -> list[VariantResult]:
        """The variants that were registered (have a ref)."""
        return [v for v in self.variants if v.ref]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping."""
        return {
            "name": self.name,
            "framework": self.framework,
            "task": self.task,
            "model_type": self.model_type,
            "out_dir": str(self.out_dir),
            "variants": [v.to_dict() for v in self.variants],
        }

    def table(self) -> str:
        """A fixed-width table: kind, status, size, max diffs, agreement, metric, ref/reason."""
        head = (
            "variant",
            "status",
            "size",
            "max abs",
            "max rel",
            "top-1",
            "metric",
            "ref / reason",
        )
        rows = [head]
        for v in self.variants:
            p = v.parity
            metric = "-"
            if p and p.variant_metric is not None:
                metric = f"{p.metric} {p.variant_metric:.4f}"
                if p.metric_change is not None:
                    metric += f" ({p.metric_change:+.4f})"
            rows.append(
                (
                    v.kind,
                    v.status,
                    _size(v.size_bytes),
                    f"{p.max_abs_diff:.2e}" if p else "-",
                    f"{p.max_rel_diff:.2e}" if p else "-",
                    f"{p.top1_agreement:.4f}" if p and p.top1_agreement is not None else "-",
                    metric,
                    v.ref or ("; ".join(p.failures) if p and p.failures else v.reason) or "",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
            for r in rows
        ]
        title = f"package {self.name!r} ({self.framework} {self.task}) in {self.out_dir}"
        return "\n".join([title, *lines])

    def __str__(self) -> str:
        return self.table()


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.2f} MB"
