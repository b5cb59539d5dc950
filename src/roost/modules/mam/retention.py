"""Retention: archives lose their oldest messages by age and by count, a little at a time.

A :class:`RetentionPolicy` says, per store, the default limits and the archives with their own
(a per-user or per-room limit replaces the default for that archive, longer or shorter). One sweep
(:func:`sweep`) enforces it with short transactions: store-wide age expiry of everyone without an
own limit, then each archive with an own limit, then — only when a count limit is in force — a walk
over every archive of the store. Between batches it yields to the event loop (and may pause), so a
sweep never holds a long lock nor starves delivery. XEP-0313 §3.2: only the oldest messages go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from roost.storage.api import ArchiveStore

log = logging.getLogger("roost.mod.mam")

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``days`` old (0: no age limit) and at most ``messages`` (0: no count limit)."""

    days: float = 0.0
    messages: int = 0

    @property
    def any(self) -> bool:
        return self.days > 0 or self.messages > 0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The limits of one store: ``default`` for every archive, ``own`` for those (domain, user) listed."""

    default: Limit = Limit()
    own: dict[tuple[str, str], Limit] = field(default_factory=dict)

    def limit_for(self, domain: str, user: str) -> Limit:
        return self.own.get((domain, user), self.default)

    @property
    def active(self) -> bool:
        return self.default.any or any(limit.any for limit in self.own.values())


async def _drain(step: Callable[[], Awaitable[int]], batch: int, pause: float) -> int:
    total = 0
    while True:
        deleted = await step()
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(pause)


async def sweep(
    store: ArchiveStore, policy: RetentionPolicy, now: float, *, batch: int = 1000, pause: float = 0.0
) -> int:
    """One full pass of ``policy`` over ``store``; returns how many items were deleted."""
    total = 0
    spare = list(policy.own)
    default = policy.default
    if default.days > 0:
        cutoff = now - default.days * DAY
        total += await _drain(lambda: store.expire(cutoff, batch=batch, spare=spare), batch, pause)
    for (domain, user), limit in policy.own.items():
        total += await _trim(store, domain, user, limit, now, batch, pause)
    if default.messages > 0:
        after: tuple[str, str] | None = None
        while True:
            owners = await store.owners(after, 100)
            for domain, user in owners:
                if (domain, user) not in policy.own:
                    total += await _trim(store, domain, user, Limit(0, default.messages), now, batch, pause)
            if len(owners) < 100:
                break
            after = owners[-1]
            await asyncio.sleep(pause)
    return total


async def _trim(
    store: ArchiveStore, domain: str, user: str, limit: Limit, now: float, batch: int, pause: float
) -> int:
    if not limit.any:
        return 0
    before = now - limit.days * DAY if limit.days > 0 else None
    keep = limit.messages if limit.messages > 0 else None
    return await _drain(lambda: store.trim(domain, user, before=before, keep=keep, batch=batch), batch, pause)


async def delete_archive(store: ArchiveStore, domain: str, user: str, *, batch: int = 1000) -> int:
    """All of one archive, in batches (account removal, room destruction)."""
    return await _drain(lambda: store.trim(domain, user, keep=0, batch=batch), batch, 0.0)
