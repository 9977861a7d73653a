"""The command groups every servekit command runs under: lazy loading and one-line errors.

A command's modules are imported only when that command runs (``servekit hash`` loads no
serving stack), and every error reaches the user as one ``servekit: error: ...`` line:

- a :class:`~servekit.errors.ServekitError`, an OS error (missing file, permission, port) or a
  parse error (bad JSON, bad encoding) exits 2, as click's own usage errors do;
- a missing optional dependency names the extra that provides it (exit 2);
- anything else prints one line and "run with --debug for the traceback" (exit 1);
  ``servekit --debug ...`` re-raises it with the traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from servekit.errors import ServekitError

#: Exit status for bad input (a typed servekit error), as for click's own usage errors.
EXIT_BAD_INPUT = 2
#: Exit status for an unexpected failure (a bug, or a case servekit does not recognise).
EXIT_INTERNAL = 1

#: Top-level import name of each optional dependency -> the extra that installs it (the extras
#: of pyproject.toml; ``frontend`` is reached through ``serve``, which users install).
EXTRA_OF_MODULE = {
    "onnxruntime": "serve",
    "fastapi": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "uvicorn": "serve",
    "httptools": "serve",
    "uvloop": "serve",
    "prometheus_client": "serve",
    "grpc": "serve",
    "google": "serve",
    "onnx": "package",
    "sklearn": "package",
    "skl2onnx": "package",
    "skops": "package",
    "onnxconverter_common": "package",
    "tritonclient": "bench",
    "matplotlib": "bench",
    "tqdm": "bench",
    "geventhttpclient": "bench",
    "gevent": "bench",
    "aiohttp": "bench",
    "torch": "torch",
    "onnxscript": "torch",
    "ray": "ray",
    "model_signing": "sign",
    "cryptography": "sign",
    "OpenSSL": "sign",
}

#: Errors from the outside world or from parsing a user's file: bad input, not a bug.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ServekitError,
    OSError,
    UnicodeError,
    json.JSONDecodeError,
)


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """The one-line advice for an optional dependency that is not installed, else None."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return f"this command needs '{top}', which is not installed: pip install 'servekit[{extra}]'"


class MissingExtraError(click.ClickException):
    """A command's module needs an extra that is not installed (one line, exit 2)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra

    def show(self, file: Any = None) -> None:
        click.echo(f"servekit: error: {self.format_message()}", err=True, file=file)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are looked up.

    ``lazy`` maps a command name to ``"module:attribute"``; the module is imported only when
    that command runs or when help lists it.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module_name, attr = self.lazy[cmd_name].split(":")
            try:
                command = getattr(importlib.import_module(module_name), attr)
            except ModuleNotFoundError as exc:
                message = missing_extra_message(exc)
                if message is None:
                    raise
                extra = EXTRA_OF_MODULE[(exc.name or "").split(".")[0]]
                raise MissingExtraError(message, extra) from None
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands; one whose extra is missing says so instead of failing the help."""
        rows = []
        for name in self.list_commands(ctx):
            try:
                command = self.get_command(ctx, name)
            except MissingExtraError as exc:
                rows.append((name, f"(needs pip install 'servekit[{exc.extra}]')"))
                continue
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class ServekitGroup(LazyGroup):
    """The top-level group: lazy subcommands, and every error as one line on stderr."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        debug = "--debug" in sys.argv[1:]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:  # raised by a callback under standalone_mode
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("servekit: aborted", err=True)
            sys.exit(EXIT_INTERNAL)
        except click.ClickException as exc:
            click.echo(f"servekit: error: {click_message(exc)}", err=True)
            sys.exit(exc.exit_code)
        except ModuleNotFoundError as exc:
            message = missing_extra_message(exc)
            if message is None or debug:
                _unexpected(exc, debug)
            click.echo(f"servekit: error: {message}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except EXPECTED_ERRORS as exc:
            if debug:
                raise
            click.echo(f"servekit: error: {one_line(exc)}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except Exception as exc:
            _unexpected(exc, debug)
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        sys.exit(result if isinstance(result, int) else 0)


def _unexpected(exc: BaseException, debug: bool) -> None:
    if debug:
        raise exc
    click.echo(
        f"servekit: internal error: {type(exc).__name__}: {one_line(exc)} "
        "(run with --debug for the traceback)",
        err=True,
    )
    sys.exit(EXIT_INTERNAL)


def click_message(exc: click.ClickException) -> str:
    """A click error on one line: the message, and for a usage error where help is."""
    text = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (an OSError with its file name, as the shell).

    servekit's own messages hold the whole error on their first line (later lines only
    illustrate it, as a gate's caret under the column), so only that line is shown."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror.lower()}"
    elif isinstance(exc, ServekitError) and str(exc).strip():
        text = str(exc).strip().splitlines()[0]
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
