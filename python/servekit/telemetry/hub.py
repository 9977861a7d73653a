"""The telemetry of every served model version, its Prometheus collector and its timer."""

from __future__ import annotations

import logging
import threading

from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry

from servekit.errors import ConflictError, InvalidArgumentError, NotFoundError
from servekit.telemetry.metrics import TelemetryCollector
from servekit.telemetry.model import ModelTelemetry

LOGGER = logging.getLogger("servekit.telemetry")


class TelemetryHub:
    """Holds one :class:`ModelTelemetry` per (model, version); exposes them all through one
    Prometheus collector and, when started, evaluates them every ``interval_s`` seconds on a
    background thread so that alerts fire without a scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], ModelTelemetry] = {}
        self.collector = TelemetryCollector(self.all)
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def add(self, telemetry: ModelTelemetry) -> None:
        """Start exposing ``telemetry``; ConflictError when its (model, version) is present."""
        with self._lock:
            if telemetry.key in self._models:
                raise ConflictError(f"telemetry of {'/'.join(telemetry.key)} already exists")
            self._models[telemetry.key] = telemetry

    def remove(self, model: str, version: str) -> ModelTelemetry:
        """Stop exposing a model version and return its telemetry; NotFoundError if absent."""
        with self._lock:
            try:
                return self._models.pop((model, version))
            except KeyError:
                raise NotFoundError(f"no telemetry for {model}/{version}") from None

    def get(self, model: str, version: str) -> ModelTelemetry:
        """The telemetry of a model version; NotFoundError if absent."""
        with self._lock:
            try:
                return self._models[(model, version)]
            except KeyError:
                raise NotFoundError(f"no telemetry for {model}/{version}") from None

    def all(self) -> list[ModelTelemetry]:
        """Every model version's telemetry, in insertion order."""
        with self._lock:
            return list(self._models.values())

    def register(self, registry: CollectorRegistry = REGISTRY) -> None:
        """Add the hub's collector to a Prometheus registry."""
        registry.register(self.collector)

    def start(self, interval_s: float = 10.0) -> None:
        """Evaluate every model version every ``interval_s`` seconds until :meth:`stop`."""
        if interval_s <= 0:
            raise InvalidArgumentError(f"interval_s must be > 0, got {interval_s}")
        if self._timer is not None:
            raise ConflictError("the telemetry timer is already running")
        self._stop.clear()
        self._timer = threading.Thread(
            target=self._run, args=(interval_s,), name="servekit-telemetry", daemon=True
        )
        self._timer.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            for tel in self.all():
                try:
                    tel.evaluate()
                except Exception:  # the timer must outlive one model's failure
                    LOGGER.exception("telemetry evaluation of %s/%s failed", *tel.key)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the timer thread (no-op when it is not running)."""
        if self._timer is None:
            return
        self._stop.set()
        self._timer.join(timeout_s)
        self._timer = None
