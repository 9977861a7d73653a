"""Dynamic batcher: batch formation, ordering, errors, cancellation, close and a stress run."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from servekit.batching import DynamicBatcher, QueuePolicy, RequestTiming
from servekit.errors import (
    InferenceError,
    InvalidArgumentError,
    QueueFullError,
    RequestTimeoutError,
    UnavailableError,
)


class Recorder:
    """Returns ``y = 2 * x`` and records each batch as the list of first-column values. With
    ``gated``, each batch waits for one ``release()`` so requests can pile up meanwhile."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[float]] = []
        self.started = threading.Semaphore(0)
        self._gate = threading.Semaphore(0) if gated else None
        self.fail_on: float | None = None

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = batch["x"]
        self.started.release()
        if self._gate is not None:
            assert self._gate.acquire(timeout=10), "test never released the batch"
        self.batches.append(x[:, 0].tolist())
        if self.fail_on is not None and self.fail_on in x[:, 0]:
            raise ValueError(f"model exploded on {self.fail_on}")
        return {"y": x * 2, "rows": np.arange(len(x))}

    def release(self, n: int = 1) -> None:
        assert self._gate is not None
        for _ in range(n):
            self._gate.release()

    def wait_started(self) -> None:
        assert self.started.acquire(timeout=10), "no batch started"


def req(tag: float, rows: int = 1, cols: int = 3) -> dict[str, np.ndarray]:
    x = np.full((rows, cols), tag, dtype=np.float32)
    x[:, 1] = np.arange(rows)
    return {"x": x}


async def queued(batcher: DynamicBatcher, n: int) -> None:
    """Yield to the loop until the batcher holds ``n`` queued requests."""
    for _ in range(10_000):
        if batcher.stats()["queued"] == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {n} queued, got {batcher.stats()['queued']}")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_requests_queued_while_the_model_runs_form_one_batch():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(rec, max_batch_size=8) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.sleep(0)
            await asyncio.to_thread(rec.wait_started)
            rest = [asyncio.ensure_future(b.infer(req(t))) for t in (1, 2, 3)]
            await queued(b, 3)
            rec.release(2)
            outs = await asyncio.gather(first, *rest)
            assert [o["y"][0, 0] for o in outs] == [0, 2, 4, 6]
            assert rec.batches == [[0], [1, 2, 3]]
            stats = b.stats()
            assert stats["execution_count"] == 2 and stats["inference_count"] == 4
            assert stats["batch_sizes"][3]["count"] == 1

    run(main())


def test_delay_lets_a_batch_fill_and_a_lone_request_still_leaves():
    rec = Recorder()

    async def main():
        with DynamicBatcher(rec, max_batch_size=8, max_queue_delay_us=50_000) as b:
            outs = await asyncio.gather(*(b.infer(req(t)) for t in range(5)))
            assert [o["y"][0, 0] for o in outs] == [0, 2, 4, 6, 8]
            out, timing = await b.infer(req(9), return_timing=True)
            assert out["y"][0, 0] == 18
            assert isinstance(timing, RequestTiming)
            assert timing.queue_ns >= 50_000_000 and timing.batch_size == 1
        assert rec.batches == [[0, 1, 2, 3, 4], [9]]

    run(main())


def test_full_batch_and_preferred_size_leave_without_waiting_the_delay():
    # A 60 s delay: only the size rules can send these batches before the test times out.
    async def main(rec: Recorder, preferred: list[int], requests: list[dict]) -> None:
        with DynamicBatcher(
            rec, max_batch_size=4, max_queue_delay_us=60_000_000, preferred_batch_sizes=preferred
        ) as b:
            await asyncio.gather(*(b.infer(r) for r in requests))

    full = Recorder()
    run(main(full, [], [req(5, rows=3), req(6)]))
    assert full.batches == [[5, 5, 5, 6]]
    preferred = Recorder()
    run(main(preferred, [2], [req(0), req(1)]))
    assert preferred.batches == [[0, 1]]


def test_request_that_would_overflow_starts_the_next_batch():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(rec, max_batch_size=4) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            rest = [asyncio.ensure_future(b.infer(req(t, rows=2))) for t in (1, 2, 3)]
            await queued(b, 3)
            rec.release(3)
            await asyncio.gather(first, *rest)
        assert rec.batches == [[0], [1, 1, 2, 2], [3, 3]]

    run(main())


