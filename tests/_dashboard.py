"""A registry for the dashboard tests: a digits MLP packaged (fp32, int8, pruned), benchmarked
and promoted through gates, as a user's registry looks after ``servekit demo``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits dataset scaled to [0, 1], float32 rows and int64 labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def build_registry(root: Path, work: Path) -> dict[str, str]:
    """Package, benchmark and promote ``digits`` into the registry at ``root``; return the
    refs: ``fp32`` (the export, promoted first) and ``promoted`` (what production names)."""
    import torch
    from torch import nn

    from servekit.bench.promote import PromotionRefused, promote
    from servekit.bench.run import benchmark
    from servekit.packaging import package
    from servekit.packaging.train import train_classifier
    from servekit.registry import Registry

    torch.set_num_threads(1)
    x, y = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train_classifier(model, x[:1200], y[:1200], epochs=8)
    reg = Registry(root)
    report = package(
        model,
        x[:1200],
        labels=y[:1200],
        variants=["onnx", "int8-dynamic", "pruned"],
        name="digits",
        registry=reg,
        out_dir=work / "packages",
        fine_tune_epochs=1,
        progress=False,
    )
    fp32 = report.variant("fp32").ref
    assert fp32 is not None
    benchmark(
        reg,
        "digits",
        x[1200:],
        labels=y[1200:],
        lineage=fp32,
        batch_sizes=[1, 16],
        seconds_per_batch_size=0.2,
        rounds=2,
        progress=False,
        say=lambda _m: None,
    )
    promote(reg, fp32, "production", ["accuracy >= 0.8"], reason="initial release")
    promoted = fp32
    gates = ["accuracy >= production.accuracy - 0.05"]
    for v in reg.list_versions("digits"):
        if v.ref != fp32:
            try:
                promote(reg, v.ref, "production", gates)
            except PromotionRefused:
                continue
            promoted = v.ref
            break
    return {"fp32": fp32, "promoted": promoted}
