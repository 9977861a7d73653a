"""One served model version: request validation against its configuration, scheduling, stats.

Scheduling follows Triton: a model without ``dynamic_batching`` runs each request on its own
(up to ``instance_group`` count requests at once, each on a worker thread so the event loop stays
free); a model with it goes through servekit's Rust dynamic batcher, configured from the
``dynamic_batching`` block (preferred sizes, max queue delay, priority levels, the default
queue policy and per-level ones) with one batcher instance per model instance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servekit.batching import DynamicBatcher, QueuePolicy
from servekit.errors import (
    InvalidArgumentError,
    QueueFullError,
    RequestTimeoutError,
    ServekitError,
    UnavailableError,
)
from servekit.serving.codecs import InferRequest
from servekit.serving.config import ModelConfig, instance_count, signature_of
from servekit.serving.runners import Runner
from servekit.serving.stats import ModelStats
from servekit.serving.triton_proto import model_config_pb2 as mc

if TYPE_CHECKING:
    from servekit.serving.telemetry import ModelProbe

_now = time.perf_counter_ns
log = logging.getLogger(__name__)

#: The batcher queue bound of a priority level whose queue policy sets no max_queue_size
#: (Triton's 0, unlimited): past it a request is refused at once with "Exceeds maximum queue
#: size".
DEFAULT_MAX_QUEUE_SIZE = 1024


def run_on_idle_cpu(what: str) -> None:
    """Move the calling thread to Linux's SCHED_IDLE class: it runs only on CPU time no other
    thread wants. Logs that ``what`` keeps its priority where the OS refuses."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted
        log.warning("%s keeps its CPU priority: %s", what, exc)


class _TimedRunner:
    """Wraps a runner to record each execution (batch size, compute time) in the stats.

    ``background``: run on CPU time nobody else wants. The model's own execution threads (its
    batcher's instances or its thread pool, never shared with another model) move to Linux's
    SCHED_IDLE class on their first batch, so a shadow copy's compute never delays
    production's; under load its queue fills and copies are dropped and counted instead.
    ONNX Runtime's intra-op threads beyond the calling one keep their priority.
    """

    def __init__(self, runner: Runner, stats: ModelStats, batched: bool) -> None:
        self._runner = runner
        self._stats = stats
        self._batched = batched
        self.background = False
        self._idle = threading.local()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.background and not getattr(self._idle, "done", False):
            self._idle.done = True
            run_on_idle_cpu("background model thread")
        rows = next(iter(inputs.values())).shape[0] if self._batched else 1
        start = _now()
        outputs = self._runner.run(inputs)
        self._stats.record_execution(rows, _now() - start)
        return outputs

    def terminate(self) -> None:
        stop = getattr(self._runner, "terminate", None)
        if stop is not None:
            stop()


