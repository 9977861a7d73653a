"""The gRPC status of each servekit error, with Triton's mapping."""

from __future__ import annotations

import grpc

from servekit.errors import (
    ForbiddenError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)

#: What a client sees for an unexpected error (the details go to the server log).
INTERNAL_MESSAGE = "internal error (see the server log)"


def grpc_status(exc: BaseException) -> grpc.StatusCode:
    """INVALID_ARGUMENT, NOT_FOUND (unknown model or version), UNAVAILABLE (not ready, queue
    full, timeout, draining, and a restricted protocol without its key, as Triton),
    UNIMPLEMENTED, INTERNAL for anything else."""
    if isinstance(exc, InvalidArgumentError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, UnavailableError | ForbiddenError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, UnimplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    return grpc.StatusCode.INTERNAL
