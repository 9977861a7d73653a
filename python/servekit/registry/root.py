"""Where a registry lives: an explicit directory, else ``$SERVEKIT_HOME``, else ``~/.servekit``."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the default registry root.
HOME_ENV = "SERVEKIT_HOME"


def default_root() -> Path:
    """Return ``$SERVEKIT_HOME`` when set and non-empty, else ``~/.servekit``."""
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / ".servekit"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """Return ``root`` as a Path, or :func:`default_root` when it is None."""
    return Path(root) if root is not None else default_root()