def test_unequal_shapes_and_dtypes_are_never_batched_together():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(rec, max_batch_size=16) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            wide = asyncio.ensure_future(b.infer(req(1, cols=4)))
            narrow = [asyncio.ensure_future(b.infer(req(t))) for t in (2, 3)]
            f64 = asyncio.ensure_future(b.infer({"x": np.full((1, 3), 4.0)}))
            await queued(b, 4)
            rec.release(4)
            outs = await asyncio.gather(first, wide, *narrow, f64)
            assert outs[1]["y"].shape == (1, 4)
            assert outs[4]["y"].dtype == np.float64
        assert rec.batches == [[0], [1], [2, 3], [4]]

    run(main())


def test_each_caller_gets_exactly_its_rows_across_multi_row_requests():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(rec, max_batch_size=10) as b:
            first = asyncio.ensure_future(b.infer(req(100)))
            await asyncio.to_thread(rec.wait_started)
            sizes = [3, 1, 4, 2]
            tasks = [asyncio.ensure_future(b.infer(req(t, rows=n))) for t, n in enumerate(sizes)]
            await queued(b, 4)
            rec.release(2)
            await first
            for t, (n, out) in enumerate(zip(sizes, await asyncio.gather(*tasks), strict=True)):
                expected = req(t, rows=n)["x"] * 2
                np.testing.assert_array_equal(out["y"], expected)
                assert out["rows"].tolist() == list(range(sum(sizes[:t]), sum(sizes[: t + 1])))
        assert rec.batches[1] == [0, 0, 0, 1, 2, 2, 2, 2, 3, 3]

    run(main())


def test_priority_one_is_served_first():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(rec, max_batch_size=2, priority_levels=2) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            tasks = [
                asyncio.ensure_future(b.infer(req(t), priority=p))
                for t, p in [(1, None), (2, 2), (3, 1), (4, 1)]
            ]
            await queued(b, 4)
            rec.release(3)
            await asyncio.gather(first, *tasks)
        assert rec.batches == [[0], [3, 4], [1, 2]]

    run(main())


def test_queue_full_and_timeout_fail_with_tritons_messages():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(
            rec, max_batch_size=1, default_queue_policy=QueuePolicy(max_queue_size=1)
        ) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            waiting = asyncio.ensure_future(b.infer(req(1), timeout_us=20_000))
            await queued(b, 1)
            with pytest.raises(QueueFullError, match="Exceeds maximum queue size"):
                await b.infer(req(2))
            with pytest.raises(RequestTimeoutError, match="Request timeout expired"):
                await waiting
            rec.release()
            await first
            stats = b.stats()
            assert (stats["queue_full"], stats["timeout"], stats["success"]) == (1, 1, 1)

    run(main())


def test_default_timeout_applies_to_threads_too():
    rec = Recorder(gated=True)
    policy = QueuePolicy(default_timeout_us=20_000)
    with DynamicBatcher(rec, max_batch_size=1, default_queue_policy=policy) as b:
        t = threading.Thread(target=b.infer_sync, args=(req(0),))
        t.start()
        rec.wait_started()
        with pytest.raises(RequestTimeoutError, match="Request timeout expired"):
            b.infer_sync(req(1))
        rec.release()
        t.join(10)


async def counted(batcher: DynamicBatcher, key: str, n: int) -> None:
    """Yield to the loop until the batcher's ``key`` counter reaches ``n`` (bounded)."""
    deadline = time.monotonic() + 10
    while batcher.stats()[key] < n:
        assert time.monotonic() < deadline, f"{key} never reached {n}: {batcher.stats()}"
        await asyncio.sleep(0)


