"""One SQL backend for SQLite and PostgreSQL (asyncpg), on SQLAlchemy Core 2.

SQLite specifics: WAL (readers never block the writer), synchronous=NORMAL (durable at checkpoints, never
corrupt), busy_timeout (``roost user add`` may write to the same file while the server runs), foreign keys
on, and write transactions that start with BEGIN IMMEDIATE so that a read-then-write transaction cannot
fail half-way with SQLITE_BUSY; writes within this process take turns on an asyncio lock instead of
spinning in SQLite's busy handler. SQLite runs on a sync engine in one dedicated thread (see
``threaded.py`` for why not aiosqlite), so none of this blocks the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import (
    ColumnElement,
    Insert,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from roost.storage.api import (
    JSON,
    AccountExists,
    NoSuchAccount,
    StorageError,
    StoredCredentials,
    StoredCredentialsLike,
    bare_jid,
    credentials_by_hash,
    decode_json,
    encode_json,
    timestamp_to_us,
)
from roost.storage.backend import QueuedAppend
from roost.storage.sql import migrate
from roost.storage.sql.archive import PG_APPEND, SqlArchive, chunks, indexed_text, sqlite_append
from roost.storage.sql.schema import (
    account_credentials,
    accounts,
    archive,
    kv,
    map_,
)
from roost.storage.sql.threaded import ThreadedEngine
from roost.util.bounded import TrackedDict

log = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS: Final = 10_000
_WRITE_OPTION: Final = "roost_write"


def _describe(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement dump."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# Statements on the login path, built once (building and cache-keying a statement costs more than
# SQLite takes to answer it).
_USER_KV = select(kv.c.store, kv.c.value).where(
    kv.c.domain == bindparam("domain"), kv.c.username == bindparam("username")
)
_USER_MAP = select(map_.c.store, map_.c.key, map_.c.value).where(
    map_.c.domain == bindparam("domain"), map_.c.username == bindparam("username")
)
_CREDENTIALS = select(
    account_credentials.c.hash_name,
    account_credentials.c.salt,
    account_credentials.c.iterations,
    account_credentials.c.stored_key,
    account_credentials.c.server_key,
).where(
    account_credentials.c.domain == bindparam("domain"),
    account_credentials.c.username == bindparam("username"),
    account_credentials.c.hash_name == bindparam("hash_name"),
)


class UserSnapshot:
    """All key-value and map rows of one user, read in one round trip (values still JSON text)."""

    __slots__ = ("kv", "loaded_at", "maps")

    def __init__(
        self, kv_rows: dict[str, str], map_rows: dict[str, dict[str, str]], loaded_at: float
    ) -> None:
        self.kv = kv_rows
        self.maps = map_rows
        self.loaded_at = loaded_at


class UserReadCache:
    """Short-lived per-user snapshots, so the reads modules make when a user logs in cost one query.

    When a session starts, several modules each read their own store for that user (roster,
    blocklist, vCard photo, privacy setting, …): one SQL round trip each was most of a login's CPU.
    The first read loads every key-value and map row of the user at once; the others are served
    from that snapshot for ``ttl`` seconds. Any write for the user drops it (a generation counter
    keeps a load that raced with a write from being stored).
    """

    def __init__(self, ttl: float = 5.0, size: int = 2048) -> None:
        self.ttl = ttl
        self.size = size
        self._snapshots: dict[tuple[str, str], UserSnapshot] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[UserSnapshot]] = {}
        self._generation: TrackedDict[tuple[str, str], int] = TrackedDict()  # frozen once (docs/gc.md)

    def invalidate(self, domain: str, user: str) -> None:
        """Forget the user's snapshot (and any load of it now in flight)."""
        self._snapshots.pop((domain, user), None)
        self.bump(domain, user)

    def bump(self, domain: str, user: str) -> None:
        """Keep a load that is in flight now from being stored: it may predate a write."""
        key = (domain, user)
        self._generation[key] = self._generation.get(key, 0) + 1
        if len(self._generation) > 4 * self.size:
            self._generation.clear()

    def cached(self, domain: str, user: str) -> UserSnapshot | None:
        return self._snapshots.get((domain, user))

    async def get(self, db: SqlDatabase, domain: str, user: str) -> UserSnapshot:
        key = (domain, user)
        loop = asyncio.get_running_loop()
        snapshot = self._snapshots.get(key)
        if snapshot is not None and loop.time() - snapshot.loaded_at < self.ttl:
            return snapshot
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[UserSnapshot] = loop.create_future()
        self._loading[key] = future
        generation = self._generation.get(key, 0)
        try:
            snapshot = await self._load(db, domain, user, loop.time())
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(snapshot)
        if self._generation.get(key, 0) == generation:
            if len(self._snapshots) >= self.size:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[key] = snapshot
        return snapshot

    @staticmethod
    async def _load(db: SqlDatabase, domain: str, user: str, now: float) -> UserSnapshot:
        params = {"domain": domain, "username": user}
        kv_found, map_found = await db.fetch_many([(_USER_KV, params), (_USER_MAP, params)])
        return _snapshot(kv_found, map_found, now)

    def offer(self, domain: str, user: str, snapshot: UserSnapshot, generation: int) -> None:
        """Keep a snapshot read along with something else (credentials at login) unless a write intervened."""
        key = (domain, user)
        if self._generation.get(key, 0) == generation and key not in self._snapshots:
            if len(self._snapshots) >= self.size:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[key] = snapshot

    def generation(self, domain: str, user: str) -> int:
        return self._generation.get((domain, user), 0)


