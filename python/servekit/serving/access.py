"""Restricted APIs: which protocol group a request belongs to, and whether it may run.

This follows Triton's ``--http-restricted-api`` / ``--grpc-restricted-protocol`` feature, with
Triton's vocabulary, so a Triton user needs nothing new:

* The API groups are Triton's: ``health``, ``metadata``, ``inference``, ``shared-memory``,
  ``model-config``, ``model-repository``, ``statistics``, ``trace``, ``logging``; servekit adds
  ``metrics`` for its ``/metrics`` route (Triton serves metrics on a separate port).
* A restriction is written ``API[,API...]:KEY=VALUE`` (the flag is repeatable, one key per
  flag). A request to a restricted group must carry the header (HTTP) or metadata entry (gRPC)
  ``KEY`` with the value ``VALUE``; the value is compared in constant time
  (:func:`hmac.compare_digest`), the key case-insensitively (HTTP header names are, and gRPC
  metadata keys are lower case on the wire). An unknown group, a group named twice (in one
  flag or across flags), an empty key or a missing ``=`` is refused by :meth:`RestrictedApis.parse`
  with an :class:`~servekit.errors.InvalidArgumentError` that says which.
* A refused request raises :class:`~servekit.errors.ForbiddenError` with Triton's message,
  ``This API is restricted, expecting header 'KEY'``. The HTTP adapter answers 403 (as Triton);
  a gRPC adapter answers ``UNAVAILABLE`` (as Triton's gRPC front end does).

How a front end uses it (the check takes a group and a header lookup, never a framework
request, so REST, gRPC and the dashboard share it unchanged)::

    restricted = RestrictedApis.parse(["model-repository:admin-key=s3cret"])
    group = http_api_group("POST", "/v2/repository/models/m/load")   # or grpc_api_group(...)
    restricted.check(group, header_lookup(scope["headers"]))        # raises ForbiddenError

``header_lookup`` accepts ASGI raw headers (bytes pairs) and gRPC invocation metadata (str
pairs). A request whose route belongs to no group (an unknown route) is not checked: it gets
the adapter's ordinary 404. A front end with routes of its own (the dashboard) maps each of
them to the group whose data it shows before calling :meth:`RestrictedApis.check`.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from servekit.errors import ForbiddenError, InvalidArgumentError


class ApiGroup(StrEnum):
    """Triton's restricted API groups, plus ``metrics``."""

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    SHARED_MEMORY = "shared-memory"
    MODEL_CONFIG = "model-config"
    MODEL_REPOSITORY = "model-repository"
    STATISTICS = "statistics"
    TRACE = "trace"
    LOGGING = "logging"
    METRICS = "metrics"


#: Every group name, in the order ``--help`` and error messages list them.
GROUP_NAMES = [g.value for g in ApiGroup]

#: A header/metadata lookup: the value of a (lower-case) key, or None when it is absent.
HeaderLookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Restriction:
    """The header a restricted group requires: ``key`` as the user wrote it, and its value."""

    key: str
    value: str

    def allows(self, lookup: HeaderLookup) -> bool:
        """True when ``lookup`` has the key with exactly this value (constant-time compare)."""
        given = lookup(self.key.lower())
        if given is None:
            return False
        return hmac.compare_digest(given.encode(), self.value.encode())


