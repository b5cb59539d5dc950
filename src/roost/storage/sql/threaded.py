"""SQLite through a synchronous SQLAlchemy engine on one dedicated thread.

Why not aiosqlite: it hands every DB-API call (cursor, execute, fetchall, close, begin, rollback…) to
its thread separately, so one small read cost a dozen thread round trips and wake-ups of the event
loop; measured, storage was most of a login's CPU. Here a whole step runs in the database thread at
once — the first statement opens the connection (and its transaction), the last step commits and
returns it — so a read is two round trips and a write three, whatever SQLAlchemy does inside.

The shim offers the small part of ``AsyncConnection`` the SQL backend uses (``execute``, ``begin``,
``execution_options``, ``run_sync``), so one backend serves SQLite and PostgreSQL (asyncpg, natively
async) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.pool import QueuePool

from roost.util.latency import LatencyStats

T = TypeVar("T")

#: How long a coroutine waits for a free pooled connection (the pool's own timeout is 30 s too).
PERMIT_TIMEOUT = 30.0


class BufferedResult:
    """A statement's rows, fetched in the database thread; read on the event loop."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Row[Any]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Row[Any]]:
        return iter(self._rows)

    def all(self) -> list[Row[Any]]:
        return self._rows

    def first(self) -> Row[Any] | None:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected one row, got {len(self._rows)}")
        return self._rows[0][0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


def _buffer(result: CursorResult[Any]) -> BufferedResult:
    rows = list(result.all()) if result.returns_rows else []
    return BufferedResult(rows, getattr(result, "rowcount", -1))


class ThreadedConnection:
    """One pooled connection, used only inside the database thread."""

    def __init__(self, db: ThreadedEngine) -> None:
        self._db = db
        self._conn: Connection | None = None
        self._options: dict[str, Any] = {}
        self._transaction = False

    def _connection(self) -> Connection:  # database thread
        if self._conn is None:
            self._conn = self._db.engine.connect()
            if self._options:
                self._conn.execution_options(**self._options)
            if self._transaction:
                self._conn.begin()
        return self._conn

    async def execution_options(self, **options: Any) -> ThreadedConnection:
        self._options.update(options)
        if self._conn is not None:
            await self._db.call(self._conn.execution_options, **options)
        return self

    async def execute(self, statement: Any, parameters: Any = None) -> BufferedResult:
        def run() -> BufferedResult:
            return _buffer(self._connection().execute(statement, parameters))

        return await self._db.call(run)

    async def scalars(self, statement: Any, parameters: Any = None) -> list[Any]:
        return (await self.execute(statement, parameters)).scalars()

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._db.call(lambda: fn(self._connection(), *args))

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        """A transaction: begun with the first statement, committed (or rolled back) in one step."""
        if self._conn is not None:
            raise RuntimeError("begin() must come before the first statement")
        self._transaction = True
        try:
            yield
        except BaseException:
            await self._finish(commit=False)
            raise
        await self._finish(commit=True)

    async def _finish(self, *, commit: bool) -> None:
        conn = self._conn
        self._transaction = False
        if conn is None:
            return

        self._conn = None

        def end() -> None:
            try:
                transaction = conn.get_transaction()
                if transaction is not None:
                    if commit:
                        transaction.commit()
                    else:
                        transaction.rollback()
            finally:
                conn.close()  # back to the pool in the same trip

        await self._db.call(end)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._db.call(conn.close)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:  # event loop
    if not future.done():
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class DatabaseThread:
    """One worker thread fed by a queue; results come back as asyncio futures.

    Lighter than ``run_in_executor`` on a ThreadPoolExecutor, which makes a concurrent.futures.Future
    (with its own Condition and lock) per call and chains it to an asyncio future: a login makes a few
    of these trips, and that bookkeeping cost more than the queries.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any], float] | None] = (
            queue.SimpleQueue()
        )
        #: How long jobs ran, and how long they waited in the queue (written by the thread only).
        self.run_times = LatencyStats()
        self.wait_times = LatencyStats()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self._stopped = False

    def _work(self) -> None:  # database thread
        clock = time.perf_counter
        while (item := self._queue.get()) is not None:
            fn, future, queued_at = item
            started = clock()
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
                ok, value = False, exc
            else:
                ok, value = True, result
            self.wait_times.observe(started - queued_at)
            self.run_times.observe(clock() - started)
            try:
                future.get_loop().call_soon_threadsafe(_settle, future, ok, value)
            except RuntimeError:
                pass  # that event loop is closed: nobody is waiting any more

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        if self._stopped:
            raise RuntimeError("the database thread has stopped")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, future, time.perf_counter()))
        return future

    @property
    def queued(self) -> int:
        """Jobs waiting for the thread."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Finish the queued work, then end the thread (blocks until it has)."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join()


class ThreadedEngine:
    """A sync engine plus the one thread all its connections live in."""

    def __init__(self, engine: Engine, max_connections: int | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._thread = DatabaseThread("roost-sqlite")
        self._compiled: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._reader: Any = None  # a DB-API connection kept for fetch(); database thread only
        # A connection is checked out from the pool *in the database thread*. When the pool is
        # exhausted, that checkout blocks the only database thread until the pool's timeout (30 s), so
        # the coroutines holding the connections cannot finish either: every login and offline
        # message stalled for 30 s at a time, then failed (found by ``bench/run soak`` under heavy
        # offline traffic). Coroutines therefore wait here, on the event loop, for a connection
        # permit; one pooled connection is fetch()'s reader.
        if max_connections is None:
            pool = engine.pool
            size = pool.size() if isinstance(pool, QueuePool) else 0
            max_connections = size + getattr(pool, "_max_overflow", 0) if size else None
        self._permits = asyncio.Semaphore(max(1, max_connections - 1)) if max_connections else None

    async def fetch(self, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of a prebuilt SELECT, run on the raw driver connection.

        For the statements of the login path: SQLAlchemy compiles the SQL once, and each call is then
        a plain DB-API execute (an order of magnitude cheaper than a full SQLAlchemy execution).
        """
        return (await self.fetch_many([(statement, params)]))[0]

    async def fetch_many(
        self, steps: Sequence[tuple[Any, dict[str, Any]]], *, stop_when_empty: bool = False
    ) -> list[list[tuple[Any, ...]]]:
        """Several prebuilt SELECTs in one trip to the database thread (``stop_when_empty``: skip the
        rest when the first finds nothing)."""
        prepared = [(*self._compile(statement), params) for statement, params in steps]

        def run() -> list[list[tuple[Any, ...]]]:
            if self._reader is None:
                self._reader = self.engine.raw_connection()
            results: list[list[tuple[Any, ...]]] = []
            cursor = self._reader.cursor()
            try:
                for text, names, params in prepared:
                    cursor.execute(text, tuple(params[name] for name in names))
                    rows = list(cursor.fetchall())
                    results.append(rows)
                    if stop_when_empty and not rows:
                        break
            finally:
                cursor.close()
            return results

        return await self.call(run)

    def _compile(self, statement: Any) -> tuple[str, tuple[str, ...]]:
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            sql = statement.compile(dialect=self.dialect)
            compiled = (str(sql), tuple(sql.positiontup or ()))
            self._compiled[id(statement)] = compiled
        return compiled

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if kwargs or args:
            return await self._thread.submit(lambda: fn(*args, **kwargs))
        return await self._thread.submit(fn)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` with a pooled connection, checked out and returned in the same trip."""

        def step() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        async with self._permit():
            return await self.call(step)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[ThreadedConnection]:
        async with self._permit():
            conn = ThreadedConnection(self)
            try:
                yield conn
            finally:
                await conn.close()

    @contextlib.asynccontextmanager
    async def _permit(self) -> AsyncIterator[None]:
        """Wait (on the event loop) until the pool has a connection for us."""
        permits = self._permits
        if permits is None:
            yield
            return
        try:
            async with asyncio.timeout(PERMIT_TIMEOUT):
                await permits.acquire()
        except TimeoutError:
            raise SATimeoutError(
                f"no database connection free after {PERMIT_TIMEOUT:.0f}s (all in use)"
            ) from None
        try:
            yield
        finally:
            permits.release()

    async def dispose(self) -> None:
        def close() -> None:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self.engine.dispose()

        await self.call(close)
        self._thread.stop()
