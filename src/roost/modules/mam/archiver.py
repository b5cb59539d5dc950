"""The write side of the archives: decide off the hot path, offer to the batched writer, never stall.

Delivery hooks hand over a ready item. When the owner's preferences (and, for
``default='roster'``, the roster) are already in memory the decision is made at once and the item
is offered to the storage layer's batched writer (``ArchiveStore.offer``: never waits). Otherwise the
item waits in a bounded queue for one named task that loads what the decision needs. A full queue,
a full write queue or a failing database costs the archive that message — with a log line at most
every few seconds saying how many — and never delays delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from roost.jid import JID
from roost.modules.mam.protocol import Prefs
from roost.storage.api import ArchiveItem, ArchiveStore, StorageError

log = logging.getLogger("roost.mod.mam")

#: Seconds between two "not archived" log lines.
DROP_LOG_INTERVAL: Final = 10.0


@dataclass(slots=True)
class Pending:
    """One item for one owner's archive, with what the decision needs."""

    owner: JID  #: bare JID of the archive's owner
    with_jid: JID  #: the counterpart (XEP-0441 §2.3.3/§2.3.4: 'to' outgoing, 'from' incoming)
    item: ArchiveItem
    search: str
    #: The owner had no session when the message came: check the account exists before archiving.
    check_account: bool = False


class Archiver:
    """Preferences-aware, non-blocking archive writes for one store."""

    def __init__(
        self,
        store: ArchiveStore,
        *,
        prefs: Callable[[JID], Prefs | None],
        load_prefs: Callable[[JID], Awaitable[Prefs]],
        in_roster: Callable[[JID, JID], bool | None],
        load_in_roster: Callable[[JID, JID], Awaitable[bool]],
        account_exists: Callable[[str, str], Awaitable[bool]],
        max_waiting: int,
        spawn: Callable[[Awaitable[None], str], asyncio.Task[None]],
    ) -> None:
        self.store = store
        self._prefs = prefs
        self._load_prefs = load_prefs
        self._in_roster = in_roster
        self._load_in_roster = load_in_roster
        self._account_exists = account_exists
        self._max_waiting = max_waiting
        self._waiting: deque[Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        #: Runs the worker as an owned task whenever items wait (and only then).
        self._spawn = spawn
        self.dropped = 0
        self._dropped_logged = 0
        self._last_log = 0.0

    async def stop(self) -> None:
        """Decide what is still waiting (so that a clean shutdown archives it)."""
        task = self._task
        if task is not None and not task.done():
            try:
                await task
            except Exception:
                pass

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, owner: JID, with_jid: JID, item: ArchiveItem, search: str, check_account: bool) -> None:
        """Hot path: archive now if the decision is at hand, else queue it for the task (only then is
        a :class:`Pending` made: the usual message costs no object beyond its item)."""
        if not check_account:
            prefs = self._prefs(owner)
            if prefs is not None:
                in_roster = self._in_roster(owner, with_jid) if prefs.needs_roster else None
                decision = prefs.decide(with_jid, in_roster)
                if decision is not None:
                    if decision:
                        self._offer(owner, item, search)
                    return
        if len(self._waiting) >= self._max_waiting:
            self._drop(1, "the archiving queue is full")
            return
        self._waiting.append(Pending(owner, with_jid, item, search, check_account))
        if self._task is None or self._task.done():
            self._task = self._spawn(self._run(), "mam-archiver")

    def _offer(self, owner: JID, item: ArchiveItem, search: str) -> None:
        try:
            ok = self.store.offer(owner.domain, owner.local or "", item, search=search)
        except (StorageError, ValueError, TypeError) as exc:
            self._drop(1, f"storage refused it ({exc})")
            return
        if not ok:
            self._drop(1, "the storage write queue is full (database slow or down?)")

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._last_log >= DROP_LOG_INTERVAL:
            log.warning("mam: %d messages not archived: %s", self.dropped - self._dropped_logged, why)
            self._dropped_logged = self.dropped
            self._last_log = now

    async def _run(self) -> None:
        while self._waiting:
            pending = self._waiting.popleft()
            try:
                await self._decide(pending)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._drop(1, f"deciding failed ({type(exc).__name__}: {exc})")

    async def _decide(self, pending: Pending) -> None:
        owner = pending.owner
        if pending.check_account and not await self._account_exists(owner.domain, owner.local or ""):
            return  # no such account: nothing to keep (the sender gets its error elsewhere)
        prefs = await self._load_prefs(owner)
        in_roster = await self._load_in_roster(owner, pending.with_jid) if prefs.needs_roster else None
        if prefs.decide(pending.with_jid, in_roster):
            self._offer(owner, pending.item, pending.search)