class ServedModel:
    """A loaded model version ready to infer.

    ``reference_profile_path``: the version's own reference profile, set by whoever built it
    (None: none found); ``telemetry``: its probe once the server's telemetry attached one
    (None: telemetry off), called once per successful request.
    """

    def __init__(self, name: str, version: int, config: ModelConfig, runner: Runner) -> None:
        """Wrap ``runner`` under ``config`` (an unset max_queue_size of a dynamic_batching queue
        policy is set to :data:`DEFAULT_MAX_QUEUE_SIZE` in it); raises InvalidArgumentError for
        a bad config."""
        self.name = name
        self.version = version
        self.config = config
        self.signature = signature_of(config)
        self.stats = ModelStats()
        self.reference_profile_path: Path | None = None
        self.telemetry: ModelProbe | None = None
        self.max_batch_size = config.max_batch_size
        self.instances = instance_count(config)
        self._specs = {t.name: t for t in self.signature.inputs}
        self._required = [t.name for t in config.input if not t.optional]
        self.output_names = [t.name for t in self.signature.outputs]
        # Triton's reshape: requests use dims, the model sees reshape.shape.
        self._in_reshape = {
            t.name: tuple(t.reshape.shape) for t in config.input if t.HasField("reshape")
        }
        self._out_reshape = {t.name: tuple(t.dims) for t in config.output if t.HasField("reshape")}
        self._runner = _TimedRunner(runner, self.stats, self.max_batch_size > 0)
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: DynamicBatcher | None = None
        if config.HasField("dynamic_batching"):
            db = config.dynamic_batching
            self._batcher = DynamicBatcher(
                self._runner,
                max_batch_size=config.max_batch_size,
                max_queue_delay_us=db.max_queue_delay_microseconds,
                preferred_batch_sizes=list(db.preferred_batch_size),
                default_queue_policy=_queue_policy(db.default_queue_policy),
                priority_queue_policy={
                    level: _queue_policy(policy)
                    for level, policy in db.priority_queue_policy.items()
                },
                priority_levels=max(db.priority_levels, 1),
                instances=self.instances,
            )
            self._default_priority = db.default_priority_level or None
        else:
            self._executor = ThreadPoolExecutor(
                self.instances, thread_name_prefix=f"servekit-{name}-{version}"
            )
        self._closed = False

    def run_in_background(self) -> None:
        """Run this model's batches only on CPU time nobody else wants (a shadow's copies: see
        ``_TimedRunner``)."""
        self._runner.background = True

    def metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata (inputs and outputs with full shapes)."""
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": self.config.platform or self.config.backend,
            "inputs": [t.to_dict() for t in self.signature.inputs],
            "outputs": [t.to_dict() for t in self.signature.outputs],
        }

    def validate(self, request: InferRequest) -> int:
        """Check a request against the configuration; return its batch size (1 if unbatched).

        Raises InvalidArgumentError naming the input or output at fault.
        """
        where = f"model '{self.name}'"
        for name, arr in request.inputs.items():
            spec = self._specs.get(name)
            if spec is None:
                raise InvalidArgumentError(
                    f"unexpected inference input '{name}' for {where}, expected one of "
                    f"{list(self._specs)}"
                )
            if request.datatypes[name] != spec.datatype:
                raise InvalidArgumentError(
                    f"input '{name}' has datatype {request.datatypes[name]}, but {where} "
                    f"expects {spec.datatype}"
                )
            if len(arr.shape) != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, arr.shape, strict=True)
            ):
                raise InvalidArgumentError(
                    f"input '{name}' has shape {list(arr.shape)}, but {where} expects "
                    f"{list(spec.shape)}"
                )
        for name in self._required:
            if name not in request.inputs:
                raise InvalidArgumentError(f"{where} needs input '{name}', which is missing")
        if request.outputs is not None:
            seen: set[str] = set()
            for out in request.outputs:
                if out.name in seen:
                    raise InvalidArgumentError(f"output '{out.name}' already exists in request")
                seen.add(out.name)
                if out.name not in self.output_names:
                    raise InvalidArgumentError(
                        f"unknown output '{out.name}' for {where}, expected one of "
                        f"{self.output_names}"
                    )
        if self.max_batch_size == 0:
            return 1
        sizes = {arr.shape[0] for arr in request.inputs.values()}
        if len(sizes) != 1:
            raise InvalidArgumentError(f"the inputs of {where} disagree on the batch size: {sizes}")
        batch = sizes.pop()
        if batch > self.max_batch_size:
            raise InvalidArgumentError(
                f"batch size {batch} exceeds the max_batch_size {self.max_batch_size} of {where}"
            )
        return batch

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        """Validate and run a request; return every output by name.

        Raises InvalidArgumentError for a request that does not fit the model, UnavailableError
        when the model is closed, RequestTimeoutError when the request's ``timeout`` ran out
        before it started, InferenceError when the model fails.
        """
        start = _now()
        self.stats.pending += 1
        try:
            rows, inputs = self._prepare(request)
            if self._batcher is not None:
                outputs, timing = await self._batcher.infer(
                    inputs,
                    priority=request.priority or self._default_priority,
                    timeout_us=request.timeout_us,
                    return_timing=True,
                )
                queue_ns, compute_ns = timing.queue_ns, timing.compute_ns
                self.stats.record_queue(queue_ns)
            else:
                assert self._executor is not None
                loop = asyncio.get_running_loop()
                outputs, queue_ns, compute_ns = await loop.run_in_executor(
                    self._executor, self._run, inputs, start, request.timeout_us
                )
        except ServekitError as exc:
            self.stats.record_failure(_now() - start, _failure_reason(exc))
            raise
        finally:
            self.stats.pending -= 1
        return self._finish(request, rows, outputs, start, queue_ns, compute_ns)

    def infer_blocking(self, request: InferRequest) -> dict[str, np.ndarray]:
        """:meth:`infer` for a thread without an event loop (a shadow's worker), with the same
        checks, statistics and telemetry: through the batcher (waiting with the interpreter
        released), or on the calling thread for a model without dynamic batching. Raises what
        :meth:`infer` raises."""
        start = _now()
        self.stats.pending += 1
        try:
            rows, inputs = self._prepare(request)
            if self._batcher is not None:
                outputs, timing = self._batcher.infer_sync(
                    inputs,
                    priority=request.priority or self._default_priority,
                    timeout_us=request.timeout_us,
                    return_timing=True,
                )
                queue_ns, compute_ns = timing.queue_ns, timing.compute_ns
                self.stats.record_queue(queue_ns)
            else:
                outputs, queue_ns, compute_ns = self._run(inputs, start, request.timeout_us)
        except ServekitError as exc:
            self.stats.record_failure(_now() - start, _failure_reason(exc))
            raise
        finally:
            self.stats.pending -= 1
        return self._finish(request, rows, outputs, start, queue_ns, compute_ns)

    def _prepare(self, request: InferRequest) -> tuple[int, dict[str, np.ndarray]]:
        # The request's rows and its inputs as the model takes them (config reshapes applied).
        rows = self.validate(request)
        if self._closed:
            raise UnavailableError(f"model '{self.name}' version {self.version} is unloading")
        if not self._in_reshape:
            return rows, request.inputs
        lead = (rows,) if self.max_batch_size > 0 else ()
        return rows, {
            n: a.reshape((*lead, *self._in_reshape[n])) if n in self._in_reshape else a
            for n, a in request.inputs.items()
        }

    def _finish(
        self,
        request: InferRequest,
        rows: int,
        outputs: dict[str, np.ndarray],
        start: int,
        queue_ns: int,
        compute_ns: int,
    ) -> dict[str, np.ndarray]:
        # Outputs back to their config dims; the success counted and observed.
        lead = (rows,) if self.max_batch_size > 0 else ()
        for n, dims in self._out_reshape.items():
            outputs[n] = outputs[n].reshape((*lead, *dims))
        total_ns = _now() - start
        self.stats.record_success(total_ns, rows)
        probe = self.telemetry
        if probe is not None:
            probe.observe(request.inputs, outputs, total_ns, queue_ns, compute_ns)
        return outputs

    def _run(
        self, inputs: dict[str, np.ndarray], enqueued: int, timeout_us: int | None
    ) -> tuple[dict[str, np.ndarray], int, int]:
        # On a worker thread: the wait for a free instance is this request's queue time.
        # Returns the outputs, the queue time and the compute time (ns).
        started = _now()
        waited = started - enqueued
        self.stats.record_queue(waited)
        if timeout_us and waited > timeout_us * 1000:
            raise RequestTimeoutError("Request timeout expired")
        outputs = self._runner.run(inputs)
        return outputs, waited, _now() - started

    async def close(self, timeout_s: float = 30.0, *, abort: bool = False) -> None:
        """Refuse new requests and let the queued and running ones finish (the batcher's
        drain is bounded by ``timeout_s``). With ``abort`` the queued requests fail and the
        running ones are stopped where the runner can (ONNX Runtime's terminate flag)."""
        self._closed = True
        if abort:
            self._runner.terminate()
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.close, drain=not abort, timeout_s=timeout_s)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=abort)


def _queue_policy(policy: mc.ModelQueuePolicy) -> QueuePolicy:
    """The batcher's form of a config's queue policy. An unset ``max_queue_size`` (Triton's 0,
    unlimited) becomes :data:`DEFAULT_MAX_QUEUE_SIZE`, set in ``policy`` too so the served
    config says so."""
    if policy.max_queue_size == 0:
        policy.max_queue_size = DEFAULT_MAX_QUEUE_SIZE
    return QueuePolicy(
        max_queue_size=policy.max_queue_size,
        default_timeout_us=policy.default_timeout_microseconds,
        allow_timeout_override=policy.allow_timeout_override,
        timeout_action="DELAY" if policy.timeout_action == policy.DELAY else "REJECT",
    )


def _failure_reason(exc: ServekitError) -> str:
    """Triton's ``nv_inference_request_failure`` reason label of an error."""
    if isinstance(exc, QueueFullError | RequestTimeoutError):
        return "REJECTED"
    if isinstance(exc, InvalidArgumentError):
        return "OTHER"
    return "BACKEND"
