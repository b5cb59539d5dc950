"""Keep garbage-collection pauses short however many sessions are online (``[gc]``, issue 15).

CPython's full collection walks every tracked object. Left to its defaults, a server with thousands of
sessions froze for a quarter of a second every minute or so. The policy here:

* measure every collection (:mod:`roost.util.gcstats`);
* right after start, collect once and ``gc.freeze()`` what start-up built (modules, tables, config);
* every ``freeze_interval_seconds``, off any stanza's path (a loop timer): collect what is not frozen
  (only what survived since the last interval, so the pause stays short), then freeze the survivors.
  While such a collection takes longer than ``target_pause_ms`` (many logins), the interval halves
  (down to 0.25 s: at 10,000 sessions under churn a 0.5 s interval left ~13 ms of survivors to
  collect); once they are well under it, it grows back. A long quiet interval must not meet a burst
  (10,000 clients logging in after a restart left 219,000 survivors, 225 ms, to the first collection
  10 s after start): every 0.25 s (more often while they pile up fast, down to every 20 ms) the policy
  also counts the objects that are not frozen yet (what the next collection would walk) and collects
  at once past ``target_pause_ms`` × 250 of them.
  Python's own allocation counter is no help there: it counts allocations *minus* frees, so when
  10,000 sessions logged out at once (frees of frozen objects) it stayed near zero while 154,000 new
  objects piled up for one 225 ms collection.
  Automatic full collections are then cheap too: they only see what is not frozen yet.
* every ``malloc_trim_interval_seconds``, hand free pages of the C heap back to the system
  (``malloc_trim(0)``, glibc only). Measured under churn (2,000 sessions, 1 %/s, 500 msg/s): the
  allocator's free fragments grew from 3 to 8 MiB in three minutes while the memory in use stayed
  flat, and one trim returned 4 MiB of RSS in 0.9 ms.

A frozen object is still freed by reference counting when its last reference goes; a reference cycle
among frozen objects would never be collected, which is why closed connections must leave none
(tests/integration/test_no_cycles.py). Unreachable objects found by the periodic collections are
counted (``collected`` of generation 2 in :data:`roost.util.gcstats.STATS`): anything above zero
there is a new cycle to hunt down.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from roost.core import hooks
from roost.util.gcstats import STATS

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.gc")

#: The shortest collect-and-freeze interval (seconds) the policy shortens to; also how often it counts
#: the objects that are not frozen yet.
MIN_INTERVAL = 0.25
#: The shortest time between two looks, while objects pile up fast.
MIN_LOOK = 0.02
#: Objects not frozen yet, per millisecond of ``target_pause_ms``, past which the next look collects
#: (measured at 10,000 sessions under churn: ~1.5 µs per object walked, so 2,500 objects ≈ 4 ms).
UNFROZEN_PER_MS = 250


def start(server: Server) -> None:
    """Install the measurements, the freezing policy (``tuning``) and the periodic malloc_trim."""
    options = server.config.gc
    STATS.log_over_seconds = options.log_pause_ms / 1000
    STATS.install()
    trim = malloc_trim() if options.malloc_trim_interval_seconds > 0 else None
    if not options.tuning and trim is None:
        return
    interval = options.freeze_interval_seconds
    if not options.tuning:
        interval = min(interval, options.malloc_trim_interval_seconds)
    policy = _Policy(interval, options.tuning, trim, options.malloc_trim_interval_seconds)
    policy.target = options.target_pause_ms / 1000
    policy.unfrozen_budget = int(options.target_pause_ms * UNFROZEN_PER_MS)
    if options.tuning:
        _, young1, old = policy.thresholds
        gc.set_threshold(options.young_threshold, young1, old)
        t0 = time.perf_counter()
        gc.collect()
        gc.freeze()
        STATS.reset()  # from here on: the pauses that clients see
        STATS.frozen = gc.get_freeze_count()  # once, at start (it walks the whole frozen list)
        log.debug("gc: froze %d start-up objects in %.1f ms", STATS.frozen, (time.perf_counter() - t0) * 1000)
    for host in server.hosts.values():
        host.bus.on(hooks.SERVER_STOPPING, policy.stop)


class _Policy:
    """The periodic timer of one running server (a loop timer, not a task): collect and freeze (when
    tuning), trim the C heap (when due)."""

    def __init__(
        self, interval: float, freeze: bool, trim: Callable[[], object] | None, trim_interval: float
    ) -> None:
        self.interval = interval  # the longest
        self.current = interval  # shortened while periodic collections take longer than the target
        self.target = 0.010
        self.unfrozen_budget = 2500
        self.freeze = freeze
        self.thresholds = gc.get_threshold()
        self.trim = trim
        self.trim_interval = trim_interval
        self.loop = asyncio.get_running_loop()
        self.last_trim = self.loop.time()
        self.last_tick = self.loop.time()
        self.last_look = (self.last_tick, 0)  # (when, unfrozen objects then)
        #: How often the timer fires: with freezing on, it counts the unfrozen objects every MIN_INTERVAL.
        self.period = MIN_INTERVAL if freeze else interval
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(self.period, self.tick)

    def tick(self) -> None:
        if self.freeze:
            self.look()
        if self.trim is not None and self.loop.time() - self.last_trim >= self.trim_interval:
            self.last_trim = self.loop.time()
            t0 = time.perf_counter()
            self.trim()
            STATS.trimmed(time.perf_counter() - t0)
        self.handle = self.loop.call_later(self.period, self.tick)

    def look(self) -> None:
        """Count the unfrozen objects; collect and freeze when the interval is over or they pass the
        budget; decide when to look next."""
        now = self.loop.time()
        young = unfrozen()
        since = now - self.last_tick
        # New objects per second, since the last collection or since the last look, whichever is
        # faster: a burst that starts after a quiet spell shows in the latter at once.
        looked_at, looked_young = self.last_look
        pace = max(
            young / since if since > 0 else 0.0,
            (young - looked_young) / (now - looked_at) if now > looked_at else 0.0,
        )
        self.last_look = (now, young)
        self.period = self.next_look(pace)
        if since < self.current and young < self.unfrozen_budget:
            return
        t0 = time.thread_time()
        survivors = collect_and_freeze()[1]
        took = time.thread_time() - t0
        if took > self.target:
            # What made it long, for the operator and for the soak bench (memprobe prints it).
            STATS.slow_periodic.append((took * 1000, young, survivors, since))
            log.debug(
                "gc: periodic collection: %.1f ms CPU, %d unfrozen, %d survived, %.2f s after the last",
                took * 1000,
                young,
                survivors,
                since,
            )
        self.last_tick = now
        self.last_look = (now, 0)
        self.adapt(took)

    def next_look(self, pace: float) -> float:
        """When to count again: soon enough that, at ``pace`` new objects a second, the next
        collection finds about half the budget (10,000 sessions logging out at once made ~70,000 a
        second: 0.25 s between looks meant 20,000 per collection, 20-38 ms)."""
        if pace <= 0:
            return MIN_INTERVAL
        return min(MIN_INTERVAL, max(MIN_LOOK, 0.5 * self.unfrozen_budget / pace))

    def adapt(self, seconds: float) -> None:
        """A collection's cost grows with what survived since the previous one (logins, mostly):
        collect more often while it is over the target, less often again once well under it."""
        if seconds > self.target and self.current > MIN_INTERVAL:
            self.current = max(MIN_INTERVAL, self.current / 2)
            log.debug("gc: collections every %.2f s (the last took %.1f ms)", self.current, seconds * 1000)
        elif seconds < self.target / 4 and self.current < self.interval:
            self.current = min(self.interval, self.current * 1.5)

    def stop(self, event: object) -> None:
        """Server stopping: no more timer, and nothing stays frozen (an embedding process goes on)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            if self.freeze:
                gc.unfreeze()
                gc.set_threshold(*self.thresholds)


def unfrozen() -> int:
    """Tracked objects not frozen yet: what a collection of every generation would walk (the lists are
    short between two periodic collections: a few thousand entries at 10,000 sessions, ~50 µs)."""
    return len(gc.get_objects(0)) + len(gc.get_objects(1)) + len(gc.get_objects(2))


@functools.cache  # one ctypes lookup per process (it builds classes, i.e. a little cyclic garbage)
def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a function, or None where the C library has none (musl, macOS)."""
    try:
        func = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_size_t]
    func.restype = ctypes.c_int
    return lambda: func(0)


def collect_and_freeze() -> tuple[int, int]:
    """Collect the objects that are not frozen yet, freeze the survivors; (unreachable objects found,
    survivors frozen)."""
    found = gc.collect()
    # After a full collection every survivor sits in the oldest generation, and everything older is
    # frozen already: this list is what freeze() is about to move, as cheap as the collection was.
    survivors = len(gc.get_objects(2))
    STATS.frozen += survivors
    gc.freeze()
    if found:
        log.debug("gc: %d unreachable objects in the last interval (a reference cycle somewhere)", found)
    return found, survivors