def test_a_timed_out_delay_request_runs_after_its_level_and_before_lower_levels():
    rec = Recorder(gated=True)
    delay = QueuePolicy(timeout_action="DELAY")

    async def main():
        with DynamicBatcher(
            rec,
            max_batch_size=1,
            priority_levels=2,
            default_queue_policy=delay,
            priority_queue_policy={1: delay},
        ) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            low = asyncio.ensure_future(b.infer(req(1), priority=2))
            late = asyncio.ensure_future(b.infer(req(2), priority=1, timeout_us=1000))
            await counted(b, "delayed", 1)
            high = asyncio.ensure_future(b.infer(req(3), priority=1))
            await queued(b, 3)
            rec.release(4)
            outs = await asyncio.gather(first, low, late, high)
            assert [o["y"][0, 0] for o in outs] == [0, 2, 4, 6], "every request ran"
            assert (b.stats()["timeout"], b.stats()["delayed"]) == (0, 1)
        assert rec.batches == [[0], [3], [2], [1]]

    run(main())


def test_each_level_queues_under_its_own_policy():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(
            rec,
            max_batch_size=1,
            priority_levels=2,
            default_queue_policy=QueuePolicy(max_queue_size=2),
            priority_queue_policy={1: QueuePolicy(max_queue_size=1, default_timeout_us=1000)},
        ) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            kept = [asyncio.ensure_future(b.infer(req(t))) for t in (1, 2)]
            await queued(b, 2)
            with pytest.raises(QueueFullError, match="Exceeds maximum queue size"):
                await b.infer(req(3))
            # Level 1 has room for one, and its own 1 ms timeout rejects it.
            with pytest.raises(RequestTimeoutError, match="Request timeout expired"):
                await b.infer(req(4), priority=1)
            rec.release(3)
            await asyncio.gather(first, *kept)
        assert rec.batches == [[0], [1], [2]]

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"priority_queue_policy": {3: QueuePolicy()}}, "priority level 3 is out of range"),
        ({"priority_queue_policy": {0: QueuePolicy()}}, "priority level 0 is out of range"),
        (
            {"default_queue_policy": QueuePolicy(timeout_action="LATER")},  # type: ignore[arg-type]
            "timeout_action must be REJECT or DELAY",
        ),
        ({"default_queue_policy": QueuePolicy(max_queue_size=-1)}, "max_queue_size"),
        ({"priority_queue_policy": {1: QueuePolicy(default_timeout_us=-1)}}, "default_timeout_us"),
    ],
)
def test_bad_queue_policies_are_refused(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        DynamicBatcher(Recorder(), max_batch_size=4, priority_levels=2, **kwargs)


def test_cancelled_task_leaves_the_queue():
    rec = Recorder(gated=True)

    async def main():
        with DynamicBatcher(rec, max_batch_size=4) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            doomed = asyncio.ensure_future(b.infer(req(1)))
            kept = asyncio.ensure_future(b.infer(req(2)))
            await queued(b, 2)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert b.stats()["queued"] == 1 and b.stats()["cancelled"] == 1
            rec.release(2)
            await asyncio.gather(first, kept)
        assert rec.batches == [[0], [2]]

    run(main())


def test_wait_for_timeout_and_a_cancel_while_running_and_successive_loops():
    rec = Recorder(gated=True)

    async def main(b: DynamicBatcher) -> None:
        running = asyncio.ensure_future(b.infer(req(0)))
        await asyncio.to_thread(rec.wait_started)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.infer(req(1)), timeout=0.01)
        assert b.stats()["queued"] == 0 and b.stats()["cancelled"] == 1
        running.cancel()  # its batch already runs: the caller stops waiting, the batch goes on
        with pytest.raises(asyncio.CancelledError):
            await running
        rec.release(2)
        out = await asyncio.shield(b.infer(req(2)))
        np.testing.assert_array_equal(out["y"], req(2)["x"] * 2)

    with DynamicBatcher(rec, max_batch_size=4) as b:
        run(main(b))
        # A second event loop gets its own mailbox; the first one's is no longer used.
        rec.release()
        assert run(b.infer(req(5)))["y"][0, 0] == 10.0
    assert rec.batches == [[0], [2], [5]]


def test_failing_batch_fails_exactly_its_requests_and_the_next_batch_succeeds():
    rec = Recorder(gated=True)
    rec.fail_on = 66.0

    async def main():
        with DynamicBatcher(rec, max_batch_size=8) as b:
            first = asyncio.ensure_future(b.infer(req(0)))
            await asyncio.to_thread(rec.wait_started)
            bad = [asyncio.ensure_future(b.infer(req(t))) for t in (1, 66, 3)]
            await queued(b, 3)
            rec.release(2)
            assert (await first)["y"][0, 0] == 0
            for task in bad:
                with pytest.raises(InferenceError, match="ValueError: model exploded on 66"):
                    await task
            rec.release()
            assert (await b.infer(req(4)))["y"][0, 0] == 8
            assert b.stats()["fail"] == 3

    run(main())


