"""Triton's system shared-memory extension: named regions of POSIX shared memory objects that
same-host clients register, then name in requests instead of sending tensor bytes.

A region is ``(name, key, offset, byte_size)``: ``byte_size`` bytes of the shared memory object
``key`` (``/dev/shm/<key>``, what ``shm_open`` and tritonclient's
``tritonclient.utils.shared_memory`` create) from ``offset``. Every read and write is checked
against the region's bounds. Inputs are copied out of a region when the request is decoded, so
a client rewriting a region cannot change a request in flight.

Invariant: a region's mapping stays valid while anything holds the :class:`Region`; the
registry only drops its reference at unregistration, so a request that looked a region up
before it was unregistered still reads and writes a live mapping (unmapped when the last
reference goes), never freed memory.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servekit.errors import InvalidArgumentError, NotFoundError

#: Where Linux exposes POSIX shared memory objects.
SHM_ROOT = Path("/dev/shm")


@dataclass(frozen=True)
class Region:
    """A registered region and its mapping of the whole shared memory object."""

    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap

    def status(self) -> dict[str, Any]:
        """Triton's status entry of the region."""
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }

    def _span(self, offset: int, size: int, what: str) -> tuple[int, int]:
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidArgumentError(
                f"{what}: offset {offset} + byte size {size} is outside shared memory region "
                f"'{self.name}' of {self.byte_size} bytes"
            )
        start = self.offset + offset
        return start, start + size

    def read(self, offset: int, size: int, what: str) -> bytes:
        """A copy of ``size`` bytes at ``offset`` within the region; InvalidArgumentError when
        they are outside it."""
        start, end = self._span(offset, size, what)
        return self.mapping[start:end]

    def write(self, offset: int, size: int, data: bytes, what: str) -> None:
        """Write ``data`` into the ``size`` bytes at ``offset``; InvalidArgumentError when they
        are outside the region or ``data`` does not fit in ``size``."""
        start, _ = self._span(offset, size, what)
        if len(data) > size:
            raise InvalidArgumentError(
                f"{what}: shared memory size specified with the request ({size} bytes) should "
                f"be at least {len(data)} bytes to hold the results"
            )
        self.mapping[start : start + len(data)] = data


class SharedMemoryRegistry:
    """The server's registered regions by name (thread-safe)."""

    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: object, offset: object, byte_size: object) -> Region:
        """Map ``byte_size`` bytes of shared memory object ``key`` from ``offset`` as region
        ``name``; return it.

        Raises InvalidArgumentError for an empty name, a name already registered, a key that
        names no shared memory object (or one outside /dev/shm), non-integer or negative
        offsets and sizes, or a span past the end of the object.
        """
        if not name:
            raise InvalidArgumentError("a shared memory region needs a name")
        if not isinstance(key, str) or not key.strip("/"):
            raise InvalidArgumentError("shared memory 'key' must be a non-empty string")
        for field, value in (("offset", offset), ("byte_size", byte_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(
                    f"shared memory '{field}' must be a non-negative integer"
                )
        assert isinstance(offset, int) and isinstance(byte_size, int)
        path = SHM_ROOT / key.lstrip("/")
        if path.parent != SHM_ROOT:
            raise InvalidArgumentError(f"shared memory key '{key}' must not hold a '/' inside")
        with self._lock:
            if name in self._regions:
                raise InvalidArgumentError(f"shared memory region '{name}' already in manager")
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError as exc:
                raise InvalidArgumentError(
                    f"Unable to open shared memory region: '{key}': {exc.strerror}"
                ) from None
            try:
                size = os.fstat(fd).st_size
                if offset + byte_size > size or byte_size == 0:
                    raise InvalidArgumentError(
                        f"shared memory region '{name}': offset {offset} + byte_size "
                        f"{byte_size} does not fit in the {size} bytes of '{key}'"
                    )
                mapping = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            region = Region(name, key, offset, byte_size, mapping)
            self._regions[name] = region
            return region

    def unregister(self, name: str | None = None) -> None:
        """Forget region ``name`` (None or "": every region). Unknown names are ignored, as
        Triton does. Requests already holding a region finish with it (see the invariant)."""
        with self._lock:
            if name:
                self._regions.pop(name, None)
            else:
                self._regions.clear()

    def get(self, name: str) -> Region:
        """The region ``name``; InvalidArgumentError when none is registered (a request that
        names it is at fault)."""
        with self._lock:
            region = self._regions.get(name)
        if region is None:
            raise InvalidArgumentError(f"Unable to find system shared memory region: '{name}'")
        return region

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Status entries of every region, or of ``name`` (NotFoundError if unregistered)."""
        with self._lock:
            regions = dict(self._regions)
        if name:
            if name not in regions:
                raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
            return [regions[name].status()]
        return [r.status() for _, r in sorted(regions.items())]


def shm_reference(params: dict[str, Any], what: str) -> tuple[str, int, int] | None:
    """The ``(region, offset, byte_size)`` a tensor's parameters name, or None when they name
    no region. InvalidArgumentError for a region without a byte size or bad types."""
    region = params.get("shared_memory_region")
    if region is None:
        if any(k.startswith("shared_memory") for k in params):
            raise InvalidArgumentError(f"{what}: shared memory parameters without a region")
        return None
    size = params.get("shared_memory_byte_size")
    offset = params.get("shared_memory_offset", 0)
    if not isinstance(region, str) or not region:
        raise InvalidArgumentError(f"{what}: 'shared_memory_region' must be a string")
    for field, value in (("shared_memory_byte_size", size), ("shared_memory_offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgumentError(f"{what}: '{field}' must be a non-negative integer")
    assert isinstance(size, int) and isinstance(offset, int)
    return region, offset, size
