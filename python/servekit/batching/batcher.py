"""The Python face of the Rust dynamic batcher."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, overload

import numpy as np

from servekit import _core
from servekit.batching.policy import QueuePolicy
from servekit.errors import InvalidArgumentError

Arrays = dict[str, np.ndarray]


class Runner(Protocol):
    """A model executor: runs one batch whose arrays all have the batch dimension first and
    returns outputs with the same number of rows (an ONNX Runtime session wrapper, say).

    Each caller receives views of its rows of the returned arrays (no copy), so ``run`` must
    return arrays it does not reuse or modify afterwards; read-only outputs give read-only
    views."""

    def run(self, batch_inputs: Arrays) -> Arrays: ...


class RequestTiming(NamedTuple):
    """Where one request's time went, in nanoseconds, and the rows of the batch it ran in."""

    queue_ns: int
    compute_ns: int
    batch_size: int


class DynamicBatcher:
    """Batch concurrent requests to ``runner.run`` with Triton's dynamic batching rules.

    Requests are taken in priority then arrival order. A batch leaves at once when it reaches
    ``max_batch_size`` or one of ``preferred_batch_sizes``, when the next request would not fit
    or has different inputs, dtypes or non-batch dimensions (those are never batched together),
    or when its oldest request has waited ``max_queue_delay_us``; with a delay of 0 whatever is
    queued leaves as soon as one of the ``instances`` is free. Priority 1 is served first;
    requests without a priority use the last level, ``priority_levels``. Each level queues
    under its own :class:`QueuePolicy`: ``priority_queue_policy`` maps levels to policies,
    and every other level uses ``default_queue_policy`` (default: no bound, no timeout,
    REJECT).

    Each instance is a thread that calls ``runner.run`` with the interpreter attached only for
    that call, so runners that release it (ONNX Runtime) overlap. Raises InvalidArgumentError
    for a bad setting (a policy for a level outside 1..priority_levels, a negative size or
    timeout, an unknown timeout action) or a runner without ``run``.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        max_batch_size: int,
        max_queue_delay_us: int = 0,
        preferred_batch_sizes: tuple[int, ...] | list[int] = (),
        default_queue_policy: QueuePolicy | None = None,
        priority_queue_policy: Mapping[int, QueuePolicy] | None = None,
        priority_levels: int = 1,
        instances: int = 1,
    ) -> None:
        run = getattr(runner, "run", None)
        if not callable(run):
            raise InvalidArgumentError(
                f"runner must have a run(batch_inputs) method, got {type(runner).__name__}"
            )
        levels = priority_queue_policy or {}
        self._core = _core.Batcher(
            run,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            preferred_batch_sizes=list(preferred_batch_sizes),
            default_queue_policy=(default_queue_policy or QueuePolicy()).as_args(),
            priority_queue_policy=[(level, p.as_args()) for level, p in levels.items()],
            priority_levels=priority_levels,
            instances=instances,
        )
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _core.Mailbox] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._last: tuple[Callable[[], object], Any] = (_dead_ref, None)
        self._finalizer = weakref.finalize(self, _shutdown, self._core, self._mailboxes)

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _core.Mailbox:
        mailbox = self._mailboxes.get(loop)
        if mailbox is None:
            with self._lock:
                mailbox = self._mailboxes.get(loop)
                if mailbox is None:
                    mailbox = self._core.mailbox()
                    loop.add_reader(mailbox.fileno(), mailbox.deliver)
                    self._mailboxes[loop] = mailbox
        # One-entry cache for infer: a weak reference, so a finished loop is not kept alive.
        self._last = (weakref.ref(loop), mailbox)
        return mailbox

    @overload
    async def infer(
        self,
        inputs: Mapping[str, Any],
        *,
        priority: int | None = None,
        timeout_us: int | None = None,
        return_timing: Literal[False] = False,
    ) -> Arrays: ...

    @overload
    async def infer(
        self,
        inputs: Mapping[str, Any],
        *,
        priority: int | None = None,
        timeout_us: int | None = None,
        return_timing: Literal[True],
    ) -> tuple[Arrays, RequestTiming]: ...

    async def infer(
        self,
        inputs: Mapping[str, Any],
        *,
        priority: int | None = None,
        timeout_us: int | None = None,
        return_timing: bool = False,
    ) -> Arrays | tuple[Arrays, RequestTiming]:
        """Run one request (arrays with its rows first) through the next batch; return its rows
        of every output, and its RequestTiming when ``return_timing`` is set.

        The inputs are copied at once; the result resolves on the calling event loop. A
        cancelled caller's request leaves the queue if it has not started. ``timeout_us`` is
        the request's own queue timeout (None or 0: none), applied under its level's
        :class:`QueuePolicy`. Raises InvalidArgumentError (bad inputs,
        too many rows, bad priority), QueueFullError ("Exceeds maximum queue size"),
        RequestTimeoutError ("Request timeout expired"), InferenceError (the runner failed,
        with its message) or UnavailableError (the batcher is closed).
        """
        loop = _get_running_loop()
        last = self._last
        mailbox = last[1] if last[0]() is loop else self._mailbox(loop)
        pending = self._core.submit(
            inputs if type(inputs) is dict else _as_dict(inputs),
            mailbox,
            loop,
            priority or 0,
            timeout_us,
            return_timing,
        )
        try:
            result = await pending
        except asyncio.CancelledError:
            pending.cancel()  # a no-op when the task was cancelled through it
            raise
        if return_timing:
            outputs, timing = result
            return outputs, RequestTiming(*timing)
        return result

    def infer_sync(
        self,
        inputs: Mapping[str, Any],
        *,
        priority: int | None = None,
        timeout_us: int | None = None,
        return_timing: bool = False,
    ) -> Arrays | tuple[Arrays, RequestTiming]:
        """Blocking :meth:`infer` for threads without an event loop; waits with the interpreter
        released. Returns and raises like :meth:`infer`."""
        result = self._core.infer_sync(_as_dict(inputs), priority or 0, timeout_us, return_timing)
        if return_timing:
            outputs, timing = result
            return outputs, RequestTiming(*timing)
        return result

    def stats(self) -> dict[str, Any]:
        """Return the counters: ``success``, ``fail`` (model errors and requests failed by
        close), ``queue_full``, ``timeout`` (rejected on timeout), ``delayed`` (moved behind
        their level on timeout, DELAY), ``cancelled`` (requests); ``inference_count``
        (rows run) and ``execution_count`` (batches run); ``queue_ns`` and ``compute_ns`` (sums
        over executed requests of their queue time and their batch's compute time, as Triton's
        statistics extension counts them); ``queued`` (waiting now); ``batch_sizes``:
        ``{rows: {"count", "compute_ns"}}`` per executed batch size."""
        return self._core.stats()

    def close(self, *, drain: bool = True, timeout_s: float | None = 30.0) -> bool:
        """Stop taking requests (later ones raise UnavailableError). With ``drain`` the queued
        requests still run, without waiting for their delay; otherwise they fail with
        UnavailableError. Waits up to ``timeout_s`` (None: no limit) for running batches; after
        that the requests still queued fail and a stuck runner call is left to finish alone.
        Returns True when every instance finished. Safe to call again."""
        finished = self._core.close(drain, timeout_s)
        if finished:
            self._last = (_dead_ref, None)
            _unwatch(self._mailboxes)
        return finished

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_get_running_loop = asyncio.get_running_loop


def _dead_ref() -> None:
    return None


def _as_dict(inputs: Mapping[str, Any]) -> dict[str, Any]:
    if type(inputs) is dict:
        return inputs
    if not isinstance(inputs, Mapping):
        raise InvalidArgumentError(
            f"inputs must be a dict of input name to array, got {type(inputs).__name__}"
        )
    return dict(inputs)


def _unwatch(mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]) -> None:
    """Deliver what is left and stop watching each loop's mailbox, on that loop's thread."""
    for loop, mailbox in list(mailboxes.items()):
        del mailboxes[loop]
        if loop.is_closed():
            continue

        def finish(loop: asyncio.AbstractEventLoop = loop, mailbox: Any = mailbox) -> None:
            loop.remove_reader(mailbox.fileno())
            mailbox.deliver()

        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:  # the loop closed meanwhile
            continue


def _shutdown(core: Any, mailboxes: weakref.WeakKeyDictionary[Any, Any]) -> None:
    if core.close(False, 0.0):
        _unwatch(mailboxes)