def _snapshot(kv_found: list[tuple[Any, ...]], map_found: list[tuple[Any, ...]], now: float) -> UserSnapshot:
    kv_rows: dict[str, str] = {store: value for store, value in kv_found}
    map_rows: dict[str, dict[str, str]] = {}
    for store, key, value in map_found:
        map_rows.setdefault(store, {})[key] = value
    return UserSnapshot(kv_rows, map_rows, now)


class SqlDatabase:
    """Engine plus the two ways to use it: ``read()`` and ``write()`` (a committed transaction)."""

    def __init__(self, engine: AsyncEngine | ThreadedEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None
        self.user_cache = UserReadCache()
        self._upserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Insert] = {}

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Any]:
        """A connection for reads, rolled back at the end (on SQLite its statements share one snapshot)."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"storage read failed: {_describe(exc)}") from exc

    async def fetch(self, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of a prebuilt SELECT with named bind parameters (the login path's reads)."""
        return (await self.fetch_many([(statement, params)]))[0]

    async def fetch_many(
        self, steps: Sequence[tuple[Any, dict[str, Any]]], *, stop_when_empty: bool = False
    ) -> list[list[tuple[Any, ...]]]:
        """Several prebuilt SELECTs; on SQLite in one trip to the database thread."""
        try:
            engine = self.engine
            if isinstance(engine, ThreadedEngine):
                return await engine.fetch_many(steps, stop_when_empty=stop_when_empty)
            results: list[list[tuple[Any, ...]]] = []
            async with engine.connect() as conn:
                for statement, params in steps:
                    rows = [tuple(row) for row in await conn.execute(statement, params)]
                    results.append(rows)
                    if stop_when_empty and not rows:
                        break
            return results
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"storage read failed: {_describe(exc)}") from exc
        except Exception as exc:  # sqlite3 errors from the raw driver connection
            if type(exc).__module__.startswith("sqlite3"):
                raise StorageError(f"storage read failed: {type(exc).__name__}: {exc}") from exc
            raise

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        """One transaction, committed if the block succeeds. Storage-level errors pass through as they are."""
        lock = self._write_lock if self._write_lock is not None else contextlib.nullcontext()
        try:
            async with lock, self.engine.connect() as conn:
                await conn.execution_options(**{_WRITE_OPTION: True})
                async with conn.begin():
                    yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(f"storage write failed: {_describe(exc)}") from exc

    @contextlib.asynccontextmanager
    async def writing_user(
        self, domain: str, user: str, apply: Callable[[UserSnapshot], None] | None = None
    ) -> AsyncIterator[None]:
        """Around a write of a user's key-value/map rows: once it is committed, ``apply`` updates the
        cached snapshot in place (without ``apply``, or if the write fails, the snapshot is dropped).
        Loads that overlapped the write are never stored."""
        cache = self.user_cache
        cache.bump(domain, user)
        try:
            yield
        except BaseException:
            cache.invalidate(domain, user)
            raise
        snapshot = cache.cached(domain, user)
        if snapshot is not None and apply is not None:
            apply(snapshot)
            cache.bump(domain, user)
        else:
            cache.invalidate(domain, user)

    def insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """The dialect's INSERT, for ON CONFLICT upserts (both engines spell it the same way)."""
        return sqlite.insert(table) if self.dialect == "sqlite" else postgresql.insert(table)

    def upsert(self, table: Table, keys: Sequence[str], values: Sequence[str]) -> Insert:
        """INSERT … ON CONFLICT (keys) DO UPDATE values; built once per shape (building one costs
        more than SQLite takes to run it)."""
        shape = (table.name, tuple(keys), tuple(values))
        stmt = self._upserts.get(shape)
        if stmt is None:
            insert_ = self.insert(table)
            stmt = self._upserts[shape] = insert_.on_conflict_do_update(
                index_elements=[table.c[name] for name in keys],
                set_={name: insert_.excluded[name] for name in values},
            )
        return stmt


