"""``servekit registry ...``: register, inspect, alias, verify and clean a model registry.

``--registry DIR`` (default: ``$SERVEKIT_HOME``, else ``~/.servekit``) is accepted on the group
(``servekit registry --registry D list``) and on each command (``servekit registry list
--registry D``); the command's own wins when both are given. Only ``init`` and ``register``
create a registry that does not exist.
Bad input prints one line and exits 2; ``verify`` exits 1 with one line per problem.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from servekit.errors import InvalidArgumentError, PreconditionFailedError
from servekit.registry import UNCHECKED, ModelVersion, Registry

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status of ``verify`` when anything is corrupt or missing, and of ``alias set
#: --expect`` when the alias had moved.
EXIT_PROBLEMS = 1


#: Where the group's ``--registry`` is kept for its commands (``Context.meta`` is shared by
#: a context and all its children).
_GROUP_REGISTRY = "servekit.registry_dir"

_REGISTRY_PATH = click.Path(file_okay=False, path_type=Path)
_REGISTRY_HELP = "Registry root (default: $SERVEKIT_HOME, else ~/.servekit)."


def registry_option(fn: F) -> F:
    """Add ``--registry DIR`` to a command; without it the group's ``--registry`` applies."""

    @functools.wraps(fn)
    def with_group_default(*args: Any, registry_dir: Path | None, **kwargs: Any) -> Any:
        if registry_dir is None:
            registry_dir = click.get_current_context().meta.get(_GROUP_REGISTRY)
        return fn(*args, registry_dir=registry_dir, **kwargs)

    option = click.option(
        "--registry", "registry_dir", type=_REGISTRY_PATH, default=None, help=_REGISTRY_HELP
    )
    return option(with_group_default)  # type: ignore[return-value]


