"""servekit's exception hierarchy.

Every error servekit raises on purpose is a :class:`ServekitError`. The classes are created by
the Rust core (so core errors arrive already typed) and re-exported here; catch them from this
module, never from ``servekit._core``.
"""

from servekit._core import (
    ConflictError,
    InferenceError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionFailedError,
    QueueFullError,
    RequestTimeoutError,
    ServekitError,
    StorageError,
    UnavailableError,
)


class UnimplementedError(ServekitError):
    """The request asks for a protocol feature servekit does not implement (Triton's
    UNSUPPORTED: HTTP 400, gRPC UNIMPLEMENTED); the message names it."""


class ForbiddenError(ServekitError):
    """The request is for a restricted API and lacks the header that opens it (HTTP 403,
    gRPC UNAVAILABLE, as Triton); the message names the header expected."""


class PackagingError(ServekitError):
    """Packaging a model failed (an export, a conversion or a training step went wrong)."""


class UnsupportedModelError(InvalidArgumentError):
    """The model, estimator or layer type is not supported; the message names it and the
    supported ones."""


class NotApplicableError(PackagingError):
    """A variant does not apply to this model; the message gives the reason."""


class ParityError(PackagingError):
    """A variant's outputs differ from its source's beyond the tolerance for its kind."""


__all__ = [
    "ConflictError",
    "ForbiddenError",
    "InferenceError",
    "IntegrityError",
    "InvalidArgumentError",
    "NotApplicableError",
    "NotFoundError",
    "PackagingError",
    "ParityError",
    "PreconditionFailedError",
    "QueueFullError",
    "RequestTimeoutError",
    "ServekitError",
    "StorageError",
    "UnavailableError",
    "UnimplementedError",
    "UnsupportedModelError",
]
