"""CPU time and memory of a server's process tree, read from /proc (Linux only).

A process tree because ejabberd's beam has helpers (erl_child_setup, inet_gethost) and a server may
fork workers. Each live process contributes its own utime+stime plus cutime+cstime (the children it
has already reaped), so nothing is counted twice and nothing that exited is lost.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].decode().split()
    return rest  # rest[0] is field 3 (state)


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    cpu: float  # seconds of user+system CPU


def tree_cpu(root: int) -> CpuSample:
    total = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # fields 14-17 of /proc/PID/stat: utime stime cutime cstime (rest[11..14])
        total += sum(int(x) for x in fields[11:15])
    return CpuSample(time.perf_counter(), total / _TICK)


def tree_rss(root: int) -> int:
    """Resident set size in bytes, summed over the tree."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


def self_cpu() -> CpuSample:
    """The generator's own CPU, to show when it (rather than the server) is the bottleneck."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSample(time.perf_counter(), r.ru_utime + r.ru_stime)


@dataclass(frozen=True, slots=True)
class CpuDelta:
    wall: float
    server_cpu: float
    generator_cpu: float

    @property
    def server_util(self) -> float:
        return self.server_cpu / self.wall if self.wall > 0 else 0.0

    @property
    def generator_util(self) -> float:
        return self.generator_cpu / self.wall if self.wall > 0 else 0.0


class CpuMeter:
    """Server and generator CPU over one measured phase."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._server = tree_cpu(server_pid)
        self._self = self_cpu()

    def stop(self) -> CpuDelta:
        server = tree_cpu(self.server_pid)
        me = self_cpu()
        return CpuDelta(
            server.wall - self._server.wall, server.cpu - self._server.cpu, me.cpu - self._self.cpu
        )
