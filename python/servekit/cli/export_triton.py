"""``servekit export triton``: a registry version as a Triton model repository entry."""

from __future__ import annotations

from pathlib import Path

import click

from servekit.serving.export import BatchingOptions, export_triton


@click.command("triton")
@click.argument("ref")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository to write into (DIR/<name>/config.pbtxt, DIR/<name>/<version>/).",
)
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Registry root (default: $SERVEKIT_HOME, else ~/.servekit).",
)
@click.option("--max-batch-size", default=64, show_default=True, help="0: no batching.")
@click.option("--max-queue-delay-us", default=0, show_default=True)
@click.option("--preferred-batch-size", "preferred", type=int, multiple=True, help="Repeatable.")
@click.option("--instances", default=1, show_default=True, help="instance_group count.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
def export_triton_command(
    ref: str,
    out: Path,
    registry: Path | None,
    max_batch_size: int,
    max_queue_delay_us: int,
    preferred: tuple[int, ...],
    instances: int,
    kind: str,
) -> None:
    """Write REF (NAME, NAME:VERSION or NAME@ALIAS; onnx or torchscript) as a Triton model
    repository entry: config.pbtxt with platform, dims, data types, dynamic batching and
    instance group, and the verified artifact in its version folder."""
    from servekit.registry import Registry

    options = BatchingOptions(
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        preferred_batch_sizes=preferred,
        instances=instances,
        kind=f"KIND_{kind.upper()}",
    )
    model_dir = export_triton(Registry(registry, create=False), ref, out, options)
    click.echo(str(model_dir))
