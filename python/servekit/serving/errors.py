"""The HTTP status of each servekit error, with Triton's mapping."""

from __future__ import annotations

import logging
import uuid

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


log = logging.getLogger("servekit.serving")


def internal_error_message(exc: BaseException) -> str:
    """Log an unexpected exception with its traceback under a new request id; return the
    message for the client, which names the id and nothing of the exception (its text can
    hold paths, values or code)."""
    request_id = uuid.uuid4().hex
    log.error("internal error, request id %s", request_id, exc_info=exc)
    return f"internal error (request id {request_id}; the server log has the details)"
