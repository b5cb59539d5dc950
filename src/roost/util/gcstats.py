"""How long Python's cyclic garbage collector stops the event loop, per generation.

A collection runs inside whatever allocation triggered it, so every session waits for it. The figures
are gathered by a ``gc.callbacks`` hook (two clock reads per collection) into :data:`STATS`, which
logs slow ones at debug and which a metrics exporter can read (:meth:`GcStats.snapshot`).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from roost.util.latency import LatencyStats

log = logging.getLogger("roost.gc")


@dataclass(slots=True)
class GenerationStats:
    """Totals for collections of one generation (a collection of generation 2 is a full one)."""

    collections: int = 0
    pause_seconds: float = 0.0
    max_pause_seconds: float = 0.0
    #: CPU time of the longest collection: unlike the wall-clock pause, not stretched when the
    #: process is descheduled mid-collection (a busy machine), so it tells the collector's own work.
    max_cpu_seconds: float = 0.0
    collected: int = 0  # unreachable objects found (reference cycles) and freed
    uncollectable: int = 0
    #: Every pause, in buckets (the ``roost_gc_pause_seconds`` histogram of ``/metrics``).
    pauses: LatencyStats = field(default_factory=LatencyStats)


@dataclass(slots=True)
class GcStats:
    """Accumulated pause figures; install once per process with :meth:`install`."""

    generations: list[GenerationStats] = field(default_factory=lambda: [GenerationStats() for _ in range(3)])
    #: Pauses at or above this are logged at debug (full collections always are).
    log_over_seconds: float = 0.005
    last_pause_seconds: float = 0.0
    #: Objects moved into the frozen generation by roost.core.gc_policy (a running total: frozen
    #: objects that die later are not subtracted). Counted here because ``gc.get_freeze_count()`` walks
    #: the whole frozen list: ~800,000 objects scattered over the heap at 10,000 sessions, and reading
    #: it periodically stalled the loop by ~200 ms each time.
    frozen: int = 0
    #: Times the C heap's free pages were handed back (roost.core.gc_policy), and the longest.
    malloc_trims: int = 0
    malloc_trim_max_seconds: float = 0.0
    #: The latest periodic collections (roost.core.gc_policy) that took longer than its target:
    #: (CPU ms, objects unfrozen before it, survivors frozen, seconds since the previous).
    slow_periodic: deque[tuple[float, int, int, float]] = field(default_factory=lambda: deque(maxlen=32))
    _started: float = 0.0
    _started_cpu: float = 0.0
    _installed: bool = False

    def install(self) -> None:
        """Start measuring (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_cpu = time.thread_time()
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        cpu = time.thread_time() - self._started_cpu
        generation = info["generation"]
        g = self.generations[generation]
        g.collections += 1
        g.pause_seconds += pause
        if pause > g.max_pause_seconds:
            g.max_pause_seconds = pause
        if cpu > g.max_cpu_seconds:
            g.max_cpu_seconds = cpu
        g.collected += info["collected"]
        g.uncollectable += info["uncollectable"]
        g.pauses.observe(pause)
        self.last_pause_seconds = pause
        if (generation == 2 or pause >= self.log_over_seconds) and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "gc generation %d: %.1f ms (%.1f ms CPU), %d unreachable objects freed, %d uncollectable",
                generation,
                pause * 1000,
                cpu * 1000,
                info["collected"],
                info["uncollectable"],
            )

    def trimmed(self, seconds: float) -> None:
        self.malloc_trims += 1
        self.malloc_trim_max_seconds = max(self.malloc_trim_max_seconds, seconds)
        log.debug("malloc_trim: %.1f ms", seconds * 1000)

    @property
    def max_pause_seconds(self) -> float:
        return max(g.max_pause_seconds for g in self.generations)

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers for logs and metrics."""
        return {
            "max_pause_ms": self.max_pause_seconds * 1000,
            "frozen_objects": self.frozen,
            "malloc_trims": self.malloc_trims,
            "malloc_trim_max_ms": self.malloc_trim_max_seconds * 1000,
            "generations": [
                {
                    "collections": g.collections,
                    "pause_ms_total": g.pause_seconds * 1000,
                    "pause_ms_max": g.max_pause_seconds * 1000,
                    "cpu_ms_max": g.max_cpu_seconds * 1000,
                    "collected": g.collected,
                    "uncollectable": g.uncollectable,
                }
                for g in self.generations
            ],
        }

    def reset(self) -> None:
        self.generations = [GenerationStats() for _ in range(3)]
        self.last_pause_seconds = 0.0
        self.malloc_trims = 0
        self.malloc_trim_max_seconds = 0.0
        self.slow_periodic.clear()


#: The process-wide figures (the collector is process-wide too).
STATS = GcStats()
