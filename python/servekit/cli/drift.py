"""``servekit drift report``: drift of a stored batch against a reference profile."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from servekit.cli._arrays import load_array
from servekit.errors import NotFoundError
from servekit.telemetry.drift import DriftMonitor, DriftReport, DriftThresholds
from servekit.telemetry.profile import ReferenceProfile

MAX_PLOTTED = 12


def write_plot(monitor: DriftMonitor, report: DriftReport, path: Path) -> list[str]:
    """Draw reference vs current bin proportions of the drifted features (or, when none
    drifted, of the three with the largest PSI) to a PNG at ``path``; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judged = [f for f in report.features if f.statistics is not None]
    chosen = [f for f in judged if f.drifted][:MAX_PLOTTED]
    title = "drifted features"
    if not chosen:
        chosen = sorted(judged, key=lambda f: -f.statistics.psi)[:3]  # type: ignore[union-attr]
        title = "no feature drifted; largest PSI shown"
    cols = min(3, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(chosen) :]:
        ax.axis("off")
    for ax, f in zip(axes.flat, chosen, strict=False):
        _, reference, current = monitor.histogram(f.name)
        x = np.arange(len(reference))
        ax.bar(x - 0.2, reference, width=0.4, label="reference")
        ax.bar(x + 0.2, current, width=0.4, label="current")
        s = f.statistics
        assert s is not None
        ax.set_title(f"{f.name}: PSI {s.psi:.2f}, JS {s.js:.2f}, KS {s.ks:.2f}", fontsize=9)
        ax.set_xlabel("reference quantile bin")
        ax.set_ylabel("proportion")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [f.name for f in chosen]


@click.group("drift")
def drift() -> None:
    """Data and prediction drift against a reference profile."""


@drift.command("report")
@click.option(
    "--profile",
    "profile_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Reference profile JSON (written by packaging).",
)
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Current inputs, a .npy array (rows x features, or 3+ dimensions: per-channel means).",
)
@click.option(
    "--predictions",
    "predictions_path",
    type=click.Path(path_type=Path),
    help="Current predictions, a .npy array, for prediction drift.",
)
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for drift_report.json and drift_report.png.",
)
@click.option(
    "--method",
    type=click.Choice(["psi", "js", "ks"]),
    default="psi",
    show_default=True,
    help="The statistic that decides whether a feature drifts.",
)
def report_command(
    profile_path: Path,
    data_path: Path,
    predictions_path: Path | None,
    out_dir: Path,
    method: str,
) -> None:
    """Compute PSI, KS and Jensen-Shannon drift of a stored batch, write JSON and a PNG plot of
    reference vs current distributions, and print a one-line summary per drifted feature."""
    if not profile_path.exists():
        raise NotFoundError(f"{profile_path}: no such file or directory")
    profile = ReferenceProfile.load(profile_path)
    data = load_array(data_path, "input")
    predictions = load_array(predictions_path, "prediction") if predictions_path else None
    monitor = DriftMonitor(
        profile,
        window_rows=None,
        thresholds=DriftThresholds(method=method),  # type: ignore[arg-type]
    )
    monitor.record(data, predictions)
    report = monitor.report()
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "drift_report.json"
    png_path = out_dir / "drift_report.png"
    plotted = write_plot(monitor, report, png_path) if report.judged_features else []
    body = {**report.to_dict(), "plot": png_path.name if plotted else None, "plotted": plotted}
    json_path.write_text(json.dumps(body, indent=1))
    for f in report.features:
        if f.drifted and f.statistics is not None:
            s = f.statistics
            click.echo(
                f"drift  {f.name}  psi={s.psi:.3f} js={s.js:.3f} ks={s.ks:.3f} p={s.ks_pvalue:.2g}"
            )
    pred = report.prediction
    click.echo(
        f"{len(report.drifted_features)}/{report.judged_features} features drifted; "
        f"dataset drift: {'yes' if report.dataset_drift else 'no'}"
        + (f"; prediction drift: {'yes' if pred.drifted else 'no'}" if pred else "")
    )
    click.echo(f"wrote {json_path}" + (f" and {png_path}" if plotted else ""))