def test_awaiting_under_a_tracer_uses_the_iterator_protocol():
    """Debuggers and coverage tools trace frames; CPython then resumes awaits through
    ``__next__`` instead of the fast send slot: results and errors must be the same."""
    import sys

    rec = Recorder()
    rec.fail_on = 9.0

    async def main(b: DynamicBatcher) -> None:
        out = await b.infer(req(4))
        np.testing.assert_array_equal(out["y"], req(4)["x"] * 2)
        with pytest.raises(InferenceError, match=r"model exploded on 9\.0"):
            await b.infer(req(9))

    def tracer(frame, event, arg):
        return tracer

    with DynamicBatcher(rec, max_batch_size=4) as b:
        sys.settrace(tracer)
        try:
            run(main(b))
        finally:
            sys.settrace(None)


def test_results_are_views_of_the_runner_output_and_keep_its_write_protection():
    class ReadOnly:
        def run(self, batch):
            x = batch["x"]
            frozen = np.frombuffer((x * 3).tobytes(), dtype=x.dtype).reshape(x.shape)
            return {"y": frozen, "w": x + 1}

    with DynamicBatcher(ReadOnly(), max_batch_size=8) as b:
        out = b.infer_sync(req(2, rows=3))
    np.testing.assert_array_equal(out["y"], req(2, rows=3)["x"] * 3)
    assert not out["y"].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        out["y"][0, 0] = 1
    out["w"][0, 0] = 7  # a writable output stays writable
    assert out["w"][0, 0] == 7


def test_runner_output_with_wrong_rows_is_an_inference_error():
    class Bad:
        def run(self, batch):
            return {"y": np.zeros((len(batch["x"]) + 1, 2))}

    with (
        DynamicBatcher(Bad(), max_batch_size=4) as b,
        pytest.raises(InferenceError, match=r"output 'y' has 2 rows for a batch of 1 rows"),
    ):
        b.infer_sync(req(0))

    class NotDict:
        def run(self, batch):
            return [batch["x"]]

    with (
        DynamicBatcher(NotDict(), max_batch_size=4) as b,
        pytest.raises(InferenceError, match="must return a dict"),
    ):
        b.infer_sync(req(0))


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        (req(0, rows=5), {}, "5 rows"),
        ({"x": np.zeros((2, 3)), "z": np.zeros((3, 1))}, {}, "input 'z' has 3 rows"),
        ({"x": np.float32(1.0)}, {}, "0-d"),
        ({"x": np.array([[1.5]], dtype=object)}, {}, "element 0 is <class 'float'>, not bytes"),
        ({}, {}, "at least one input"),
        (req(0), {"priority": 3}, "priority 3"),
        (req(0), {"priority": -1}, "priority -1"),
        (req(0), {"timeout_us": -5}, "timeout_us"),
        ([1, 2], {}, "dict"),
    ],
)
def test_bad_requests_raise_invalid_argument_and_the_batcher_keeps_serving(inputs, kwargs, message):
    with DynamicBatcher(Recorder(), max_batch_size=4, priority_levels=2) as b:
        with pytest.raises(InvalidArgumentError, match=message):
            b.infer_sync(inputs, **kwargs)
        assert b.infer_sync(req(1))["y"][0, 0] == 2


