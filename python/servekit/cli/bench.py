"""``servekit bench``: measure a model's registry versions side by side and log the figures."""

from __future__ import annotations

from pathlib import Path

import click

from servekit.bench.run import DEFAULT_BATCH_SIZES, benchmark
from servekit.cli._arrays import load_array
from servekit.cli._progress import progress_option
from servekit.cli.registry import registry_option
from servekit.errors import InvalidArgumentError
from servekit.registry import Registry


def _ints(option: str, text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(
            f"{option} takes comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise InvalidArgumentError(f"{option} takes positive integers, got {text!r}")
    return values


@click.command("bench")
@click.argument("name")
@click.option("--versions", default=None, help="Comma-separated version numbers, e.g. 1,2,3.")
@click.option("--lineage", default=None, help="A version with its ancestors and descendants.")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Input rows as a .npy array.",
)
@click.option(
    "--labels",
    "labels_path",
    default=None,
    type=click.Path(path_type=Path),
    help="Labels (.npy): accuracy for integers, R^2 for floats.",
)
@click.option("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="Intra-op threads per model (keep it low on small machines).",
)
@click.option("--url", default=None, help="Also measure over HTTP through this running server.")
@click.option(
    "--seconds",
    type=float,
    default=2.0,
    show_default=True,
    help="Measurement time per variant and batch size.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory (default: ./bench-NAME).",
)
@click.option("--no-log", is_flag=True, help="Do not log the figures as registry metrics.")
@progress_option
@registry_option
def bench_command(
    name: str,
    versions: str | None,
    lineage: str | None,
    data_path: Path,
    labels_path: Path | None,
    batch_sizes: str,
    device: str,
    threads: int,
    url: str | None,
    seconds: float,
    out: Path | None,
    no_log: bool,
    progress: bool,
    registry_dir: Path | None,
) -> None:
    """Benchmark the versions of NAME: size, load time, latency p50/p90/p99 and throughput per
    batch size, memory, accuracy (or R^2) and agreement with the lineage parent."""
    sizes = _ints("--batch-sizes", batch_sizes) or list(DEFAULT_BATCH_SIZES)
    data = load_array(data_path, "input")
    labels = load_array(labels_path, "label") if labels_path is not None else None
    report = benchmark(
        Registry(registry_dir, create=False),
        name,
        data,
        labels=labels,
        versions=_ints("--versions", versions),
        lineage=lineage,
        batch_sizes=sizes,
        device=device,
        threads=threads,
        url=url,
        seconds_per_batch_size=seconds,
        log_metrics=not no_log,
        progress=progress,
        say=lambda msg: click.echo(msg, err=True),
    )
    click.echo(report.table())
    paths = report.write(out or Path(f"bench-{name}"))
    click.echo("report: " + ", ".join(str(p) for p in paths))
    if not no_log:
        click.echo(f"metrics logged on {', '.join(r.ref for r in report.results)}")
