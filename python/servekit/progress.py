"""Progress bars: on stderr, and only when stderr is a terminal.

Every long loop in servekit (training epochs, calibration batches, benchmark rounds) takes a
``progress`` flag. A bar is drawn only when that flag is true *and* stderr is a terminal, so
piped or logged output never holds bar fragments; stdout is left to results.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def bars_shown(progress: bool) -> bool:
    """Whether a bar is drawn: ``progress`` is true and stderr is a terminal."""
    return progress and sys.stderr.isatty()


def progress_bar(
    iterable: Iterable[T] | None = None, *, progress: bool, desc: str, total: int | None = None
) -> Any:
    """A tqdm bar over ``iterable`` (or counting to ``total``) on stderr, disabled unless
    :func:`bars_shown`; it leaves no line behind when done."""
    # Imported here: tqdm comes with the stages that draw bars (package, bench), and a
    # command of another stage must be able to import this module without it.
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=not bars_shown(progress),
        leave=False,
        file=sys.stderr,
    )
