"""Path safety: a name taken from a request or a configuration never leaves its directory.

Every file name a config.pbtxt or a load request supplies (``default_model_filename``, the
model name of a load, warm-up data files) must be one plain path component: not empty, not
``.`` or ``..``, no ``/`` or ``\\``, no NUL byte. And what a name finally opens, symlinks
followed, must lie inside the model repository: a link pointing elsewhere is refused. Both
checks raise :class:`~servekit.errors.InvalidArgumentError` naming the field, at load time.
"""

from __future__ import annotations

from pathlib import Path

from servekit.errors import InvalidArgumentError


def plain_component(value: str, field: str) -> str:
    """Return ``value`` when it is one plain path component; raise InvalidArgumentError
    naming ``field`` otherwise."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise InvalidArgumentError(
            f"{field} {value!r} must be one plain file name (no '/', '\\\\', '..' or NUL byte)"
        )
    return value


def contained(path: Path, root: Path, field: str) -> Path:
    """``path`` with every symlink resolved, when that lies inside ``root`` (resolved too);
    InvalidArgumentError naming ``field`` when it leads outside."""
    resolved = path.resolve()
    base = root.resolve()
    if not resolved.is_relative_to(base):
        raise InvalidArgumentError(
            f"{field}: {path} leads to {resolved}, outside the model repository {base}"
        )
    return resolved
