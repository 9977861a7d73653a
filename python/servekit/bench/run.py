"""``benchmark``: measure registry versions of one model side by side and log the figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from servekit.bench.measure import measure
from servekit.bench.report import BenchReport, VariantResult
from servekit.bench.variants import (
    LoadedVersion,
    http_client,
    http_predictor,
    load_version,
)
from servekit.errors import InvalidArgumentError, UnavailableError
from servekit.progress import bars_shown, progress_bar
from servekit.registry import ModelVersion, Registry

DEFAULT_BATCH_SIZES = (1, 8, 64)


def select_versions(
    registry: Registry,
    name: str,
    *,
    versions: Sequence[int] | None = None,
    lineage: str | None = None,
) -> list[ModelVersion]:
    """The versions to measure: the given numbers; or ``lineage``'s version with its ancestors
    and descendants; or every version that is not archived. Raises NotFoundError for an
    unknown model or version, InvalidArgumentError when both selections are given."""
    if versions and lineage:
        raise InvalidArgumentError("give --versions or --lineage, not both")
    if versions:
        return [registry.get(f"{name}:{v}") for v in versions]
    if lineage:
        root = registry.get(lineage if ":" in lineage or "@" in lineage else f"{name}:{lineage}")
        if root.name != name:
            raise InvalidArgumentError(f"--lineage {lineage} is not a version of {name!r}")
        chain = {v.ref for v in registry.lineage(root.ref)}
        family = []
        for v in registry.list_versions(name):
            refs = {x.ref for x in registry.lineage(v.ref)}
            if v.ref in chain or root.ref in refs:
                family.append(v)
        return family
    selected = [v for v in registry.list_versions(name) if not v.archived]
    if not selected:
        raise InvalidArgumentError(f"model {name!r} has no versions to benchmark")
    return selected


def predicted_classes(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Class predictions from a classifier's outputs (an integer ``label`` output, else the
    argmax of the first 2-D output); None for a regressor."""
    label = outputs.get("label")
    if label is not None and label.dtype.kind in "iu":
        return label.reshape(-1)
    for arr in outputs.values():
        if arr.ndim == 2 and arr.shape[1] > 1 and arr.dtype.kind == "f":
            return arr.argmax(axis=1)
    return None


def _scores(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values())).reshape(len(next(iter(outputs.values()))), -1)[:, 0]


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination of ``pred`` against ``y``."""
    y = y.astype(np.float64).reshape(-1)
    pred = pred.astype(np.float64).reshape(-1)
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - pred) ** 2).sum() / total) if total > 0 else 0.0


def predict_all(loaded: LoadedVersion, chunk: int = 256) -> dict[str, np.ndarray]:
    """Outputs for every row of the loaded version's inputs, computed in chunks."""
    data = loaded.inputs
    parts = [loaded.predict(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def quality(outputs: dict[str, np.ndarray], labels: np.ndarray) -> tuple[str, float]:
    """``("accuracy", a)`` for integer labels, ``("r2", r)`` for float labels."""
    if labels.dtype.kind in "iub":
        classes = predicted_classes(outputs)
        if classes is None:
            raise InvalidArgumentError("integer labels given, but the model has no class output")
        return "accuracy", float((classes == labels.reshape(-1)).mean())
    return "r2", r2_score(labels, _scores(outputs))


def agreement(outputs: dict[str, np.ndarray], parent: dict[str, np.ndarray]) -> float:
    """Top-1 agreement of two classifiers, or R^2 of a regressor against its parent."""
    mine, theirs = predicted_classes(outputs), predicted_classes(parent)
    if mine is not None and theirs is not None:
        return float((mine == theirs).mean())
    return r2_score(_scores(parent), _scores(outputs))


def benchmark(
    registry: Registry,
    name: str,
    data: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    versions: Sequence[int] | None = None,
    lineage: str | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    device: str = "cpu",
    threads: int = 1,
    url: str | None = None,
    seconds_per_batch_size: float = 2.0,
    rounds: int = 5,
    log_metrics: bool = True,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> BenchReport:
    """Measure the selected versions of ``name`` on ``data`` side by side (in-process, and over
    HTTP at ``url`` when given), log the figures as registry metrics and return the report.

    Raises NotFoundError (unknown model or version), InvalidArgumentError (data whose shape
    does not match a signature, labels of the wrong length, bad settings), UnavailableError
    (a server that does not answer or does not serve a version) and IntegrityError (a tampered
    artifact).
    """
    data = np.asarray(data)
    if data.ndim < 2 or len(data) == 0:
        raise InvalidArgumentError(f"data must hold at least one row, got shape {data.shape}")
    if labels is not None and len(labels) != len(data):
        raise InvalidArgumentError(f"{len(labels)} labels for {len(data)} data rows")
    selected = select_versions(registry, name, versions=versions, lineage=lineage)
    loaded: dict[str, LoadedVersion] = {}
    for v in selected:
        if progress:
            say(f"loading {v.ref} ({v.variant or v.format})")
        loaded[v.ref] = load_version(
            registry, v, data, device=device, threads=threads, warm_rows=max(batch_sizes)
        )

    def bar(total: int, what: str) -> Callable[[str], None] | None:
        if not bars_shown(progress):
            return None
        pbar = progress_bar(total=total, progress=progress, desc=what)
        return lambda _msg: pbar.update(1)

    first = next(iter(loaded.values())).inputs
    figures = measure(
        {ref: lv.predict for ref, lv in loaded.items()},
        first,
        batch_sizes,
        seconds_per_batch_size=seconds_per_batch_size,
        rounds=rounds,
        progress=bar(len(batch_sizes) * rounds, "in-process"),
    )
    http_figures: dict[str, list] = {}
    if url:
        client = http_client(url)
        http = {}
        for ref, lv in loaded.items():
            predict = http_predictor(client, lv.version.name, lv.version.version, lv.signature)
            if predict is None:
                say(f"skipping HTTP for {ref}: not served at {url}")
            else:
                http[ref] = predict
        if not http:
            raise UnavailableError(f"server at {url} serves none of {list(loaded)}")
        http_figures = measure(
            http,
            first,
            batch_sizes,
            seconds_per_batch_size=seconds_per_batch_size,
            rounds=rounds,
            progress=bar(len(batch_sizes) * rounds, "http"),
        )
    outputs = {ref: predict_all(lv) for ref, lv in loaded.items()}
    results = []
    for ref, lv in loaded.items():
        v = lv.version
        metric_name = metric = agree = None
        if labels is not None:
            metric_name, metric = quality(outputs[ref], labels)
        if v.parent is not None:
            parent_out = outputs.get(v.parent)
            if parent_out is None:
                parent = load_version(
                    registry, registry.get(v.parent), data, device=device, threads=threads
                )
                parent_out = predict_all(parent)
            agree = agreement(outputs[ref], parent_out)
        results.append(
            VariantResult(
                ref=ref,
                variant=v.variant,
                format=v.format,
                size_bytes=v.size_bytes,
                load_time_ms=lv.load_time_ms,
                memory_mb=lv.memory_mb,
                batches=figures[ref],
                metric_name=metric_name,
                metric=metric,
                agreement_with_parent=agree,
                http=http_figures.get(ref, []),
            )
        )
    report = BenchReport(
        name,
        device,
        {
            "batch_sizes": list(batch_sizes),
            "seconds_per_batch_size": seconds_per_batch_size,
            "rounds": rounds,
            "threads": threads,
            "rows": len(data),
            "url": url,
        },
        results,
    )
    if log_metrics:
        for r in results:
            registry.log_metrics(r.ref, r.metrics())
    return report