class SqlAccounts:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    @staticmethod
    def _rows(domain: str, username: str, creds: Mapping[str, StoredCredentials]) -> list[dict[str, Any]]:
        return [
            {
                "domain": domain,
                "username": username,
                "hash_name": c.hash_name,
                "salt": c.salt,
                "iterations": c.iterations,
                "stored_key": c.stored_key,
                "server_key": c.server_key,
            }
            for c in creds.values()
        ]

    async def create(self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]) -> None:
        creds = credentials_by_hash(credentials)
        async with self._db.write() as conn:
            try:
                await conn.execute(insert(accounts).values(domain=domain, username=username))
            except IntegrityError:
                raise AccountExists(f"{username}@{domain}") from None
            if creds:
                await conn.execute(insert(account_credentials), self._rows(domain, username, creds))

    async def get_credentials(self, domain: str, username: str, hash_name: str) -> StoredCredentials | None:
        # A login looks up credentials and, right after, every module reads the user's data: the
        # user's snapshot comes along in the same trip to the database.
        params = {"domain": domain, "username": username, "hash_name": hash_name}
        cache = self._db.user_cache
        generation = cache.generation(domain, username)
        now = asyncio.get_running_loop().time()
        found = await self._db.fetch_many(
            [(_CREDENTIALS, params), (_USER_KV, params), (_USER_MAP, params)], stop_when_empty=True
        )
        rows = found[0]
        if not rows:
            return None
        if len(found) == 3:
            cache.offer(domain, username, _snapshot(found[1], found[2], now), generation)
        hash_name_, salt, iterations, stored_key, server_key = rows[0]
        return StoredCredentials(
            hash_name=hash_name_,
            salt=bytes(salt),
            iterations=iterations,
            stored_key=bytes(stored_key),
            server_key=bytes(server_key),
        )

    async def set_credentials(
        self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]
    ) -> None:
        creds = credentials_by_hash(credentials)
        a, c = accounts.c, account_credentials.c
        async with self._db.write() as conn:
            # FOR UPDATE keeps a concurrent delete out on PostgreSQL; SQLite's BEGIN IMMEDIATE already has.
            found = await conn.execute(
                select(a.username).where(a.domain == domain, a.username == username).with_for_update()
            )
            if found.first() is None:
                raise NoSuchAccount(f"{username}@{domain}")
            await conn.execute(delete(account_credentials).where(c.domain == domain, c.username == username))
            if creds:
                await conn.execute(insert(account_credentials), self._rows(domain, username, creds))

    async def delete(self, domain: str, username: str) -> bool:
        async with self._db.write() as conn:
            return await _delete_account(conn, domain, username)

    async def exists(self, domain: str, username: str) -> bool:
        a = accounts.c
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(a.username).where(a.domain == domain, a.username == username))
            ).first()
        return row is not None

    async def list(self, domain: str | None = None) -> builtins.list[tuple[str, str]]:
        a = accounts.c
        stmt = select(a.domain, a.username).order_by(a.domain, a.username)
        if domain is not None:
            stmt = stmt.where(a.domain == domain)
        async with self._db.read() as conn:
            return [(row.domain, row.username) for row in await conn.execute(stmt)]

    async def count(self, domain: str | None = None) -> int:
        stmt = select(func.count()).select_from(accounts)
        if domain is not None:
            stmt = stmt.where(accounts.c.domain == domain)
        async with self._db.read() as conn:
            return int((await conn.execute(stmt)).scalar_one())


async def _delete_account(conn: AsyncConnection, domain: str, username: str) -> bool:
    a, c = accounts.c, account_credentials.c
    # The foreign key cascades too; deleting explicitly keeps it right even if a tool opened the file
    # without PRAGMA foreign_keys.
    await conn.execute(delete(account_credentials).where(c.domain == domain, c.username == username))
    result = await conn.execute(delete(accounts).where(a.domain == domain, a.username == username))
    return result.rowcount > 0


