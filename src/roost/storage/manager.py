"""StorageManager: opens a backend by URL, hands out stores by kind, batches archive writes.

Archive appends (MAM, offline, MUC history) are the hot write path: one transaction per stanza would
cost a disk sync each on SQLite. They go into a bounded queue instead; a single named writer task commits
them in batches (up to ``batch_size`` items, gathered for at most ``batch_delay`` seconds). Reads of an
archive first wait for that user's queued items, so callers never see their own writes missing.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import unicodedata
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from math import isfinite
from typing import Final

from roost.storage.api import (
    AccountStore,
    ArchiveItem,
    ArchiveQuery,
    ArchiveStore,
    KeyValueStore,
    MapStore,
    StorageError,
    check_archive_item,
    check_text,
    timestamp_to_us,
)
from roost.storage.backend import ArchiveBackend, Backend, QueuedAppend
from roost.storage.sql.threaded import DatabaseThread

log = logging.getLogger(__name__)

_ArchiveKey = tuple[str, str, str]  # (store, domain, user)

#: Items per archive write transaction at most. On a big archive each row dirties a page of every
#: owner-ordered index; a bigger batch shares more of them (measured on SQLite at 300k rows across 10^4
#: owners: 60 µs/row in batches of 500, 45 µs/row in batches of 2000). Below that rate the 50 ms delay
#: ends a batch first, so only a busy server makes them this big.
DEFAULT_BATCH_SIZE: Final = 2000

#: How long an archive read waits for that user's queued writes before giving up (storage unreachable).
SETTLE_TIMEOUT: Final = 30.0


class ArchiveWriter:
    """Batches queued archive appends into one backend transaction per batch.

    Every append gets a ticket number; tickets are committed strictly in order, so ``committed >= t``
    means "everything up to ticket t is durable". A failed batch is logged and retried with capped
    exponential back-off until it succeeds; items are never dropped.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[QueuedAppend]], Awaitable[None]],
        *,
        batch_delay: float = 0.05,
        batch_size: int | None = None,
        max_pending: int = 100_000,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
        name: str = "storage-archive-writer",
    ) -> None:
        if batch_size is None:  # the default, but never more than the queue can hold
            batch_size = min(DEFAULT_BATCH_SIZE, max_pending)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if batch_delay < 0:
            raise ValueError("batch_delay must not be negative")
        if max_pending < batch_size:
            raise ValueError("max_pending must be at least batch_size")
        self._commit = commit
        self._batch_delay = batch_delay
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._queue: deque[tuple[int, QueuedAppend]] = deque()
        self._enqueued = 0  # ticket of the newest queued item
        self._committed = 0  # every ticket up to this one is committed
        self._urgent = 0  # someone waits for tickets up to this one: skip the batching delay
        self._last_ticket: dict[_ArchiveKey, int] = {}  # newest uncommitted ticket per archive
        self._wake = asyncio.Event()  # for the writer task: new items, flush request, close
        self._changed = asyncio.Event()  # for waiters: replaced and set whenever progress happens
        self._closing = False
        self._failure: BaseException | None = None
        self._task = asyncio.create_task(self._run(), name=name)

    @property
    def pending(self) -> int:
        """Items queued or being written."""
        return self._enqueued - self._committed

    async def append(self, entry: QueuedAppend) -> None:
        """Queue one item; waits only while ``max_pending`` items are already waiting (back-pressure)."""
        await self._wait_until(lambda: self.pending < self._max_pending)
        self._check_open()
        self._enqueued += 1
        self._queue.append((self._enqueued, entry))
        self._last_ticket[(entry.store, entry.domain, entry.user)] = self._enqueued
        self._wake_writer()

    def offer(self, entry: QueuedAppend) -> bool:
        """Queue one item unless ``max_pending`` items are waiting already (then False): never waits."""
        self._check_open()
        if self.pending >= self._max_pending:
            return False
        self._enqueued += 1
        self._queue.append((self._enqueued, entry))
        self._last_ticket[(entry.store, entry.domain, entry.user)] = self._enqueued
        self._wake_writer()
        return True

    def _wake_writer(self) -> None:
        # Only when the writer needs to know: the queue was empty (it may be idle) or a batch is full.
        # Waking it for every item cost a task switch and a timeout per message (measured: about half
        # of archiving's CPU on the 1:1 hot path).
        queued = len(self._queue)
        if queued == 1 or queued >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self._wait_committed(self._enqueued)

    async def settle(self, key: _ArchiveKey, wait_limit: float | None = SETTLE_TIMEOUT) -> None:
        """Wait until the queued items of one archive are committed (before reading or deleting it)."""
        target = self._last_ticket.get(key)
        if target is None or target <= self._committed:
            return
        try:
            async with asyncio.timeout(wait_limit):
                await self._wait_committed(target)
        except TimeoutError:
            raise StorageError(
                f"archive writes for {key[0]!r} are still pending after {wait_limit}s; storage unreachable?"
            ) from None

    async def close(self) -> None:
        """Refuse new items, write everything queued, stop the task.

        While storage is unreachable this keeps waiting (the writer keeps retrying). If the caller gives
        up (cancels), the writer stops and the unwritten items are counted in an error log line.
        """
        self._closing = True
        self._wake.set()
        self._notify()
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if not self._task.done():
                log.error(
                    "storage: closed before the archive queue drained; %d items not written", self.pending
                )
                self._task.cancel()
            raise
        except Exception:
            pass  # the crash was logged when it happened; shutdown goes on

    def _check_open(self) -> None:
        if self._failure is not None:
            raise StorageError("archive writer stopped") from self._failure
        if self._closing:
            raise StorageError("storage is closed")

    async def _wait_committed(self, target: int) -> None:
        if self._committed >= target:
            return
        self._urgent = max(self._urgent, target)
        self._wake.set()
        await self._wait_until(lambda: self._committed >= target, allow_closing=True)

    async def _wait_until(self, ready: Callable[[], bool], *, allow_closing: bool = False) -> None:
        while not ready():
            if self._failure is not None or (self._closing and not allow_closing):
                self._check_open()
            await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _write_now(self) -> bool:
        return len(self._queue) >= self._batch_size or self._closing or self._urgent > self._committed

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self._queue:
                    if self._closing:
                        return
                    await self._wake.wait()
                    self._wake.clear()
                # Let a batch gather, unless it is full or someone is waiting for it.
                deadline = loop.time() + self._batch_delay
                while not self._write_now():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            await self._wake.wait()
                    except TimeoutError:
                        break
                    self._wake.clear()
                count = min(len(self._queue), self._batch_size)
                batch = [self._queue.popleft() for _ in range(count)]
                await self._commit_with_retry([entry for _, entry in batch])
                self._committed = batch[-1][0]
                for _, entry in batch:
                    key = (entry.store, entry.domain, entry.user)
                    if self._last_ticket.get(key, 0) <= self._committed:
                        self._last_ticket.pop(key, None)
                self._notify()
        except BaseException as exc:
            self._failure = exc
            if not isinstance(exc, asyncio.CancelledError):
                log.critical(
                    "storage: archive writer crashed; %d items unwritten", self.pending, exc_info=True
                )
            raise
        finally:
            self._notify()

    async def _commit_with_retry(self, batch: Sequence[QueuedAppend]) -> None:
        attempt = 0
        while True:
            try:
                await self._commit(batch)
                if attempt:
                    log.warning(
                        "storage: archive batch of %d items written after %d retries", len(batch), attempt
                    )
                return
            except Exception as exc:
                attempt += 1
                delay = min(self._retry_delay * 2 ** min(attempt - 1, 30), self._max_retry_delay)
                log.error(
                    "storage: writing %d archive items failed (attempt %d): %s; retrying in %.2gs",
                    len(batch),
                    attempt,
                    exc,
                    delay,
                    exc_info=attempt == 1,
                )
                await asyncio.sleep(delay)


