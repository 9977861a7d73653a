"""The HTTP status of each servekit error, with Triton's mapping."""

from __future__ import annotations

from servekit.errors import ForbiddenError, InvalidArgumentError, NotFoundError, UnavailableError

#: The body size limit by default (Triton's ``--http-max-input-size`` default).
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


def http_status(exc: BaseException) -> int:
    """400 invalid argument, 403 restricted API without its header, 404 unknown model or
    version, 503 unavailable (queue full and timeouts included), 500 anything else."""
    if isinstance(exc, InvalidArgumentError):
        return 400
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UnavailableError):
        return 503
    return 500