class SqlKeyValue:
    def __init__(self, db: SqlDatabase, name: str) -> None:
        self._db = db
        self._name = name

    def _where(self, domain: str, user: str) -> list[ColumnElement[bool]]:
        return [kv.c.store == self._name, kv.c.domain == domain, kv.c.username == user]

    async def get(self, domain: str, user: str) -> JSON | None:
        snapshot = await self._db.user_cache.get(self._db, domain, user)
        text = snapshot.kv.get(self._name)
        return None if text is None else decode_json(text)

    async def set(self, domain: str, user: str, value: JSON | None) -> None:
        name = self._name
        if value is None:

            def forget(snapshot: UserSnapshot) -> None:
                snapshot.kv.pop(name, None)

            async with self._db.writing_user(domain, user, forget), self._db.write() as conn:
                await conn.execute(delete(kv).where(*self._where(domain, user)))
            return
        text = encode_json(value)
        stmt = self._db.upsert(kv, ("store", "domain", "username"), ("value",))

        def remember(snapshot: UserSnapshot) -> None:
            snapshot.kv[name] = text

        async with self._db.writing_user(domain, user, remember), self._db.write() as conn:
            await conn.execute(stmt, {"store": self._name, "domain": domain, "username": user, "value": text})

    async def set_users(self, domain: str, values: Mapping[str, JSON | None]) -> None:
        if not values:
            return
        encoded = {user: None if value is None else encode_json(value) for user, value in values.items()}
        gone = [user for user, text in encoded.items() if text is None]
        rows = [
            {"store": self._name, "domain": domain, "username": user, "value": text}
            for user, text in encoded.items()
            if text is not None
        ]
        cache = self._db.user_cache
        for user in encoded:
            cache.bump(domain, user)
        try:
            async with self._db.write() as conn:
                for chunk in chunks(gone):
                    await conn.execute(
                        delete(kv).where(
                            kv.c.store == self._name, kv.c.domain == domain, kv.c.username.in_(chunk)
                        )
                    )
                if rows:
                    await conn.execute(self._db.upsert(kv, ("store", "domain", "username"), ("value",)), rows)
        finally:
            for user in encoded:
                cache.invalidate(domain, user)


class SqlMap:
    def __init__(self, db: SqlDatabase, name: str) -> None:
        self._db = db
        self._name = name

    def _where(self, domain: str, user: str) -> list[ColumnElement[bool]]:
        return [map_.c.store == self._name, map_.c.domain == domain, map_.c.username == user]

    async def get(self, domain: str, user: str, key: str) -> JSON | None:
        snapshot = await self._db.user_cache.get(self._db, domain, user)
        text = snapshot.maps.get(self._name, {}).get(key)
        return None if text is None else decode_json(text)

    async def set(self, domain: str, user: str, key: str, value: JSON | None) -> None:
        await self.set_many(domain, user, {key: value})

    async def set_many(self, domain: str, user: str, items: Mapping[str, JSON | None]) -> None:
        gone = [key for key, value in items.items() if value is None]
        rows = [
            {"store": self._name, "domain": domain, "username": user, "key": key, "value": encode_json(value)}
            for key, value in items.items()
            if value is not None
        ]
        if not gone and not rows:
            return

        def apply(snapshot: UserSnapshot) -> None:
            values = snapshot.maps.setdefault(self._name, {})
            for key in gone:
                values.pop(key, None)
            for row in rows:
                values[row["key"]] = row["value"]

        async with self._db.writing_user(domain, user, apply), self._db.write() as conn:
            for chunk in chunks(gone):
                await conn.execute(delete(map_).where(*self._where(domain, user), map_.c.key.in_(chunk)))
            if rows:
                await conn.execute(
                    self._db.upsert(map_, ("store", "domain", "username", "key"), ("value",)), rows
                )

    async def items(self, domain: str, user: str) -> dict[str, JSON]:
        snapshot = await self._db.user_cache.get(self._db, domain, user)
        return {key: decode_json(text) for key, text in snapshot.maps.get(self._name, {}).items()}

    async def delete_user(self, domain: str, user: str) -> None:
        async with self._db.writing_user(domain, user), self._db.write() as conn:
            await conn.execute(delete(map_).where(*self._where(domain, user)))


