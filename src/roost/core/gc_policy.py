"""Keep garbage-collection pauses short however many sessions are online (``[gc]``, issue 15).

CPython's full collection walks every tracked object. Left to its defaults, a server with thousands of
sessions froze for a quarter of a second every minute or so. The policy here:

* measure every collection (:mod:`roost.util.gcstats`);
* right after start, collect once and ``gc.freeze()`` what start-up built (modules, tables, config);
* every ``freeze_interval_seconds``, off any stanza's path (a loop timer): collect what is not frozen
  (only what survived since the last interval, so the pause stays short), then freeze the survivors.
  Automatic full collections are then cheap too: they only see what is not frozen yet.

A frozen object is still freed by reference counting when its last reference goes; a reference cycle
among frozen objects would never be collected, which is why closed connections must leave none
(tests/integration/test_no_cycles.py). Unreachable objects found by the periodic collections are
counted (``collected`` of generation 2 in :data:`roost.util.gcstats.STATS`): anything above zero
there is a new cycle to hunt down.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING

from roost.core import hooks
from roost.util.gcstats import STATS

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.gc")


def start(server: Server) -> None:
    """Install the measurements and, if ``[gc] tuning`` is on, the freezing policy (after start-up)."""
    options = server.config.gc
    STATS.log_over_seconds = options.log_pause_ms / 1000
    STATS.install()
    if not options.tuning:
        return
    policy = _Policy(options.freeze_interval_seconds, gc.get_threshold())
    _, young1, old = policy.thresholds
    gc.set_threshold(options.young_threshold, young1, old)
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.debug(
        "gc: froze %d start-up objects in %.1f ms", gc.get_freeze_count(), (time.perf_counter() - t0) * 1000
    )
    for host in server.hosts.values():
        host.bus.on(hooks.SERVER_STOPPING, policy.stop)


class _Policy:
    """The periodic collect-and-freeze timer of one running server (a loop timer, not a task)."""

    def __init__(self, interval: float, thresholds: tuple[int, int, int]) -> None:
        self.interval = interval
        self.thresholds = thresholds
        self.loop = asyncio.get_running_loop()
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(interval, self.tick)

    def tick(self) -> None:
        collect_and_freeze()
        self.handle = self.loop.call_later(self.interval, self.tick)

    def stop(self, event: object) -> None:
        """Server stopping: no more timer, and nothing stays frozen (an embedding process goes on)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            gc.unfreeze()
            gc.set_threshold(*self.thresholds)


def collect_and_freeze() -> int:
    """Collect the objects that are not frozen yet, freeze the survivors; unreachable objects found."""
    found = gc.collect()
    gc.freeze()
    if found:
        log.debug("gc: %d unreachable objects in the last interval (a reference cycle somewhere)", found)
    return found
