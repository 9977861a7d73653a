"""``servekit promote``: move an alias to a version only when its gates pass."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from servekit.bench.gates import load_gate_file, parse_gate
from servekit.bench.live import read_live
from servekit.bench.promote import PromotionRaced, PromotionRefused, promote
from servekit.cli.registry import registry_option
from servekit.errors import InvalidArgumentError
from servekit.registry import Registry

#: Exit status when a gate refuses the promotion, or the alias moved while it was judged.
EXIT_REFUSED = 1


@click.command("promote")
@click.argument("ref")
@click.option("--to", "alias", required=True, help="Alias to move, e.g. production.")
@click.option(
    "--gate",
    "gates",
    multiple=True,
    help="A gate such as 'accuracy >= production.accuracy - 0.005' (repeatable).",
)
@click.option(
    "--gates-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file of gates, one per line ('#' starts a comment).",
)
@click.option(
    "--from-server",
    "server_url",
    metavar="URL",
    default=None,
    help="Read live.* figures of REF from a server running it as a shadow or canary.",
)
@click.option("--force", is_flag=True, help="Promote even if gates fail (needs --reason).")
@click.option("--reason", default=None, help="Why; recorded in the alias audit log.")
@registry_option
def promote_command(
    ref: str,
    alias: str,
    gates: tuple[str, ...],
    gates_file: Path | None,
    server_url: str | None,
    force: bool,
    reason: str | None,
    registry_dir: Path | None,
) -> None:
    """Point ALIAS at REF if every gate passes; print each gate's values and verdict.

    With --from-server URL, gates may read live.* figures the server measured for REF as a
    shadow or canary (live.agreement, live.requests, live.latency_p99_ms ...) and
    ALIAS.live.* for production there; the audit log records the figures used, for a refusal
    too."""
    parsed = [parse_gate(g) for g in gates]
    if gates_file is not None:
        try:
            text = gates_file.read_text()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read gates file {gates_file}: {exc}") from None
        parsed += load_gate_file(text)
    reg = Registry(registry_dir, create=False)
    live = None
    if server_url is not None:
        candidate = reg.get(ref)
        live = read_live(server_url, candidate.name, candidate.version)
    try:
        result = promote(reg, ref, alias, parsed, force=force, reason=reason, live=live)
    except PromotionRefused as refused:
        click.echo(refused.result.table())
        click.echo(f"servekit: {refused}", err=True)
        sys.exit(EXIT_REFUSED)
    except PromotionRaced as raced:
        click.echo(f"servekit: refused: {raced}", err=True)
        sys.exit(EXIT_REFUSED)
    if result.gates:
        click.echo(result.table())
    verb = "FORCED" if result.forced else "promoted"
    click.echo(f"{verb}: {result.candidate.ref} is now {result.candidate.name}@{alias}")