class SqlBackend:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        self._accounts = SqlAccounts(db)

    @property
    def database(self) -> SqlDatabase:
        return self._db

    @property
    def accounts(self) -> SqlAccounts:
        return self._accounts

    def keyvalue(self, name: str) -> SqlKeyValue:
        return SqlKeyValue(self._db, name)

    def map(self, name: str) -> SqlMap:
        return SqlMap(self._db, name)

    def archive(self, name: str) -> SqlArchive:
        return SqlArchive(self._db, name)

    async def append_archive(self, entries: Sequence[QueuedAppend]) -> None:
        if not entries:
            return
        if self._db.dialect == "sqlite":
            # The rows are built in the database thread, off the event loop (entries are immutable).
            async with self._db.write() as conn:
                await conn.run_sync(_sqlite_append_entries, entries)
            return
        pg_rows = [
            {
                "store": e.store,
                "domain": e.domain,
                "username": e.user,
                "id": e.item.id,
                "ts": timestamp_to_us(e.item.timestamp),
                "with_jid": e.item.with_jid,
                "with_bare": bare_jid(e.item.with_jid),
                "kind": e.item.kind,
                "payload": e.item.payload,
                "search_text": indexed_text(e.store, e.domain, e.user, e.search),
            }
            for e in entries
        ]
        async with self._db.write() as conn:
            await conn.execute(PG_APPEND, pg_rows)

    async def delete_user(self, domain: str, username: str) -> None:
        async with self._db.writing_user(domain, username), self._db.write() as conn:
            await _delete_account(conn, domain, username)
            for table in (kv, map_, archive):
                await conn.execute(
                    delete(table).where(table.c.domain == domain, table.c.username == username)
                )

    async def migrate(self, progress: Callable[[str], None]) -> None:
        async with self._db.write() as conn:
            await conn.run_sync(migrate.upgrade, progress)

    async def close(self) -> None:
        await self._db.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook emit BEGIN instead of pysqlite's legacy implicit transactions,
    # so that DDL is transactional and reads share one snapshot.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Writes (and migrations) run in BEGIN IMMEDIATE transactions. Reads stay in autocommit: each
    # statement sees a committed state, and no BEGIN/ROLLBACK pair is spent on them.
    if conn.get_execution_options().get(_WRITE_OPTION, False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _normalize_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"not a storage URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or (parsed.database or "").startswith("file::memory:"):
            raise StorageError(
                "an SQLite storage URL needs a file path (sqlite:///path/roost.db); use memory://"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise StorageError(
        f"unsupported storage URL scheme {parsed.drivername!r}: use memory://, sqlite:///… or postgresql://…"
    )


def _owner_only_database(database: str) -> None:
    """Create the SQLite file (and its directory) readable by its owner only: it holds SCRAM keys.

    SQLite gives its -wal and -shm files the database file's permissions. An existing database
    that others may read is tightened to 0600.
    """
    if not database or database.startswith((":memory:", "file:")):
        return
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077 and path.stat().st_uid == os.getuid():
            log.warning("database %s was readable by others (mode %o): now 0600", path, mode)
            path.chmod(0o600)


async def open_sql_backend(url: str, *, progress: Callable[[str], None]) -> SqlBackend:
    """Create the engine for ``url`` and migrate the schema to head."""
    sa_url = _normalize_url(url)
    # hide_parameters: SQL errors end up in logs, and bound values include SCRAM keys and message bodies.
    if sa_url.get_backend_name() == "sqlite":
        assert sa_url.database is not None
        await asyncio.to_thread(_owner_only_database, sa_url.database)
        sync_engine = create_engine(sa_url, hide_parameters=True)
        event.listen(sync_engine, "connect", _sqlite_pragmas)
        event.listen(sync_engine, "begin", _sqlite_begin)
        engine: AsyncEngine | ThreadedEngine = ThreadedEngine(sync_engine)
    else:
        engine = create_async_engine(sa_url, hide_parameters=True, pool_pre_ping=True)
    backend = SqlBackend(SqlDatabase(engine))
    try:
        await backend.migrate(progress)
    except BaseException:
        await engine.dispose()
        raise
    log.debug("storage: opened %s", sa_url.render_as_string(hide_password=True))
    return backend


def _sqlite_append_entries(connection: Any, entries: Sequence[QueuedAppend]) -> None:
    rows = [
        (
            e.store,
            e.domain,
            e.user,
            e.item.id,
            timestamp_to_us(e.item.timestamp),
            e.item.with_jid,
            bare_jid(e.item.with_jid),
            e.item.kind,
            e.item.payload,
            e.search,
        )
        for e in entries
    ]
    sqlite_append(connection, rows)
