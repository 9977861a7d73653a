"""What a Ray deployment of servekit is made of, as plain data: what every replica serves
(:class:`ReplicaSpec`) and how many replicas run (:class:`ScaleOptions`).

Both convert to and from the JSON-ready mapping a Ray Serve config file carries as the
application's ``args`` (``servekit serve --ray --print-config`` writes it), so a deployed config
and ``servekit serve --ray`` build the same application.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from servekit.errors import InvalidArgumentError
from servekit.serving.codecs import DEFAULT_MAX_JSON_DEPTH
from servekit.serving.errors import DEFAULT_MAX_BODY_BYTES

#: Requests Ray lets into one replica at once. Ray's default (5) would cap every dynamic batch
#: at 5 rows: the batcher only sees the requests the replica has been given.
DEFAULT_MAX_ONGOING_REQUESTS = 256
#: Ongoing requests per replica the autoscaler aims for: half the default max_batch_size, so a
#: replica is added while its batches are still half full rather than once it queues.
DEFAULT_TARGET_ONGOING_REQUESTS = 32


@dataclass
class ReplicaSpec:
    """What each replica serves: a model repository and/or registry references (every replica
    opens the same paths: on a cluster they must be on a shared file system) and the serving
    settings of ``servekit serve``. ``telemetry`` holds :class:`TelemetryOptions` fields."""

    model_repo: str | None = None
    registry: str | None = None
    models: list[str] = field(default_factory=list)
    poll_interval: float = 2.0
    max_batch_size: int = 64
    device: str = "cpu"
    threads: int = 1
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    telemetry: dict[str, Any] | None = field(default_factory=dict)
    #: Seconds in-flight requests get to finish when a replica stops (Ray's
    #: graceful_shutdown_timeout_s, then the data plane's drain).
    drain_timeout_s: float = 10.0
    #: Address each replica's own HTTP listener binds (per-replica scrapes, and how the
    #: answering replica gathers the others' metrics and drift windows). None: the node's IP
    #: as Ray knows it.
    replica_host: str | None = None

    def validate(self) -> None:
        """Raises InvalidArgumentError naming the first bad field."""
        if self.model_repo is None and not self.models:
            raise InvalidArgumentError("give a model repository, registry models, or both")
        if self.registry is not None and not self.models:
            raise InvalidArgumentError("a registry needs at least one model NAME@ALIAS")
        if not self.poll_interval > 0:
            raise InvalidArgumentError(f"poll_interval must be > 0, got {self.poll_interval}")
        if not self.drain_timeout_s > 0:
            raise InvalidArgumentError(f"drain_timeout_s must be > 0, got {self.drain_timeout_s}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (a Serve config's ``args.replica``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplicaSpec:
        """Read :meth:`to_dict`'s form; InvalidArgumentError for an unknown field."""
        return cls(**_known(cls, data, "replica"))


_AUTOSCALE = re.compile(r"^(\d+):(\d+)$")


@dataclass
class ScaleOptions:
    """How many replicas run: ``replicas`` fixed, or ``autoscale`` ``(min, max)`` driven by Ray
    Serve's ``target_ongoing_requests``; ``max_ongoing_requests`` per replica (see
    :data:`DEFAULT_MAX_ONGOING_REQUESTS`); ``replica_cpus``: CPUs Ray reserves per replica
    (its scheduler places no more replicas on a node than its CPUs allow)."""

    replicas: int | None = 1
    autoscale: tuple[int, int] | None = None
    target_ongoing_requests: float = DEFAULT_TARGET_ONGOING_REQUESTS
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    replica_cpus: float = 1.0

    def validate(self) -> None:
        """Raises InvalidArgumentError naming the first bad setting."""
        if (self.replicas is None) == (self.autoscale is None):
            raise InvalidArgumentError("give a number of replicas or an autoscale range, not both")
        if self.replicas is not None and self.replicas < 1:
            raise InvalidArgumentError(f"--replicas must be >= 1, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise InvalidArgumentError(
                    f"--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}"
                )
        if not self.target_ongoing_requests > 0:
            raise InvalidArgumentError(
                f"target_ongoing_requests must be > 0, got {self.target_ongoing_requests}"
            )
        if self.max_ongoing_requests < 1:
            raise InvalidArgumentError(
                f"max_ongoing_requests must be >= 1, got {self.max_ongoing_requests}"
            )
        if self.replica_cpus < 0:
            raise InvalidArgumentError(f"replica_cpus must be >= 0, got {self.replica_cpus}")

    def deployment_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Deployment.options`` these settings mean."""
        self.validate()
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.replica_cpus},
        }
        if self.autoscale is not None:
            low, high = self.autoscale
            options["autoscaling_config"] = {
                "min_replicas": low,
                "initial_replicas": max(low, 1),
                "max_replicas": high,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            options["num_replicas"] = self.replicas
        return options

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (a Serve config's ``args.scale``)."""
        data = dataclasses.asdict(self)
        data["autoscale"] = list(self.autoscale) if self.autoscale is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScaleOptions:
        """Read :meth:`to_dict`'s form; InvalidArgumentError for an unknown field."""
        known = _known(cls, data, "scale")
        if known.get("autoscale") is not None:
            low, high = known["autoscale"]
            known["autoscale"] = (int(low), int(high))
        return cls(**known)


def parse_autoscale(value: str) -> tuple[int, int]:
    """``"MIN:MAX"`` as two integers; InvalidArgumentError otherwise."""
    match = _AUTOSCALE.match(value.strip())
    if match is None:
        raise InvalidArgumentError(f"--autoscale {value!r}: expected MIN:MAX, e.g. 1:4")
    return int(match[1]), int(match[2])


def _known(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"args.{what} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InvalidArgumentError(
            f"unknown args.{what} field(s) {unknown}; known: {sorted(names)}"
        )
    return dict(data)