def test_non_contiguous_and_list_inputs_are_accepted():
    with DynamicBatcher(Recorder(), max_batch_size=4) as b:
        x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
        np.testing.assert_array_equal(b.infer_sync({"x": x})["y"], x * 2)
        np.testing.assert_array_equal(b.infer_sync({"x": [[1.0, 2.0]]})["y"], [[2.0, 4.0]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 4, "preferred_batch_sizes": [8]}, "preferred batch size 8"),
        ({"max_batch_size": 4, "instances": 0}, "instances"),
        ({"max_batch_size": 4, "max_queue_delay_us": -1}, "max_queue_delay_us"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        DynamicBatcher(Recorder(), **kwargs)


def test_runner_without_run_is_refused():
    with pytest.raises(InvalidArgumentError, match="run"):
        DynamicBatcher(object(), max_batch_size=4)  # type: ignore[arg-type]


def test_close_with_requests_in_flight_returns_and_fails_or_drains():
    rec = Recorder(gated=True)

    async def main(drain: bool):
        b = DynamicBatcher(rec, max_batch_size=1)
        first = asyncio.ensure_future(b.infer(req(0)))
        await asyncio.to_thread(rec.wait_started)
        second = asyncio.ensure_future(b.infer(req(1)))
        await queued(b, 1)
        # The running batch is stuck: close gives up after its timeout and fails the queue.
        assert await asyncio.to_thread(b.close, drain=drain, timeout_s=0.05) is False
        with pytest.raises(UnavailableError, match="closed"):
            await second
        with pytest.raises(UnavailableError, match="closed"):
            await b.infer(req(2))
        rec.release()
        assert (await first)["y"][0, 0] == 0

    run(main(True))
    run(main(False))


def test_close_drains_queued_requests_without_waiting_for_the_delay():
    async def main():
        b = DynamicBatcher(Recorder(), max_batch_size=8, max_queue_delay_us=60_000_000)
        tasks = [asyncio.ensure_future(b.infer(req(t))) for t in range(3)]
        await queued(b, 3)
        assert await asyncio.to_thread(b.close, drain=True) is True
        assert [o["y"][0, 0] for o in await asyncio.gather(*tasks)] == [0, 2, 4]
        assert b.close() is True

    run(main())


def test_thousands_of_requests_from_tasks_and_threads_get_their_own_results():
    class Echo:
        def run(self, batch):
            return {"y": batch["x"] + 1.0}

    n_tasks, n_threads, per = 32, 8, 50
    b = DynamicBatcher(Echo(), max_batch_size=32, max_queue_delay_us=200, instances=2)
    errors: list[str] = []

    def thread_body(t: int) -> None:
        for i in range(per):
            tag = 1000.0 * (n_tasks + t) + i
            out = b.infer_sync({"x": np.full((1 + i % 3, 2), tag)})
            if not (out["y"] == tag + 1).all() or len(out["y"]) != 1 + i % 3:
                errors.append(f"thread {t} request {i}")

    async def task_body(t: int) -> None:
        for i in range(per):
            tag = 1000.0 * t + i
            out = await b.infer({"x": np.full((1 + i % 2, 2), tag)})
            if not (out["y"] == tag + 1).all() or len(out["y"]) != 1 + i % 2:
                errors.append(f"task {t} request {i}")

    async def main():
        threads = [threading.Thread(target=thread_body, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        await asyncio.gather(*(task_body(t) for t in range(n_tasks)))
        for t in threads:
            await asyncio.to_thread(t.join, 30)

    start = time.monotonic()
    run(main())
    assert errors == []
    stats = b.stats()
    assert stats["success"] == (n_tasks + n_threads) * per == 2000
    assert stats["execution_count"] < stats["success"], "concurrent requests were batched"
    assert sum(v["count"] for v in stats["batch_sizes"].values()) == stats["execution_count"]
    assert b.close() is True
    assert time.monotonic() - start < 120


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_onnx_runtime_mlp_batched_results_match_direct_calls():
    ort = pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0).fit(X, y)
    onx = to_onnx(model, X[:1], options={"zipmap": False})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onx.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    class OrtRunner:
        def run(self, batch):
            names = [o.name for o in sess.get_outputs()]
            return dict(zip(names, sess.run(names, batch), strict=True))

    expected = sess.run(["probabilities"], {"X": X[:64]})[0]

    async def main():
        with DynamicBatcher(OrtRunner(), max_batch_size=16, instances=2) as b:
            outs = await asyncio.gather(*(b.infer({"X": X[i : i + 1]}) for i in range(64)))
            got = np.concatenate([o["probabilities"] for o in outs])
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
            assert [int(o["label"][0]) for o in outs] == model.predict(X[:64]).tolist()
            assert b.stats()["execution_count"] < 64

    run(main())
