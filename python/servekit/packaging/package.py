"""``package``: export a model, build its variants, check each against the source, profile the
reference data and (with a registry) register everything with lineage."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servekit.errors import (
    InvalidArgumentError,
    NotApplicableError,
    PackagingError,
    StorageError,
    UnsupportedModelError,
)
from servekit.packaging import quantize
from servekit.packaging.distill import distill
from servekit.packaging.export import (
    export_sklearn_onnx,
    export_torch_onnx,
    export_torchscript,
    graph_signature,
    load_torchscript,
)
from servekit.packaging.inputs import as_sample_array, check_labels, holdout_split
from servekit.packaging.parity import ParityResult, Tolerance, compare, tolerances
from servekit.packaging.register import open_registry, register_report
from servekit.packaging.report import PackageReport, VariantResult
from servekit.packaging.runtime import ort_session, run_onnx
from servekit.packaging.sources import Source, make_source, torch_predict
from servekit.packaging.train import KDConfig, train_kd
from servekit.telemetry import ReferenceProfile, build_reference_profile

#: Variant kinds in build order; ``fp32`` is the ONNX export every other variant descends from.
VARIANT_KINDS: tuple[str, ...] = (
    "fp32",
    "int8-dynamic",
    "int8-static",
    "fp16",
    "torchscript",
    "pruned",
    "distilled",
)
#: Other accepted names (the CLI's ``onnx`` is the fp32 export).
ALIASES = {"onnx": "fp32"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_variants(variants: str | Sequence[str]) -> list[str]:
    """Normalise variant names (a list or a comma-separated string) to kinds in build order,
    fp32 always first. Raises InvalidArgumentError naming an unknown variant."""
    names = variants.split(",") if isinstance(variants, str) else list(variants)
    kinds = {"fp32"}
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        kind = ALIASES.get(name, name)
        if kind not in VARIANT_KINDS:
            known = ", ".join(["onnx", *VARIANT_KINDS[1:]])
            raise InvalidArgumentError(f"unknown variant {name!r}: expected some of {known}")
        kinds.add(kind)
    return [k for k in VARIANT_KINDS if k in kinds]


def _prepare_out_dir(out_dir: str | os.PathLike[str] | None, name: str) -> Path:
    if out_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"servekit-package-{name}-"))
    base = Path(out_dir)
    try:
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    except OSError as exc:
        raise StorageError(
            f"output directory {os.fspath(base)!r} is not writable: {exc.strerror or exc}"
        ) from None


class _Context:
    """The data every variant builder needs."""

    def __init__(
        self,
        source: Source,
        x: np.ndarray,
        labels: np.ndarray | None,
        holdout: float,
        seed: int,
        threads: int,
        progress: bool,
    ) -> None:
        self.source = source
        train, hold = holdout_split(len(x), holdout, seed)
        self.x_train, self.x_hold = x[train], x[hold]
        self.y_train = labels[train] if labels is not None else None
        self.y_hold = labels[hold] if labels is not None else None
        self.source_hold = source.predict(self.x_hold)[source.score_output]
        self.threads = threads
        self.progress = progress

    def compare(self, kind: str, variant_scores: np.ndarray, tol: Tolerance) -> ParityResult:
        return compare(
            kind,
            self.source.score_output,
            self.source_hold,
            variant_scores,
            tol,
            classes=self.source.classes,
            labels=self.y_hold,
        )

    def onnx_scores(self, path: Path) -> np.ndarray:
        outputs = run_onnx(ort_session(path, self.threads), self.x_hold)
        if self.source.score_output not in outputs:
            raise PackagingError(
                f"{path.name} has no output {self.source.score_output!r} (has {list(outputs)})"
            )
        return outputs[self.source.score_output]


def package(
    model: Any,
    sample_inputs: Any,
    *,
    labels: Any = None,
    variants: str | Sequence[str] = VARIANT_KINDS,
    name: str = "model",
    registry: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    tolerance: Mapping[str, Tolerance] | None = None,
    calibration: str = "minmax",
    prune_amount: float = 0.5,
    fine_tune_epochs: int = 20,
    student: Any = None,
    student_width_fraction: float = 0.25,
    distillation: KDConfig | None = None,
    holdout: float = 0.25,
    force: bool = False,
    threads: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> PackageReport:
    """Export ``model`` to ONNX (``fp32``), build the requested ``variants``, check every one
    against the source model on held-out sample rows, and return a PackageReport.

    ``sample_inputs`` (rows x features, or rows x channels x ... for torch) serve for
    calibration, fine-tuning, distillation (the train part) and parity checks (the held-out
    ``holdout`` share). ``labels`` (integer: classification, float: regression) add accuracy or
    R^2. Each variant is a directory ``<out_dir>/<name>-XXXX/<kind>/`` holding ``model.onnx``
    (``model.pt`` for torchscript), ``reference_profile.json`` (inputs, flattened to rows x
    features for N-D inputs, and the source's predicted classes or scores over all sample rows)
    and ``parity.json``. Variants outside their ``tolerance``
    (see parity.DEFAULT_TOLERANCES) are ``failed``; those that do not apply are reported
    ``not-applicable`` with the reason. With a ``registry``, the fp32 export and every passing
    variant (failed ones too when ``force``) are registered, parent = the fp32 export, after
    everything has been built, so bad input registers nothing.

    Raises InvalidArgumentError for bad sample inputs, labels, variant names, name or options,
    UnsupportedModelError for a model type that cannot be exported, StorageError for an
    unwritable ``out_dir``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgumentError(
            f"invalid package name {name!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    kinds = parse_variants(variants)
    tols = tolerances(tolerance)
    if calibration not in quantize.CALIBRATION_METHODS:
        raise InvalidArgumentError(
            f"unknown calibration method {calibration!r}: expected one of "
            f"{', '.join(quantize.CALIBRATION_METHODS)}"
        )
    if not 0.0 < student_width_fraction <= 1.0:
        raise InvalidArgumentError(
            f"student width fraction must be in (0, 1], got {student_width_fraction}"
        )
    if threads < 1:
        raise InvalidArgumentError(f"threads must be at least 1, got {threads}")
    reg = open_registry(registry) if registry is not None else None
    x = as_sample_array(sample_inputs)
    y = check_labels(labels, len(x)) if labels is not None else None
    source = make_source(model, x, y)
    if y is not None and source.task == "classifier" and source.classes is not None:
        unknown = np.setdiff1d(np.unique(y), source.classes)
        if unknown.size:
            raise InvalidArgumentError(
                f"labels {unknown[:5].tolist()} are not classes of the model "
                f"({source.classes.tolist()})"
            )
    ctx = _Context(source, x, y, holdout, seed, threads, progress)
    root = _prepare_out_dir(out_dir, name)
    profile = _reference_profile(source, x)

    results: list[VariantResult] = []
    fp32 = _build(ctx, "fp32", root, tols["fp32"], profile, lambda d: _fp32(ctx, d))
    if fp32.status not in ("passed", "failed", "not-verified"):
        shutil.rmtree(root, ignore_errors=True)
    if fp32.status == "not-applicable":
        raise UnsupportedModelError(fp32.reason or "the model cannot be exported to ONNX")
    if fp32.status == "error":
        raise PackagingError(f"the ONNX export failed: {fp32.reason}")
    results.append(fp32)
    assert fp32.model_file is not None
    builders: dict[str, Callable[[Path], tuple[Path, dict[str, Any], np.ndarray]]] = {
        "int8-dynamic": lambda d: _onnx_variant(
            ctx, d, lambda dst: quantize.quantize_int8_dynamic(fp32.model_file, dst)
        ),
        "int8-static": lambda d: _onnx_variant(
            ctx,
            d,
            lambda dst: quantize.quantize_int8_static(
                fp32.model_file, dst, ctx.x_train, method=calibration, progress=progress
            ),
        ),
        "fp16": lambda d: _onnx_variant(
            ctx, d, lambda dst: quantize.convert_fp16(fp32.model_file, dst)
        ),
        "torchscript": lambda d: _torchscript(ctx, d),
        "pruned": lambda d: _pruned(ctx, d, prune_amount, fine_tune_epochs, seed),
        "distilled": lambda d: _distilled(
            ctx, d, student, student_width_fraction, distillation or KDConfig(seed=seed)
        ),
    }
    for kind in kinds[1:]:
        results.append(_build(ctx, kind, root, tols[kind], profile, builders[kind]))
    report = PackageReport(
        name, source.framework, source.task, root, results, type(model).__qualname__
    )
    if reg is not None:
        register_report(reg, report, force=force)
    return report


def _reference_profile(source: Source, x: np.ndarray) -> ReferenceProfile:
    outputs = source.predict(x)
    if source.task == "classifier":
        predictions = source.predicted_classes(outputs).astype(np.int64)
    else:
        predictions = outputs[source.score_output].reshape(len(x), -1)[:, 0]
    return build_reference_profile(x.reshape(len(x), -1), predictions)


def _build(
    ctx: _Context,
    kind: str,
    root: Path,
    tol: Tolerance,
    profile: ReferenceProfile,
    builder: Callable[[Path], tuple[Path, dict[str, Any], np.ndarray]],
) -> VariantResult:
    """Run one builder in ``root/kind``; turn its outcome into a VariantResult."""
    directory = root / kind
    directory.mkdir()
    try:
        model_file, params, scores = builder(directory)
    except (NotApplicableError, UnsupportedModelError) as exc:
        _clear(directory)
        return VariantResult(kind, "not-applicable", reason=str(exc), params={})
    except PackagingError as exc:
        _clear(directory)
        return VariantResult(kind, "error", reason=str(exc))
    parity = ctx.compare(kind, scores, tol)
    (directory / "parity.json").write_text(json.dumps(parity.to_dict(), indent=1))
    profile.save(directory / "reference_profile.json")
    metrics: dict[str, float] = {"size_bytes": float(model_file.stat().st_size)}
    if parity.metric is not None and parity.variant_metric is not None:
        metrics[parity.metric] = parity.variant_metric
    signature = params.pop("_signature")
    return VariantResult(
        kind,
        parity.status,
        directory=directory,
        model_file=model_file,
        size_bytes=model_file.stat().st_size,
        signature=signature,
        parity=parity,
        params=params,
        metrics=metrics,
    )


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()


def _fp32(ctx: _Context, directory: Path) -> tuple[Path, dict[str, Any], np.ndarray]:
    path = directory / "model.onnx"
    if ctx.source.framework == "sklearn":
        signature = export_sklearn_onnx(ctx.source, ctx.x_train, path)
        params: dict[str, Any] = {"exporter": "skl2onnx", "zipmap": False}
    else:
        signature = export_torch_onnx(
            ctx.source.model, ctx.x_train, path, output_name=ctx.source.score_output
        )
        params = {"exporter": "torch.onnx", "dynamo": False}
    return path, {**params, "_signature": signature}, ctx.onnx_scores(path)


def _onnx_variant(
    ctx: _Context, directory: Path, make: Callable[[Path], dict[str, Any]]
) -> tuple[Path, dict[str, Any], np.ndarray]:
    path = directory / "model.onnx"
    params = make(path)
    return path, {**params, "_signature": graph_signature(path)}, ctx.onnx_scores(path)


def _require_torch(ctx: _Context, kind: str, why: str) -> None:
    if ctx.source.framework != "torch":
        raise NotApplicableError(f"{kind}: {why}")


def _torchscript(ctx: _Context, directory: Path) -> tuple[Path, dict[str, Any], np.ndarray]:
    _require_torch(
        ctx, "torchscript", "TorchScript holds torch modules; scikit-learn models ship as ONNX"
    )
    path = directory / "model.pt"
    signature = export_torchscript(ctx.source, ctx.x_train, path)
    scores = torch_predict(load_torchscript(path), ctx.x_hold)
    return path, {"method": "trace", "_signature": signature}, scores


def _pruned(
    ctx: _Context, directory: Path, amount: float, epochs: int, seed: int
) -> tuple[Path, dict[str, Any], np.ndarray]:
    from servekit.packaging.prune import prune_structured

    _require_torch(
        ctx,
        "pruned",
        "structured pruning removes torch Linear/Conv neurons; for scikit-learn models use "
        "the distilled variant",
    )
    module, params = prune_structured(ctx.source.model, ctx.x_train, amount=amount)
    if epochs > 0:
        config = KDConfig(epochs=epochs, seed=seed)
        teacher = ctx.source.predict(ctx.x_train)[ctx.source.score_output]
        train_kd(
            module,
            ctx.x_train,
            teacher,
            ctx.y_train,
            classifier=ctx.source.task == "classifier",
            teacher_is_probabilities=False,
            config=config,
            desc="fine-tune",
            progress=ctx.progress,
        )
        params["fine_tune"] = config.to_dict()
    path = directory / "model.onnx"
    signature = export_torch_onnx(module, ctx.x_train, path, output_name=ctx.source.score_output)
    params["source_parameters"] = int(sum(p.numel() for p in ctx.source.model.parameters()))
    return path, {**params, "_signature": signature}, ctx.onnx_scores(path)


def _distilled(
    ctx: _Context, directory: Path, student: Any, fraction: float, config: KDConfig
) -> tuple[Path, dict[str, Any], np.ndarray]:
    trained, params = distill(
        ctx.source,
        ctx.x_train,
        ctx.y_train,
        student=student,
        width_fraction=fraction,
        config=config,
        progress=ctx.progress,
    )
    path = directory / "model.onnx"
    signature = export_torch_onnx(trained, ctx.x_train, path, output_name=ctx.source.score_output)
    return path, {**params, "_signature": signature}, ctx.onnx_scores(path)
