"""The archive store on SQL (SQLite and PostgreSQL): keyset pages, filters, full-text search, retention.

Every page is a range read on one of the archive indexes of ``schema.py`` — (owner, ts, seq),
(owner, with_bare, ts, seq), (owner, id) — going forward or backward from an anchor, with one row more
than asked to tell whether the page is the last (RSM 'complete'); never an OFFSET. Full-text search is
engine-specific: an FTS5 table on SQLite (rowid = archive.seq; a trigger drops its rows with the
archive rows), a ``tsvector`` column on PostgreSQL ('simple' configuration, GIN index). Both are
owner-scoped: each indexed text starts with a token naming its archive (:func:`owner_token`) and each
search asks for that token too, so the index hands back only the owner's matches instead of every
owner's (migration 0005). Retention deletes the oldest rows of one archive (or of a whole store, by
age) a batch per transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    ColumnElement,
    Delete,
    Row,
    and_,
    bindparam,
    column,
    delete,
    false,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.storage.api import (
    ArchiveItem,
    ArchiveQuery,
    NoSuchItem,
    StorageError,
    bare_jid,
    search_words,
    timestamp_to_us,
    us_to_timestamp,
)
from roost.storage.sql.schema import SQLITE_FTS_TABLE, archive, archive_pg

if TYPE_CHECKING:
    from roost.storage.sql.backend import SqlDatabase

#: Statements with more bound ids than this are split (SQLite and asyncpg cap bound parameters).
ID_CHUNK: Final = 500


def chunks(values: Sequence[str]) -> list[Sequence[str]]:
    return [values[i : i + ID_CHUNK] for i in range(0, len(values), ID_CHUNK)]


_ARCHIVE_COLUMNS = (archive.c.id, archive.c.ts, archive.c.with_jid, archive.c.payload, archive.c.kind)


def owner_token(store: str, domain: str, user: str) -> str:
    """The word that names one archive in the full-text index: 'o' and the hex of its UTF-8 key.

    Letters and digits only, so FTS5's unicode61 tokenizer and PostgreSQL's parser keep it one word;
    exact rather than a hash (the SQL of migration 0005 computes the same string: hex() on SQLite,
    encode(convert_to(...), 'hex') on PostgreSQL). A search ANDs it with the words, so the index
    intersects the owner's short list with the word's instead of returning the word's rows of every
    owner (measured at 10^7 rows: a common word matched ~40,000 rows, ~180 ms p50).
    """
    return "o" + f"{store}/{domain}/{user}".encode().hex()


def indexed_text(store: str, domain: str, user: str, search: str) -> str:
    """What the full-text index holds for an item: the owner's token, then its search text ('' stays
    '': nothing is indexed)."""
    return f"{owner_token(store, domain, user)} {search}" if search else ""


def _item(row: Row[*tuple[Any, ...]]) -> ArchiveItem:
    return ArchiveItem(
        id=row.id,
        timestamp=us_to_timestamp(row.ts),
        with_jid=row.with_jid,
        payload=row.payload,
        kind=row.kind,
    )


class SqlArchive:
    def __init__(self, db: SqlDatabase, name: str) -> None:
        self._db = db
        self._name = name

    def _where(self, domain: str, user: str) -> list[ColumnElement[bool]]:
        a = archive.c
        return [a.store == self._name, a.domain == domain, a.username == user]

    async def _anchor(self, conn: AsyncConnection, domain: str, user: str, item_id: str) -> tuple[int, int]:
        a = archive.c
        # No ORDER BY: SQLite would walk the owner's time index to avoid a sort instead of seeking the
        # id index. An id is stored once (rarely twice): the earliest wins.
        stmt = select(a.ts, a.seq).where(*self._where(domain, user), a.id == item_id)
        rows = [(int(row.ts), int(row.seq)) for row in (await conn.execute(stmt)).all()]
        if not rows:
            raise NoSuchItem(item_id)
        return min(rows)

    async def _filters(
        self, conn: AsyncConnection, domain: str, user: str, q: ArchiveQuery
    ) -> list[ColumnElement[bool]]:
        a = archive.c
        where = self._where(domain, user)
        if q.with_jid is not None:
            # XEP-0313 §4.1.1: a bare 'with' matches every resource of that JID, a full one only itself.
            # with_bare is also compared for a full JID so that the planner picks ix_archive_with.
            where.append(a.with_bare == bare_jid(q.with_jid))
            if "/" in q.with_jid:
                where.append(a.with_jid == q.with_jid)
        if q.start is not None:
            where.append(a.ts >= timestamp_to_us(q.start))
        if q.end is not None:
            where.append(a.ts <= timestamp_to_us(q.end))
        if q.ids is not None:
            wanted = list(dict.fromkeys(q.ids))
            present: set[str] = set()
            seqs: list[int] = []
            for chunk in chunks(wanted):
                stmt = select(a.id, a.seq).where(*self._where(domain, user), a.id.in_(chunk))
                for row in (await conn.execute(stmt)).all():
                    present.add(row.id)
                    seqs.append(int(row.seq))
            for item_id in wanted:
                if item_id not in present:
                    raise NoSuchItem(item_id)
            # The rows by their keys (all of them the owner's), without the owner filters: otherwise
            # SQLite picks an owner-prefixed index for the other filters and scans it.
            where = [a.seq.in_(seqs), *where[len(self._where(domain, user)) :]]
        if q.text is not None:
            where.append(self._matching(domain, user, q.text))
        return where

    def _matching(self, domain: str, user: str, text: str) -> ColumnElement[bool]:
        """XEP-0431 full-text: every word of ``text`` in the item's search text, and the owner's token
        (the index's own owner scope; the owner columns are still compared, so it only narrows)."""
        words = search_words(text)
        if not words:
            return false()
        words = [owner_token(self._name, domain, user), *words]
        if self._db.dialect == "sqlite":
            query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
            return archive.c.seq.in_(
                select(_FTS.c.rowid).where(literal_column(SQLITE_FTS_TABLE).op("MATCH")(query))
            )
        return literal_column("archive.tsv").op("@@")(
            func.plainto_tsquery(literal_column("'simple'"), " ".join(words))
        )

    async def query(self, domain: str, user: str, q: ArchiveQuery) -> tuple[builtins.list[ArchiveItem], bool]:
        a = archive.c
        limit = max(q.limit, 0)
        async with self._db.read() as conn:
            where = await self._filters(conn, domain, user, q)
            # Positions compare as (ts, seq); spelled with a plain range on ts so that the index is used.
            if q.after_id is not None:
                ts, seq = await self._anchor(conn, domain, user, q.after_id)
                where.append(and_(a.ts >= ts, or_(a.ts > ts, a.seq > seq)))
            if q.before_id is not None:
                ts, seq = await self._anchor(conn, domain, user, q.before_id)
                where.append(and_(a.ts <= ts, or_(a.ts < ts, a.seq < seq)))
            if q.ids is not None:
                # At most len(ids) rows: sort and page them here rather than let SQLite pick the time
                # index for the ORDER BY and scan the whole archive.
                stmt = select(*_ARCHIVE_COLUMNS, a.seq).where(*where)
                rows = sorted((await conn.execute(stmt)).all(), key=lambda row: (row.ts, row.seq))
                if q.reverse:
                    rows.reverse()
                del rows[limit + 1 :]
            else:
                order = (a.ts.desc(), a.seq.desc()) if q.reverse else (a.ts, a.seq)
                # One row more than the page tells whether the page is the last one (RSM 'complete').
                stmt = select(*_ARCHIVE_COLUMNS, a.seq).where(*where).order_by(*order).limit(limit + 1)
                rows = list((await conn.execute(stmt)).all())
        complete = len(rows) <= limit
        page = [_item(row) for row in rows[:limit]]
        if q.reverse:
            page.reverse()
        return page, complete

    async def count(self, domain: str, user: str, q: ArchiveQuery | None = None) -> int:
        async with self._db.read() as conn:
            where = self._where(domain, user) if q is None else await self._filters(conn, domain, user, q)
            return int(
                (await conn.execute(select(func.count()).select_from(archive).where(*where))).scalar_one()
            )

    async def delete(self, domain: str, user: str, ids: Sequence[str] | None = None) -> int:
        statements: list[Delete]
        if ids is None:
            statements = [delete(archive).where(*self._where(domain, user))]
        else:
            statements = [
                delete(archive).where(*self._where(domain, user), archive.c.id.in_(chunk))
                for chunk in chunks(list(dict.fromkeys(ids)))
            ]
        deleted = 0
        if statements:
            async with self._db.write() as conn:
                for stmt in statements:
                    deleted += (await conn.execute(stmt)).rowcount
        return deleted

    async def pop_all(self, domain: str, user: str) -> builtins.list[ArchiveItem]:
        # DELETE … RETURNING: two concurrent pops cannot both return the same item (offline delivery).
        stmt = delete(archive).where(*self._where(domain, user)).returning(*_ARCHIVE_COLUMNS, archive.c.seq)
        async with self._db.write() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_item(row) for row in sorted(rows, key=lambda row: (row.ts, row.seq))]

    async def delete_user(self, domain: str, user: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(archive).where(*self._where(domain, user)))

    async def ends(self, domain: str, user: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        a = archive.c
        base = select(*_ARCHIVE_COLUMNS).where(*self._where(domain, user))
        async with self._db.read() as conn:
            first = (await conn.execute(base.order_by(a.ts, a.seq).limit(1))).first()
            if first is None:
                return None, None
            last = (await conn.execute(base.order_by(a.ts.desc(), a.seq.desc()).limit(1))).first()
        assert last is not None
        return _item(first), _item(last)

    async def replace(self, domain: str, user: str, item_id: str, payload: str, *, search: str = "") -> bool:
        stmt = update(archive).where(*self._where(domain, user), archive.c.id == item_id)
        async with self._db.write() as conn:
            if self._db.dialect == "sqlite":
                seqs = (await conn.execute(stmt.values(payload=payload).returning(archive.c.seq))).scalars()
                if seqs:
                    await conn.execute(delete(_FTS).where(_FTS.c.rowid.in_(seqs)))
                    if search:
                        body = indexed_text(self._name, domain, user, search)
                        await conn.execute(insert(_FTS), [{"rowid": seq, "body": body} for seq in seqs])
            else:
                result = await conn.execute(
                    update(archive_pg)
                    .where(
                        archive_pg.c.store == self._name,
                        archive_pg.c.domain == domain,
                        archive_pg.c.username == user,
                        archive_pg.c.id == item_id,
                    )
                    .values(
                        payload=payload,
                        tsv=_pg_tsvector(
                            bindparam("search_text", indexed_text(self._name, domain, user, search))
                        ),
                    )
                    .returning(archive_pg.c.seq)
                )
                seqs = list(result.scalars())
        return bool(seqs)

    def _oldest(self, where: list[ColumnElement[bool]], batch: int) -> Delete:
        a = archive.c
        doomed = select(a.seq).where(*where).order_by(a.ts, a.seq).limit(batch)
        return delete(archive).where(a.seq.in_(doomed))

    async def trim(
        self,
        domain: str,
        user: str,
        *,
        before: float | None = None,
        keep: int | None = None,
        batch: int = 1000,
    ) -> int:
        a = archive.c
        owner = self._where(domain, user)
        reasons: list[ColumnElement[bool]] = []
        async with self._db.write() as conn:
            if keep == 0:
                reasons.append(a.seq.is_not(None))
            elif keep is not None:
                # The newest item beyond the ones kept; it and everything older go.
                stmt = select(a.ts, a.seq).where(*owner).order_by(a.ts.desc(), a.seq.desc())
                row = (await conn.execute(stmt.offset(keep).limit(1))).first()
                if row is not None:
                    ts, seq = int(row.ts), int(row.seq)
                    reasons.append(and_(a.ts <= ts, or_(a.ts < ts, a.seq <= seq)))
            if before is not None:
                reasons.append(a.ts < timestamp_to_us(before))
            if not reasons:
                return 0
            result = await conn.execute(self._oldest([*owner, or_(*reasons)], batch))
            return int(result.rowcount)

    async def expire(self, before: float, *, batch: int = 1000, spare: Sequence[tuple[str, str]] = ()) -> int:
        a = archive.c
        where: list[ColumnElement[bool]] = [a.store == self._name, a.ts < timestamp_to_us(before)]
        for domain, user in spare:
            where.append(not_(and_(a.domain == domain, a.username == user)))
        async with self._db.write() as conn:
            return int((await conn.execute(self._oldest(where, batch))).rowcount)

    async def owners(
        self, after: tuple[str, str] | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, str]]:
        # A loose index scan: one index seek per owner, never a DISTINCT over the whole table.
        a = archive.c
        found: list[tuple[str, str]] = []
        async with self._db.read() as conn:
            while len(found) < limit:
                stmt = select(a.domain, a.username).where(a.store == self._name)
                if after is not None:
                    domain, user = after
                    stmt = stmt.where(or_(a.domain > domain, and_(a.domain == domain, a.username > user)))
                row = (await conn.execute(stmt.order_by(a.domain, a.username).limit(1))).first()
                if row is None:
                    break
                after = (row.domain, row.username)
                found.append(after)
        return found


