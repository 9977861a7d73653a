"""Processes and their CPU time, read from Linux's /proc (for the benchmarks' CPU columns)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

TICK = 100.0  # clock ticks per second of /proc/PID/stat (Linux default)


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, argv)`` of every process that can be read now."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:  # gone, or not ours to read
                continue


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_s_of(match: Callable[[list[bytes]], bool]) -> float:
    """CPU seconds so far of the processes whose argv ``match`` accepts, added up."""
    return sum(cpu_s(pid) for pid, argv in command_lines() if match(argv))


def busy_cores() -> float:
    """CPU seconds the whole machine has spent busy so far (all cores, every process): the
    first line of /proc/stat, less its idle and iowait columns."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK
