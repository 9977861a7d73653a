"""``servekit serve``'s start-up policy: options from the environment, the registry root, and
``--exit-on-error`` (verify, then refuse to serve when any model failed).

Every serve option may come from ``SERVEKIT_<OPTION>``, named after the option's flag
(``--model`` -> ``SERVEKIT_MODEL``, ``--grpc-port`` -> ``SERVEKIT_GRPC_PORT``) as MLServer's
settings are, not after click's parameter name. The registry root has two names, because
``SERVEKIT_HOME`` already names it for every other command: ``SERVEKIT_REGISTRY`` (the
option's own) and ``SERVEKIT_HOME``; when both are set they must agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from servekit.errors import ServekitError, UnavailableError

if TYPE_CHECKING:
    from servekit.serving.registry_source import RegistrySource
    from servekit.serving.repository import ModelRepository

#: Environment variables of ``--registry``, in the order click reads them.
REGISTRY_ENVVARS = ["SERVEKIT_REGISTRY", "SERVEKIT_HOME"]


def env_options(prefix: str) -> Callable[[click.Command], click.Command]:
    """A decorator (above ``@click.command``) giving every option without an ``envvar`` the
    variable ``PREFIX_<FLAG>`` (``--max-batch-size`` -> ``PREFIX_MAX_BATCH_SIZE``), shown in
    the help. A flag on the command line wins; a multiple option splits the value on spaces."""

    def apply(command: click.Command) -> click.Command:
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar is None:
                flag = max(param.opts, key=len).lstrip("-")
                param.envvar = f"{prefix}_{flag.replace('-', '_').upper()}"
                param.show_envvar = True
        return command

    return apply


def check_registry_env(ctx: click.Context) -> None:
    """Raises click.UsageError when ``--registry`` came from the environment and
    SERVEKIT_REGISTRY and SERVEKIT_HOME name different directories."""
    if ctx.get_parameter_source("registry") is not ParameterSource.ENVIRONMENT:
        return
    values = {name: os.environ[name] for name in REGISTRY_ENVVARS if os.environ.get(name)}
    if len({Path(v).resolve() for v in values.values()}) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        raise click.UsageError(f"{shown}: two registry roots; set one, or pass --registry")


def verify_models(source: RegistrySource) -> None:
    """Re-hash every referenced artifact before anything loads. Raises the registry's error
    (IntegrityError for a tampered artifact, NotFoundError for an unknown reference), its
    message prefixed with the reference."""
    for ref in source.refs.values():
        try:
            source.registry.model_file(ref, verify=True)
        except ServekitError as exc:
            raise type(exc)(f"--model {ref}: {exc} (--exit-on-error)") from None


def refuse_failed_models(repository: ModelRepository) -> None:
    """Raises UnavailableError naming every model with a version that failed to load or
    with no version loaded."""
    problems = []
    for entry in repository.entries():
        if entry.failed:
            problems += [f"{entry.name} version {v}: {why}" for v, why in entry.failed.items()]
        elif not entry.versions:
            problems.append(f"{entry.name}: {entry.reason or 'no version loaded'}")
    if problems:
        raise UnavailableError(f"not serving (--exit-on-error): {'; '.join(problems)}")
