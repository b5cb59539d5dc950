"""Key-value writes that may wait a moment, gathered into one transaction.

Some records are written on every logout (XEP-0012 last activity, the time of the last unavailable
presence for probes): one transaction each made storage a large share of a login's cost, and a burst
of logouts queued behind one another. Here a value waits ``delay`` seconds in memory; everything that
arrived by then is written with one ``set_users`` per domain. Reads through this object see waiting
values first, so nobody observes the delay. ``close()`` writes what is left (module stop, shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from roost.storage.api import JSON, KeyValueStore

log = logging.getLogger(__name__)

#: Seconds a value waits: long enough to gather a burst of logouts, short enough not to matter.
DEFAULT_DELAY = 0.05

Spawn = Callable[[Awaitable[Any], str], object]


class WriteBehind:
    """A ``KeyValueStore`` front whose ``put`` is written behind, in batches."""

    def __init__(self, store: KeyValueStore, name: str, spawn: Spawn, delay: float = DEFAULT_DELAY) -> None:
        self.store = store
        self.name = name
        self.delay = delay
        self._spawn = spawn
        #: domain → user → value not yet written (None: delete).
        self._pending: dict[str, dict[str, JSON | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def put(self, domain: str, user: str, value: JSON | None) -> None:
        """Store ``value`` (None deletes) within ``delay`` seconds."""
        self._pending.setdefault(domain, {})[user] = value
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._due)

    def pending(self, domain: str, user: str) -> tuple[bool, JSON | None]:
        """(True, value) when a value for the user is waiting to be written."""
        waiting = self._pending.get(domain)
        if waiting is not None and user in waiting:
            return True, waiting[user]
        return False, None

    async def get(self, domain: str, user: str) -> JSON | None:
        found, value = self.pending(domain, user)
        return value if found else await self.store.get(domain, user)

    def forget(self, domain: str, user: str) -> None:
        """Drop a waiting value (the account was deleted)."""
        waiting = self._pending.get(domain)
        if waiting is not None:
            waiting.pop(user, None)

    def _due(self) -> None:
        self._timer = None
        self._spawn(self.flush(), f"write-behind-{self.name}")

    async def flush(self) -> None:
        """Write everything waiting now; on failure keep it (newer values win) for the next try."""
        pending, self._pending = self._pending, {}
        for domain, values in pending.items():
            if not values:
                continue
            try:
                await self.store.set_users(domain, values)
            except Exception:
                log.exception(
                    "storage: cannot write %d %s records; keeping them for the next try",
                    len(values),
                    self.name,
                )
                newer = self._pending.get(domain, {})
                self._pending[domain] = {**values, **newer}
                if self._timer is None and not self._closed:
                    self._timer = asyncio.get_running_loop().call_later(max(self.delay, 1.0), self._due)

    def stopping(self) -> None:
        """No more timers: ``close()`` will write what is waiting (shutdown must not wait for a delay)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def close(self) -> None:
        self.stopping()
        await self.flush()