class RestrictedApis:
    """The restrictions of a server: at most one :class:`Restriction` per :class:`ApiGroup`."""

    def __init__(self, restrictions: Mapping[ApiGroup, Restriction] | None = None) -> None:
        self._restrictions: dict[ApiGroup, Restriction] = dict(restrictions or {})

    @classmethod
    def parse(cls, specs: Iterable[str], flag: str = "--http-restricted-api") -> RestrictedApis:
        """Parse ``--http-restricted-api`` values (or those of ``flag``, e.g.
        ``--grpc-restricted-protocol``), each ``API[,API...]:KEY=VALUE``.

        Returns the restrictions (none for no specs). Raises InvalidArgumentError naming the
        spec and the problem: no ``:`` or ``=``, an empty key or group, an unknown group, or a
        group given twice.
        """
        restrictions: dict[ApiGroup, Restriction] = {}
        for spec in specs:
            apis, sep, header = spec.partition(":")
            key, eq, value = header.partition("=")
            if not sep or not eq:
                raise InvalidArgumentError(f"{flag} {spec!r}: expected API[,API...]:KEY=VALUE")
            key = key.strip()
            if not key or not _HEADER_NAME.fullmatch(key):
                raise InvalidArgumentError(
                    f"{flag} {spec!r}: the header name {key!r} is not a valid HTTP header name"
                )
            restriction = Restriction(key, value)
            for name in (a.strip() for a in apis.split(",")):
                group = _group(name, spec, flag)
                if group in restrictions:
                    raise InvalidArgumentError(
                        f"{flag} {spec!r}: API '{name}' is restricted more "
                        "than once (each API takes one key)"
                    )
                restrictions[group] = restriction
        return cls(restrictions)

    def __bool__(self) -> bool:
        return bool(self._restrictions)

    def restriction(self, group: ApiGroup) -> Restriction | None:
        """The restriction of ``group``, or None when it is open."""
        return self._restrictions.get(group)

    def check(self, group: ApiGroup | None, lookup: HeaderLookup) -> None:
        """Allow or refuse a request of ``group`` whose headers ``lookup`` reads.

        Returns None when the group is open (or None: a route of no group) or the header
        matches. Raises ForbiddenError("This API is restricted, expecting header 'KEY'")
        otherwise.
        """
        if group is None:
            return
        restriction = self._restrictions.get(group)
        if restriction is not None and not restriction.allows(lookup):
            raise ForbiddenError(f"This API is restricted, expecting header '{restriction.key}'")


