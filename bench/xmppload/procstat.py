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
from typing import Protocol

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


def cpu_busy_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) clock ticks since boot, from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat", "rb") as f:
        for line in f:
            if not line.startswith(b"cpu") or line[3:4] == b" ":
                continue
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(ticks)
            out[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return out


@dataclass(frozen=True, slots=True)
class CpuDelta:
    wall: float
    server_cpu: float
    generator_cpu: float
    # How busy the server's and the generator's CPUs were, whoever used them (NaN when not pinned).
    server_core_busy: float = float("nan")
    generator_core_busy: float = float("nan")
    # Two-server runs (PairCpuMeter): each server's own delta; server_cpu is their sum.
    parts: tuple[CpuDelta, ...] = ()

    @property
    def foreign_load(self) -> float:
        """CPU time on the server's core not spent by the server (other processes, softirq), in cores."""
        return self.server_core_busy - self.server_util

    @property
    def generator_foreign_load(self) -> float:
        return self.generator_core_busy - self.generator_util

    @property
    def server_util(self) -> float:
        return self.server_cpu / self.wall if self.wall > 0 else 0.0

    @property
    def generator_util(self) -> float:
        return self.generator_cpu / self.wall if self.wall > 0 else 0.0


class CpuMeter:
    """Server and generator CPU over one measured phase, and how busy the server's core was."""

    def __init__(self, server_pid: int, server_core: int = -1) -> None:
        self.server_pid = server_pid
        self.server_core = server_core
        mine = os.sched_getaffinity(0)
        self.generator_core = next(iter(mine)) if len(mine) == 1 else -1
        self._cores = cpu_busy_ticks()
        self._server = tree_cpu(server_pid)
        self._self = self_cpu()

    def stop(self) -> CpuDelta:
        server = tree_cpu(self.server_pid)
        me = self_cpu()
        cores = cpu_busy_ticks()

        def busy(core: int) -> float:
            if core < 0 or core not in cores or core not in self._cores:
                return float("nan")
            (b0, t0), (b1, t1) = self._cores[core], cores[core]
            return (b1 - b0) / (t1 - t0) if t1 > t0 else float("nan")

        return CpuDelta(
            server.wall - self._server.wall,
            server.cpu - self._server.cpu,
            me.cpu - self._self.cpu,
            busy(self.server_core),
            busy(self.generator_core),
        )


class Meter(Protocol):
    """What scenarios measure a phase with: :class:`CpuMeter` or :class:`PairCpuMeter`."""

    def stop(self) -> CpuDelta: ...


class PairCpuMeter:
    """Two servers' CPU summed (an s2s run: A and B, each pinned to its own CPU, the generator not).

    ``stop()`` gives one :class:`CpuDelta` with both servers' CPU; core busyness is NaN there (the
    unpinned generator shares both cores, so "foreign load" means nothing); each server's own delta
    is in its ``parts``.
    """

    def __init__(self, a: CpuMeter, b: CpuMeter) -> None:
        self.meters = (a, b)

    def stop(self) -> CpuDelta:
        a, b = (m.stop() for m in self.meters)
        return CpuDelta(a.wall, a.server_cpu + b.server_cpu, a.generator_cpu, parts=(a, b))


def tree_fds(root: int) -> int:
    """Open file descriptors, summed over the tree (sockets, database files, logs)."""
    total = 0
    for pid in process_tree(root):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total