class _BatchedArchive:
    """``ArchiveStore`` whose appends go through the writer and whose reads settle them first."""

    def __init__(self, name: str, backend: ArchiveBackend, writer: ArchiveWriter) -> None:
        self._name = name
        self._backend = backend
        self._writer = writer

    async def append(self, domain: str, user: str, item: ArchiveItem, *, search: str = "") -> None:
        check_archive_item(item)
        search = _search_text(search)
        await self._writer.append(QueuedAppend(self._name, domain, user, item, search))

    def offer(self, domain: str, user: str, item: ArchiveItem, *, search: str = "") -> bool:
        # The hot path (every archived copy of a message): the usual item and its search text are
        # checked together, in one NUL scan and one ASCII test; anything else takes the full checks.
        if (
            type(item) is ArchiveItem
            and type(search) is str
            and item.id
            and type(item.timestamp) is float
            and isfinite(item.timestamp)
            and type(item.payload) is str
            and type(item.with_jid) is str
            and type(item.kind) is str
        ):
            joined = item.id + item.with_jid + item.payload + item.kind + search
            if "\x00" not in joined and joined.isascii():
                return self._writer.offer(QueuedAppend(self._name, domain, user, item, search))
        check_archive_item(item)
        search = _search_text(search)
        return self._writer.offer(QueuedAppend(self._name, domain, user, item, search))

    async def query(self, domain: str, user: str, q: ArchiveQuery) -> tuple[builtins.list[ArchiveItem], bool]:
        await self._writer.settle((self._name, domain, user))
        return await self._backend.query(domain, user, q)

    async def count(self, domain: str, user: str, q: ArchiveQuery | None = None) -> int:
        await self._writer.settle((self._name, domain, user))
        return await self._backend.count(domain, user, q)

    async def delete(self, domain: str, user: str, ids: Sequence[str] | None = None) -> int:
        await self._writer.settle((self._name, domain, user))
        return await self._backend.delete(domain, user, ids)

    async def pop_all(self, domain: str, user: str) -> builtins.list[ArchiveItem]:
        await self._writer.settle((self._name, domain, user))
        return await self._backend.pop_all(domain, user)

    async def delete_user(self, domain: str, user: str) -> None:
        await self._writer.settle((self._name, domain, user))
        await self._backend.delete_user(domain, user)

    async def ends(self, domain: str, user: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        await self._writer.settle((self._name, domain, user))
        return await self._backend.ends(domain, user)

    async def replace(self, domain: str, user: str, item_id: str, payload: str, *, search: str = "") -> bool:
        check_text(payload, "archive item payload")
        search = _search_text(search)
        await self._writer.settle((self._name, domain, user))
        return await self._backend.replace(domain, user, item_id, payload, search=search)

    async def trim(
        self,
        domain: str,
        user: str,
        *,
        before: float | None = None,
        keep: int | None = None,
        batch: int = 1000,
    ) -> int:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if keep is not None and keep < 0:
            raise ValueError("keep must not be negative")
        if before is None and keep is None:
            return 0
        await self._writer.settle((self._name, domain, user))
        return await self._backend.trim(domain, user, before=before, keep=keep, batch=batch)

    async def expire(self, before: float, *, batch: int = 1000, spare: Sequence[tuple[str, str]] = ()) -> int:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        timestamp_to_us(before)
        await self._writer.flush()
        return await self._backend.expire(before, batch=batch, spare=spare)

    async def owners(
        self, after: tuple[str, str] | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, str]]:
        await self._writer.flush()
        return await self._backend.owners(after, max(limit, 0))