def header_lookup(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> HeaderLookup:
    """A lookup over header pairs: ASGI raw headers (bytes) or gRPC metadata (str).

    Keys compare case-insensitively; the first value of a repeated key wins. Values that are
    not UTF-8 read as absent (a token is text). The headers are read at the first lookup, so a
    request to an open API reads none (2-4 us a request on the tiny model's hot path).
    """
    table: dict[str, str | None] | None = None

    def lookup(name: str) -> str | None:
        nonlocal table
        if table is None:
            table = _header_table(pairs)
        return table.get(name)

    return lookup


def _header_table(pairs: Iterable[tuple[str | bytes, str | bytes]]) -> dict[str, str | None]:
    table: dict[str, str | None] = {}
    for key, value in pairs:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        name = name.lower()
        if name in table:
            continue
        if isinstance(value, bytes):
            try:
                table[name] = value.decode()
            except UnicodeDecodeError:
                table[name] = None
        else:
            table[name] = value
    return table


def _group(name: str, spec: str, flag: str) -> ApiGroup:
    try:
        return ApiGroup(name)
    except ValueError:
        raise InvalidArgumentError(
            f"{flag} {spec!r}: unknown API '{name}' (expected one of {', '.join(GROUP_NAMES)})"
        ) from None


# RFC 9110 token characters: what a header name (and a gRPC metadata key) may hold.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_MODEL = r"/v2/models/[^/]+(?:/versions/[^/]+)?"

# (method, path pattern, group), first match wins. Methods "*" match any. Triton's mapping
# (http_server.cc) for its routes; servekit's own routes join the group whose data they show.
_HTTP_ROUTES: list[tuple[str, re.Pattern[str], ApiGroup]] = [
    (m, re.compile(p), g)
    for m, p, g in [
        ("*", r"/v2/health/(?:live|ready)", ApiGroup.HEALTH),
        ("*", r"/v2/models/stats", ApiGroup.STATISTICS),
        ("*", _MODEL + r"/stats", ApiGroup.STATISTICS),
        ("*", _MODEL + r"/drift", ApiGroup.STATISTICS),  # servekit: drift is a statistic
        ("*", _MODEL + r"/candidates", ApiGroup.STATISTICS),  # servekit: shadow/canary figures
        ("*", _MODEL + r"/ready", ApiGroup.HEALTH),
        ("*", _MODEL + r"/(?:infer|generate|generate_stream)", ApiGroup.INFERENCE),
        ("*", _MODEL + r"/config", ApiGroup.MODEL_CONFIG),
        ("*", _MODEL + r"/trace/setting", ApiGroup.TRACE),
        ("*", _MODEL, ApiGroup.METADATA),
        ("*", r"/v2", ApiGroup.METADATA),
        ("*", r"/v2/openapi\.json", ApiGroup.METADATA),  # servekit: the API's description
        ("*", r"/v2/repository(?:/.*)?", ApiGroup.MODEL_REPOSITORY),
        ("*", r"/v2/(?:system|cuda)sharedmemory(?:/.*)?", ApiGroup.SHARED_MEMORY),
        ("*", r"/v2/trace/setting", ApiGroup.TRACE),
        ("*", r"/v2/logging", ApiGroup.LOGGING),
        ("*", r"/metrics", ApiGroup.METRICS),
    ]
]


@functools.lru_cache(maxsize=4096)
def http_api_group(method: str, path: str) -> ApiGroup | None:
    """The API group of an HTTP request (``path`` without the query string), or None for a
    route of no group (it is not checked; the adapter answers 404 for an unknown one).

    Cached: a server sees few distinct paths, and matching the route table took 7-10 us a
    request, more than decoding the tiny model's request."""
    path = path.rstrip("/") or "/"
    for route_method, pattern, group in _HTTP_ROUTES:
        if (route_method == "*" or route_method == method) and pattern.fullmatch(path):
            return group
    return None


#: The group of each KServe v2 / Triton gRPC method (``inference.GRPCInferenceService``), as
#: Triton's grpc_server.cc assigns them.
GRPC_METHOD_GROUPS: dict[str, ApiGroup] = {
    "ServerLive": ApiGroup.HEALTH,
    "ServerReady": ApiGroup.HEALTH,
    "ModelReady": ApiGroup.HEALTH,
    "ServerMetadata": ApiGroup.METADATA,
    "ModelMetadata": ApiGroup.METADATA,
    "ModelInfer": ApiGroup.INFERENCE,
    "ModelStreamInfer": ApiGroup.INFERENCE,
    "ModelConfig": ApiGroup.MODEL_CONFIG,
    "ModelStatistics": ApiGroup.STATISTICS,
    "RepositoryIndex": ApiGroup.MODEL_REPOSITORY,
    "RepositoryModelLoad": ApiGroup.MODEL_REPOSITORY,
    "RepositoryModelUnload": ApiGroup.MODEL_REPOSITORY,
    "SystemSharedMemoryStatus": ApiGroup.SHARED_MEMORY,
    "SystemSharedMemoryRegister": ApiGroup.SHARED_MEMORY,
    "SystemSharedMemoryUnregister": ApiGroup.SHARED_MEMORY,
    "CudaSharedMemoryStatus": ApiGroup.SHARED_MEMORY,
    "CudaSharedMemoryRegister": ApiGroup.SHARED_MEMORY,
    "CudaSharedMemoryUnregister": ApiGroup.SHARED_MEMORY,
    "TraceSetting": ApiGroup.TRACE,
    "LogSettings": ApiGroup.LOGGING,
}


def grpc_api_group(method: str) -> ApiGroup | None:
    """The API group of a gRPC method, given as ``ModelInfer`` or as the full
    ``/inference.GRPCInferenceService/ModelInfer``; None for a method of no group."""
    return GRPC_METHOD_GROUPS.get(method.rsplit("/", 1)[-1])
