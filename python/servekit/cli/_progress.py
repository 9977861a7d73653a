"""The ``--progress/--no-progress`` option every long-running command takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def progress_option(fn: F) -> F:
    """Add ``--progress/--no-progress`` (default on) to a command: progress messages and bars
    on stderr; bars are drawn only when stderr is a terminal (see :mod:`servekit.progress`)."""
    return click.option(
        "--progress/--no-progress",
        default=True,
        show_default=True,
        help="Progress on stderr (bars only when stderr is a terminal).",
    )(fn)