def _search_text(text: str) -> str:
    """Search text as every backend indexes it: valid, and NFC (so that a decomposed "é" is found by
    the composed one the query is normalized to)."""
    if type(text) is str and text.isascii() and "\x00" not in text:
        return text  # the usual case, checked in one pass
    check_text(text, "search text")
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _check_store_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"store name must be a non-empty string, not {name!r}")


class StorageManager:
    """Entry point of the storage layer; one per server process (and one per CLI command)."""

    def __init__(self, backend: Backend, writer: ArchiveWriter) -> None:
        """Use ``StorageManager.open``."""
        self._backend = backend
        self._writer = writer
        self._archives: dict[str, _BatchedArchive] = {}
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        progress: Callable[[str], None] | None = None,
        batch_delay: float = 0.05,
        batch_size: int | None = None,
        max_pending: int = 100_000,
    ) -> StorageManager:
        """Open storage at ``url`` and bring its schema to the newest version.

        ``memory://`` — dicts, for tests; ``sqlite:///relative/or/absolute/path.db`` (parent directory is
        created); ``postgresql://user:password@host:port/database``. Migration progress goes to ``progress``
        (or the log). ``max_pending`` bounds the archive write queue: beyond it, ``append`` waits.
        """
        report = progress if progress is not None else log.info
        backend: Backend
        if url.split(":", 1)[0] == "memory":
            from roost.storage.memory import MemoryBackend

            backend = MemoryBackend()
        else:
            from roost.storage.sql.backend import open_sql_backend

            backend = await open_sql_backend(url, progress=report)
        writer = ArchiveWriter(
            backend.append_archive, batch_delay=batch_delay, batch_size=batch_size, max_pending=max_pending
        )
        return cls(backend, writer)

    @property
    def accounts(self) -> AccountStore:
        return self._backend.accounts

    def keyvalue(self, name: str) -> KeyValueStore:
        _check_store_name(name)
        return self._backend.keyvalue(name)

    def map(self, name: str) -> MapStore:
        _check_store_name(name)
        return self._backend.map(name)

    def archive(self, name: str) -> ArchiveStore:
        _check_store_name(name)
        store = self._archives.get(name)
        if store is None:
            store = self._archives[name] = _BatchedArchive(name, self._backend.archive(name), self._writer)
        return store

    async def delete_user(self, domain: str, username: str) -> None:
        """Remove the account and all of its data in every store, in one transaction.

        Host-wide data (user ``""``) is not a user's and cannot be deleted this way.
        """
        if not username:
            raise ValueError("delete_user needs a username; host-wide data is not a user's")
        await self._writer.flush()
        await self._backend.delete_user(domain, username)

    @property
    def database_thread(self) -> DatabaseThread | None:
        """The embedded database's worker thread (its job latencies and queue), None for others."""
        database = getattr(self._backend, "database", None)
        thread = getattr(getattr(database, "engine", None), "_thread", None)
        return thread if isinstance(thread, DatabaseThread) else None

    @property
    def pending_writes(self) -> int:
        """Archive items queued and not yet committed (metrics: the write queue's depth)."""
        return self._writer.pending

    async def flush(self) -> None:
        """Wait until every archive item queued so far is committed."""
        await self._writer.flush()

    async def close(self) -> None:
        """Write what is queued, stop the writer, release connections. Idempotent.

        Waits for the archive queue to drain; bound it with ``asyncio.timeout`` if shutdown must not
        wait on an unreachable database (what is lost is then logged).
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.close()
        finally:
            await self._backend.close()
