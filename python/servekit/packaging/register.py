"""Registering a package's variants in the model registry, with lineage."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

from servekit.errors import InvalidArgumentError
from servekit.packaging.report import PackageReport

_FRAMEWORK_PACKAGES = {
    "sklearn": ("numpy", "onnx", "onnxruntime", "scikit-learn", "skl2onnx"),
    "torch": ("numpy", "onnx", "onnxruntime", "torch"),
}


def framework_versions(framework: str) -> dict[str, str]:
    """Installed versions of the packages that produced a ``framework`` package."""
    versions = {}
    for dist in _FRAMEWORK_PACKAGES[framework]:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def open_registry(registry: Any) -> Any:
    """A Registry from a Registry or a root path."""
    from servekit.registry import Registry

    if isinstance(registry, Registry):
        return registry
    if isinstance(registry, str | os.PathLike):
        return Registry(registry)
    raise InvalidArgumentError(
        f"registry must be a Registry or a path, got {type(registry).__name__}"
    )


def register_report(registry: Any, report: PackageReport, *, force: bool = False) -> None:
    """Register the fp32 export and every passing variant (failed ones too with ``force``) as
    directory artifacts of ``report.name``; set each VariantResult's ``ref``.

    Variant kind, parity, packaging parameters and framework versions go into the metadata;
    accuracy/r2 and size_bytes into the metrics; parent = the fp32 export's ref. When the fp32
    export failed its parity check (and not ``force``), nothing is registered.
    """
    reg = open_registry(registry)
    fp32 = report.variant("fp32")
    wanted = {"passed", "failed", "not-verified"} if force else {"passed"}
    if fp32.status not in wanted:
        return
    versions = framework_versions(report.framework)
    parent: str | None = None
    for v in report.variants:
        if v.status not in wanted or v.directory is None or v.parity is None:
            continue
        version = reg.register(
            report.name,
            v.directory,
            format="torchscript" if v.kind == "torchscript" else "onnx",
            signature=v.signature,
            metadata={
                "packaging": {"variant": v.kind, **v.params},
                "frameworks": versions,
                "parity": v.parity.to_dict(),
                "task": report.task,
            },
            metrics=v.metrics,
            variant=v.kind,
            parent=parent,
            source={"framework": report.framework, "model_type": report.model_type},
        )
        v.ref = version.ref
        if v.kind == "fp32":
            parent = version.ref
