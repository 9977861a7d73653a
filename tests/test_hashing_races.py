"""Hashing while another thread writes: buffers are hashed in one state, files never SIGBUS."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from servekit import _core, errors, hashing


def _flipping(buf: bytearray, states: list[bytes], stop: threading.Event) -> threading.Thread:
    """A thread that overwrites ``buf`` with each state in turn (one GIL-held memcpy each)."""

    def run() -> None:
        i = 0
        while not stop.is_set():
            buf[:] = states[i % 2]
            i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_bytearray_written_by_another_thread_hashes_as_one_of_its_states():
    size = 8 << 20
    states = [b"\x00" * size, b"\xff" * size]
    good = {hashing.digest_bytes(s) for s in states}
    buf = bytearray(states[0])
    stop = threading.Event()
    writer = _flipping(buf, states, stop)
    try:
        for _ in range(40):
            assert hashing.digest_bytes(buf) in good
            assert hashing.digest_bytes(memoryview(buf), "sha256") in {
                hashing.digest_bytes(s, "sha256") for s in states
            }
    finally:
        stop.set()
        writer.join()


def test_bytes_are_hashed_in_place_and_agree_with_a_copy():
    data = bytes(range(256)) * 4096
    assert hashing.digest_bytes(data) == hashing.digest_bytes(bytearray(data))


def test_drift_window_records_an_array_written_by_another_thread_in_one_state():
    rows = 1 << 18
    states = [np.zeros(rows).tobytes(), np.full(rows, 100.0).tobytes()]
    buf = bytearray(states[0])
    array = np.frombuffer(buf, dtype=np.float64).reshape(rows, 1)
    window = _core.DriftWindow([("cuts", [50.0])], [[0.5, 0.5]], 100)
    stop = threading.Event()
    writer = _flipping(buf, states, stop)
    try:
        for _ in range(20):
            window.clear()
            window.record(array)
            assert sorted(window.counts(0)) == [0, rows]
    finally:
        stop.set()
        writer.join()


TRUNCATING_WRITER = textwrap.dedent(
    """
    import sys, threading
    from servekit import hashing
    from servekit.errors import IntegrityError

    path = sys.argv[1]
    long = bytes(range(256)) * (96 << 12)           # 96 MiB
    short = long[: 1 << 20]                           # a prefix: any full read is of `long`
    good = {hashing.digest_bytes(long), hashing.digest_bytes(short)}
    open(path, "wb").write(long)
    stop = threading.Event()

    def truncate_and_refill():
        i = 0
        while not stop.is_set():
            with open(path, "r+b") as f:              # same inode: readers see every change
                f.truncate(len(short))
                if i % 2:
                    f.seek(len(short))
                    f.write(long[len(short):])
            i += 1

    writer = threading.Thread(target=truncate_and_refill)
    writer.start()
    changed = digests = 0
    try:
        for _ in range(300):
            try:
                assert hashing.digest_file(path) in good, "digest of no state of the file"
                digests += 1
            except IntegrityError as exc:
                assert "changed while it was being hashed" in str(exc), exc
                changed += 1
            if changed >= 3:
                break
    finally:
        stop.set()
        writer.join()
    print(f"changed={changed} digests={digests}")
    """
)


def test_a_file_truncated_while_hashed_raises_integrity_error_and_never_kills_the_process(
    tmp_path: Path,
):
    # In a child process: a memory-mapped hash of a truncated file dies of SIGBUS (-7).
    proc = subprocess.run(
        [sys.executable, "-c", TRUNCATING_WRITER, str(tmp_path / "model.bin")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    changed = int(proc.stdout.split("changed=")[1].split()[0])
    assert changed >= 1, proc.stdout


def test_exceptions_subclass_the_builtins_users_catch():
    pairs = {
        errors.InvalidArgumentError: ValueError,
        errors.UnsupportedModelError: ValueError,
        errors.NotFoundError: LookupError,
        errors.IntegrityError: ValueError,
        errors.StorageError: OSError,
        errors.RequestTimeoutError: TimeoutError,
        errors.InferenceError: RuntimeError,
    }
    for cls, builtin in pairs.items():
        assert issubclass(cls, builtin) and issubclass(cls, errors.ServekitError), cls
    with pytest.raises(LookupError, match="no such file") as caught:
        hashing.digest_file("/nonexistent/servekit-model")
    assert isinstance(caught.value, errors.NotFoundError)
    timeout = errors.RequestTimeoutError("Request timeout expired")
    assert str(timeout) == "Request timeout expired"