def _pairs(option: str, items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{option} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _metrics(items: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for key, value in _pairs("--metric", items).items():
        try:
            out[key] = float(value)
        except ValueError:
            raise InvalidArgumentError(f"--metric {key}={value!r}: not a number") from None
    return out


def _summary(v: ModelVersion) -> str:
    extra = []
    if v.variant:
        extra.append(f"variant={v.variant}")
    if v.aliases:
        extra.append("aliases=" + ",".join(v.aliases))
    if v.archived:
        extra.append("archived")
    return f"{v.ref}  {v.format:<11} {v.size_bytes:>12} B  {v.created_at}  {' '.join(extra)}"


@click.group("registry")
@click.option("--registry", "registry_dir", type=_REGISTRY_PATH, default=None, help=_REGISTRY_HELP)
@click.pass_context
def registry(ctx: click.Context, registry_dir: Path | None) -> None:
    """Content-addressed model registry: versions, aliases, lineage, integrity."""
    ctx.meta[_GROUP_REGISTRY] = registry_dir


@registry.command("init")
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
def init_command(root: Path) -> None:
    """Create an empty registry at ROOT (or open the one there) and print its path.

    Every other command except ``register`` refuses a root that does not exist, so a typo in
    --registry is an error instead of a new, empty registry."""
    click.echo(str(Registry(root).root))


@registry.command("register")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, help="onnx, torchscript, ort, sklearn, ...")
@click.option("--variant", default=None, help="Variant kind: fp32, int8-dynamic, pruned, ...")
@click.option("--parent", default=None, help="Reference of the version this one derives from.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--metric", "metrics", multiple=True, metavar="KEY=NUMBER", help="Repeatable.")
@click.option("--description", default=None)
@registry_option
def register_command(
    name: str,
    path: Path,
    fmt: str,
    variant: str | None,
    parent: str | None,
    tags: tuple[str, ...],
    metrics: tuple[str, ...],
    description: str | None,
    registry_dir: Path | None,
) -> None:
    """Store PATH (a file or directory) as the next version of NAME; print 'NAME:VERSION DIGEST'."""
    v = Registry(registry_dir).register(
        name,
        path,
        format=fmt,
        variant=variant,
        parent=parent,
        tags=_pairs("--tag", tags),
        metrics=_metrics(metrics),
        description=description,
    )
    click.echo(f"{v.ref} {v.digest}")


@registry.command("list")
@click.argument("name", required=False)
@click.option("--variant", default=None, help="With NAME: only this variant.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="With NAME: filter.")
@click.option("--order-by", default=None, help="With NAME: version, created_at, metrics.X, -...")
@registry_option
def list_command(
    name: str | None,
    variant: str | None,
    tags: tuple[str, ...],
    order_by: str | None,
    registry_dir: Path | None,
) -> None:
    """List registered models, or the versions of model NAME."""
    reg = Registry(registry_dir, create=False)
    if name is None:
        for m in reg.list_models():
            aliases = ",".join(f"{a}={v}" for a, v in m.aliases.items())
            latest = m.latest_version if m.latest_version is not None else "-"
            click.echo(f"{m.name}  latest={latest}  versions={m.version_count}  {aliases}".rstrip())
        return
    versions = reg.list_versions(
        name, tags=_pairs("--tag", tags), variant=variant, order_by=order_by
    )
    for v in versions:
        click.echo(_summary(v).rstrip())


@registry.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@registry_option
def show_command(ref: str, as_json: bool, registry_dir: Path | None) -> None:
    """Show the version REF (NAME, NAME:VERSION or NAME@ALIAS) points at."""
    v = Registry(registry_dir, create=False).get(ref)
    if as_json:
        click.echo(json.dumps(v.to_dict(), indent=2))
        return
    d = v.to_dict()
    for key in ("ref", "digest", "kind", "format", "size_bytes", "created_at", "variant",
                "parent", "description", "aliases", "archived", "tags", "metrics", "metadata",
                "source"):  # fmt: skip
        value = d[key]
        text = json.dumps(value) if isinstance(value, dict | list) else value
        click.echo(f"{key + ':':<13}{text}")
    if v.signature is not None:
        click.echo(f"{'signature:':<13}{json.dumps(v.signature.to_dict())}")
    for e in v.manifest:
        click.echo(f"  {e.digest}  {e.size:>12} B  {e.path}")


@registry.group("alias")
def alias() -> None:
    """Move or remove aliases (every move is recorded in the audit log)."""


def _expectation(value: str | None) -> Any:
    """``--expect``: a version number, or ``none`` for "the alias must not exist yet"."""
    if value is None:
        return UNCHECKED
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgumentError(
            f"--expect {value!r}: expected a version number, or 'none' for an unset alias"
        ) from None


@alias.command("set")
@click.argument("ref")
@click.argument("alias_name", metavar="ALIAS")
@click.option("--reason", default=None, help="Why, recorded in the audit log.")
@click.option("--actor", default=None, help="Who (default: user@host).")
@click.option(
    "--expect",
    default=None,
    metavar="VERSION|none",
    help="Move only if ALIAS points at VERSION now ('none': only if it is unset); "
    "otherwise exit 1 and change nothing (the attempt is recorded).",
)
@registry_option
def alias_set(
    ref: str,
    alias_name: str,
    reason: str | None,
    actor: str | None,
    expect: str | None,
    registry_dir: Path | None,
) -> None:
    """Point ALIAS at the version REF resolves to."""
    try:
        e = Registry(registry_dir, create=False).set_alias(
            ref, alias_name, reason=reason, actor=actor, expect=_expectation(expect)
        )
    except PreconditionFailedError as exc:
        click.echo(f"servekit: refused: {exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
    prev = e.previous_version if e.previous_version is not None else "-"
    click.echo(f"{e.model}@{e.alias}: {prev} -> {e.new_version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.option("--reason", default=None, help="Why, recorded in the audit log.")
@click.option("--actor", default=None, help="Who (default: user@host).")
@registry_option
def alias_rm(
    name: str, alias_name: str, reason: str | None, actor: str | None, registry_dir: Path | None
) -> None:
    """Remove ALIAS from model NAME."""
    e = Registry(registry_dir, create=False).delete_alias(
        name, alias_name, reason=reason, actor=actor
    )
    click.echo(f"{e.model}@{e.alias}: {e.previous_version} -> -")


@registry.command("history")
@click.argument("name")
@registry_option
def history_command(name: str, registry_dir: Path | None) -> None:
    """Print every alias move of model NAME, oldest first."""
    for e in Registry(registry_dir, create=False).history(name):
        prev = e.previous_version if e.previous_version is not None else "-"
        new = e.new_version if e.new_version is not None else "-"
        reason = f"  {e.reason}" if e.reason else ""
        click.echo(f"{e.time}  {e.action:<8} {e.alias}: {prev} -> {new}  by {e.actor}{reason}")


@registry.command("lineage")
@click.argument("ref")
@registry_option
def lineage_command(ref: str, registry_dir: Path | None) -> None:
    """Print REF's version, then its parent, grandparent, ... with their sources."""
    for depth, v in enumerate(Registry(registry_dir, create=False).lineage(ref)):
        source = f"  source={json.dumps(v.source)}" if v.source else ""
        click.echo(f"{'  ' * depth}{v.ref}  {v.variant or '-'}  {v.digest}{source}")


@registry.command("verify")
@click.argument("ref", required=False)
@click.option(
    "--key",
    "public_key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also check REF's signature against this public key (PEM).",
)
@registry_option
def verify_command(ref: str | None, public_key: Path | None, registry_dir: Path | None) -> None:
    """Re-hash REF's artifact (default: every version); with --key also check its signature.
    Exit 1 with one line per problem."""
    reg = Registry(registry_dir, create=False)
    problems = reg.verify(ref)
    if public_key is not None:
        if ref is None:
            raise InvalidArgumentError("--key needs a REF: signatures are checked per version")
        from servekit.signing.registry import verify_version
        from servekit.signing.sign import SignatureError

        try:
            signed = verify_version(reg, ref, public_key)
        except SignatureError as exc:
            problems.append(f"{reg.get(ref).ref}: {exc}")
    if problems:
        for line in problems:
            click.echo(line)
        sys.exit(EXIT_PROBLEMS)
    if public_key is not None:
        click.echo(f"ok: {signed.ref} signed by key {signed.key_hint[:16]} ({signed.actor})")
        return
    click.echo("ok")


@registry.command("sign")
@click.argument("ref")
@click.option(
    "--key",
    "private_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key (PEM) from 'servekit keys generate'.",
)
@click.option("--actor", default=None, help="Who (default: user@host).")
@registry_option
def sign_command(ref: str, private_key: Path, actor: str | None, registry_dir: Path | None) -> None:
    """Sign REF's artifact (OpenSSF model-signing format) and store the signature with it."""
    from servekit.signing.registry import sign_version

    signed = sign_version(Registry(registry_dir, create=False), ref, private_key, actor=actor)
    click.echo(f"signed {signed.ref} with key {signed.key_hint[:16]}")


@registry.command("archive")
@click.argument("ref")
@registry_option
def archive_command(ref: str, registry_dir: Path | None) -> None:
    """Archive a version: NAME alone no longer resolves to it."""
    click.echo(f"{Registry(registry_dir, create=False).archive(ref).ref} archived")


@registry.command("path")
@click.argument("ref")
@click.option("--model-file", is_flag=True, help="Print the main model file of a directory.")
@registry_option
def path_command(ref: str, model_file: bool, registry_dir: Path | None) -> None:
    """Verify REF's artifact and print its path."""
    reg = Registry(registry_dir, create=False)
    click.echo(reg.model_file(ref) if model_file else reg.artifact_path(ref))


@registry.command("gc")
@registry_option
def gc_command(registry_dir: Path | None) -> None:
    """Remove staging files of killed writers and artifacts no version references."""
    report = Registry(registry_dir, create=False).gc()
    for p in report.removed:
        click.echo(f"removed {p}")
    click.echo(f"{len(report.removed)} removed, {report.bytes_freed} bytes freed")