#: The SQLite full-text table (rowid = archive.seq), made by migration 0003.
_FTS = table(SQLITE_FTS_TABLE, column("rowid"), column("body"))


def _pg_tsvector(text: Any) -> Any:
    """PostgreSQL: the tsvector of a search text ('simple': no stemming, like FTS5); NULL for ''."""
    return func.to_tsvector(literal_column("'simple'"), func.nullif(text, ""))


_SQLITE_INSERT: Final = (
    "INSERT INTO archive (store, domain, username, id, ts, with_jid, with_bare, kind, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MAX_ROWID: Final = (1 << 63) - 1
_SQLITE_INSERT_FTS: Final = f"INSERT INTO {SQLITE_FTS_TABLE} (rowid, body) VALUES (?, ?)"


def sqlite_append(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    """The archive's hot write on SQLite, in the caller's (BEGIN IMMEDIATE) transaction: plain DB-API
    statements, which SQLite caches, instead of SQLAlchemy's per-row parameter processing. Rows with
    search text also get a full-text row keyed by the archive row's rowid (its owner's token first:
    :func:`indexed_text`)."""
    cursor = connection.connection.driver_connection.cursor()
    try:
        if not any(row[9] for row in rows):
            cursor.executemany(_SQLITE_INSERT, [row[:9] for row in rows])
            return
        # This transaction is the only writer, and SQLite gives a new row max(rowid) + 1 as long as that
        # is below the largest rowid (https://sqlite.org/autoinc.html): then the batch's rowids are the
        # range after `before`. Near that limit SQLite picks rowids at random: one by one, reading each.
        before = cursor.execute("SELECT max(seq) FROM archive").fetchone()[0] or 0
        if before < _MAX_ROWID - len(rows):
            cursor.executemany(_SQLITE_INSERT, [row[:9] for row in rows])
            after = cursor.execute("SELECT max(seq) FROM archive").fetchone()[0]
            if after - before != len(rows):
                raise StorageError(f"archive rowids {before}..{after} for {len(rows)} rows: not a range")
            cursor.executemany(
                _SQLITE_INSERT_FTS,
                [
                    (before + 1 + i, indexed_text(row[0], row[1], row[2], row[9]))
                    for i, row in enumerate(rows)
                    if row[9]
                ],
            )
            return
        for row in rows:
            cursor.execute(_SQLITE_INSERT, row[:9])
            if row[9]:
                cursor.execute(
                    _SQLITE_INSERT_FTS, (cursor.lastrowid, indexed_text(row[0], row[1], row[2], row[9]))
                )
    finally:
        cursor.close()


PG_APPEND = insert(archive_pg).values(tsv=_pg_tsvector(bindparam("search_text")))
