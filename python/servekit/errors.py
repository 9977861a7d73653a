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
    QueueFullError,
    RequestTimeoutError,
    ServekitError,
    StorageError,
    UnavailableError,
)

__all__ = [
    "ConflictError",
    "InferenceError",
    "IntegrityError",
    "InvalidArgumentError",
    "NotFoundError",
    "QueueFullError",
    "RequestTimeoutError",
    "ServekitError",
    "StorageError",
    "UnavailableError",
]
