"""Error handling shared by every servekit command."""

from __future__ import annotations

import sys
from typing import Any

import click

from servekit.errors import ServekitError

#: Exit status for bad input (a typed servekit error), as for click's own usage errors.
EXIT_BAD_INPUT = 2


class ServekitGroup(click.Group):
    """A click group whose commands report a ServekitError as one line on stderr, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ServekitError as exc:
            click.echo(f"servekit: error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
