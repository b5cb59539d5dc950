"""Message archive benchmark: fill an archive of any size through the SQL layer, then time the queries
MAM clients make (p50/p99), on SQLite or PostgreSQL.

    # fill: user archives (rows) across N users, plus one room; big batches, one transaction each
    .venv/bin/python -m bench.mam_archive fill --url sqlite:////tmp/mam.db \\
        --users 10000 --messages 10000000 --room-messages 1000000
    # the queries, against the same storage
    .venv/bin/python -m bench.mam_archive query --url sqlite:////tmp/mam.db --users 10000 --runs 200

``fill`` writes rows as the mam module stores them (a serialized <message/> with a body of 3-12
words from a 2,000-word vocabulary, its stanza-id, the body indexed for search), chronologically over
the last ``--days`` days, each row in the archive of a random user with a random other user as
'with' (so one user's rows are spread over the whole table, as in life). It goes through
``SqlBackend.append_archive`` — the same statements the server's batched writer uses — ``--batch``
rows per transaction, and reports rows/s. The room 'lobby@conference.localhost' gets
``--room-messages`` rows from 50 occupants.

On PostgreSQL ``--copy`` loads the same rows with COPY instead (asyncpg's binary copy into a temporary
table, then one ``INSERT … SELECT`` per batch that computes the tsvector as the server's own insert
does): the rows, ids, search words and indexes are the same, only the client round trips go. Into an
empty archive table it also drops the table's secondary indexes first and builds them again at the
end (one sort each instead of a random insert per row), so 10^7 rows fit in minutes, not an hour.

``query`` opens the storage as the server does and times, each ``--runs`` times with random users:

* last50_with   — the last 50 messages with one contact (RSM <before/>, 'with' bare)
* page_back_10  — the last page, then 10 more pages of 50 going back (the sum of 11 queries)
* since_day     — messages since yesterday ('start', first page of 50)
* search        — a full-text search for one word (last 50 matches)
* room_last50   — the room's last 50 messages
* count_with    — the RSM <count/> of one contact's messages (what ``rsm_count`` adds per query)

and prints p50/p99/mean in milliseconds (``--json FILE`` also writes them; ``--only search,…`` runs
just those, e.g. under callgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from sqlalchemy import text

from roost.storage import ArchiveItem, ArchiveQuery, StorageManager
from roost.storage.api import bare_jid, timestamp_to_us
from roost.storage.backend import QueuedAppend
from roost.storage.sql.archive import indexed_text
from roost.storage.sql.backend import SqlBackend
from roost.util.ids import time_ordered_id
from roost.xml.element import Element
from roost.xml.ns import CLIENT, STANZA_ID
from roost.xml.serializer import serialize

DOMAIN = "localhost"
ROOM_SERVICE = "conference.localhost"
ROOM = "lobby"
DAY = 86_400.0


def vocabulary(size: int = 2000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def user(n: int) -> str:
    return f"u{n:05d}"


def _message(frm: str, to: str, body: str, sid: str, by: str, type_: str = "chat") -> str:
    msg = Element("message", CLIENT, {"from": frm, "to": to, "type": type_, "id": sid[-8:]})
    msg.add("body", text=body)
    msg.add("stanza-id", STANZA_ID, {"id": sid, "by": by})
    return serialize(msg, CLIENT)


def _message_fast(frm: str, to: str, body: str, sid: str, by: str, type_: str = "chat") -> str:
    """``_message`` from a template: the fill's JIDs, ids and words need no escaping, and a third of
    the fill's time went to the serializer. ``generate`` checks the two agree on its first rows."""
    return (
        f'<message from="{frm}" to="{to}" type="{type_}" id="{sid[-8:]}"><body>{body}</body>'
        f'<stanza-id xmlns="{STANZA_ID}" id="{sid}" by="{by}"/></message>'
    )


def generate(
    users: int, messages: int, room_messages: int, days: float, seed: int, now: float
) -> Iterator[QueuedAppend]:
    """The rows of a fill, in time order (the same rows for the same arguments: Roost's fill and
    ``bench.mam_wire``'s Prosody fill write the same archives)."""
    rng = random.Random(seed)
    words = vocabulary()
    start = now - days * DAY
    total = messages + room_messages
    room_every = total / room_messages if room_messages else 0.0
    step = (now - start) / max(total, 1)
    occupants = [user(n) for n in range(min(50, users))]
    next_room = room_every
    checked = 0
    for n in range(total):
        ts = start + n * step
        body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        sid = time_ordered_id(int(ts * 1_000_000))
        if room_every and n + 1 >= next_room:
            next_room += room_every
            nick = rng.choice(occupants)
            room = f"{ROOM}@{ROOM_SERVICE}"
            room_args = (f"{room}/{nick}", "", body, sid, room, "groupchat")
            payload = _message_fast(*room_args)
            if checked < 100:
                checked += 1
                assert payload == _message(*room_args), "the payload template drifted from the serializer"
            item = ArchiveItem(sid, ts, f"{nick}@{DOMAIN}", payload, "groupchat")
            yield QueuedAppend("muc_mam", ROOM_SERVICE, ROOM, item, body)
        else:
            owner = rng.randrange(users)
            other = (owner + 1 + rng.randrange(users - 1)) % users
            owner_jid, other_jid = f"{user(owner)}@{DOMAIN}", f"{user(other)}@{DOMAIN}"
            incoming = rng.random() < 0.5
            frm, to = (f"{other_jid}/phone", owner_jid) if incoming else (f"{owner_jid}/phone", other_jid)
            payload = _message_fast(frm, to, body, sid, owner_jid)
            if checked < 100:
                checked += 1
                assert payload == _message(frm, to, body, sid, owner_jid), "the payload template drifted"
            with_jid = f"{other_jid}/phone" if incoming else other_jid
            yield QueuedAppend(
                "mam", DOMAIN, user(owner), ArchiveItem(sid, ts, with_jid, payload, "chat"), body
            )


_COPY_COLUMNS = (
    "n", "store", "domain", "username", "id", "ts", "with_jid", "with_bare", "kind", "payload", "search_text"
)  # fmt: skip
_COPY_STAGING = """CREATE TEMPORARY TABLE archive_load (n bigint, store text, domain text, username text,
  id text, ts bigint, with_jid text, with_bare text, kind text, payload text, search_text text)"""
#: What PG_APPEND (roost.storage.sql.archive) does per row, for a whole staged batch, in fill order.
_COPY_INSERT = """INSERT INTO archive
  (store, domain, username, id, ts, with_jid, with_bare, kind, payload, tsv)
  SELECT store, domain, username, id, ts, with_jid, with_bare, kind, payload,
         to_tsvector('simple', nullif(search_text, ''))
  FROM archive_load ORDER BY n"""


class Progress:
    """Rows written so far, reported on stderr every 5 s and at the end."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.written = 0
        self.started = self.last_report = time.perf_counter()

    def add(self, rows: int) -> None:
        self.written += rows
        t = time.perf_counter()
        if t - self.last_report >= 5 or self.written == self.total:
            rate = self.written / (t - self.started)
            print(f"  {self.written:,}/{self.total:,} rows, {rate:,.0f} rows/s", file=sys.stderr, flush=True)
            self.last_report = t


async def copy_fill(args: argparse.Namespace) -> None:
    """The fill on PostgreSQL through COPY (see the module's docstring)."""
    import asyncpg  # type: ignore[import-untyped]

    storage = await StorageManager.open(args.url)  # the schema, migrated to head
    await storage.close()
    conn = await asyncpg.connect(args.url.replace("postgresql+asyncpg://", "postgresql://"))
    progress = Progress(args.messages + args.room_messages)
    indexes: list[str] = []
    try:
        if await conn.fetchval("SELECT NOT EXISTS (SELECT 1 FROM archive)"):
            # A fresh table: build the secondary indexes once at the end (their definitions as the
            # migrations made them, read back from the catalog).
            rows = await conn.fetch(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i JOIN pg_class c ON c.relname = i.indexname "
                "JOIN pg_index x ON x.indexrelid = c.oid "
                "WHERE i.tablename = 'archive' AND NOT x.indisprimary AND NOT x.indisunique"
            )
            for row in rows:
                indexes.append(row["indexdef"])
                await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        await conn.execute(_COPY_STAGING)
        batch: list[tuple[object, ...]] = []

        async def flush() -> None:
            async with conn.transaction():
                await conn.copy_records_to_table("archive_load", records=batch, columns=_COPY_COLUMNS)
                await conn.execute(_COPY_INSERT)
                await conn.execute("TRUNCATE archive_load")
            progress.add(len(batch))
            batch.clear()

        rows = generate(args.users, args.messages, args.room_messages, args.days, args.seed, time.time())
        for n, e in enumerate(rows):
            item = e.item
            batch.append(
                (
                    n, e.store, e.domain, e.user, item.id, timestamp_to_us(item.timestamp), item.with_jid,
                    bare_jid(item.with_jid), item.kind, item.payload,
                    indexed_text(e.store, e.domain, e.user, e.search),
                )
            )  # fmt: skip
            if len(batch) >= args.batch:
                await flush()
        if batch:
            await flush()
        loaded = time.perf_counter() - progress.started
        print(f"  loaded in {loaded:.1f} s; building {len(indexes)} indexes", file=sys.stderr, flush=True)
        await conn.execute("SET maintenance_work_mem = '256MB'")
        for definition in indexes:
            await conn.execute(definition)
        indexes.clear()
        elapsed = time.perf_counter() - progress.started
        rows_done = progress.written
        print(f"filled {rows_done:,} rows in {elapsed:.1f} s ({rows_done / elapsed:,.0f} rows/s, COPY)")
        await conn.execute("ANALYZE archive")
    finally:
        for definition in indexes:  # interrupted: the table keeps its indexes
            await conn.execute(definition)
        await conn.close()


async def fill(args: argparse.Namespace) -> None:
    if args.copy:
        if not args.url.startswith("postgresql"):
            raise SystemExit("--copy is for PostgreSQL URLs")
        await copy_fill(args)
        return
    storage = await StorageManager.open(args.url)
    backend = storage._backend  # the SQL layer itself: no queue, one transaction per batch
    if not isinstance(backend, SqlBackend):
        raise SystemExit("fill needs an SQL storage URL (sqlite:///… or postgresql://…)")
    batch: list[QueuedAppend] = []
    progress = Progress(args.messages + args.room_messages)

    async def flush() -> None:
        await backend.append_archive(batch)
        progress.add(len(batch))
        batch.clear()

    rows = generate(args.users, args.messages, args.room_messages, args.days, args.seed, time.time())
    for row in rows:
        batch.append(row)
        if len(batch) >= args.batch:
            await flush()
    if batch:
        await flush()
    elapsed = time.perf_counter() - progress.started
    print(f"filled {progress.written:,} rows in {elapsed:.1f} s ({progress.written / elapsed:,.0f} rows/s)")
    # Planner statistics for the new rows, as autovacuum (PostgreSQL) or PRAGMA optimize would do later.
    async with backend.database.write() as conn:
        await conn.execute(text("ANALYZE archive"))
    await storage.close()


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _timed(
    runs: int, one: Callable[[random.Random], Awaitable[object]], rng: random.Random
) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        await one(rng)
        times.append((time.perf_counter() - t) * 1000)
    return times


async def query(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    storage = await StorageManager.open(args.url)
    mam = storage.archive("mam")
    rooms = storage.archive("muc_mam")
    words = vocabulary()
    now = time.time()

    def pick(rng: random.Random) -> tuple[str, str]:
        owner = rng.randrange(args.users)
        other = (owner + 1 + rng.randrange(args.users - 1)) % args.users
        return user(owner), f"{user(other)}@{DOMAIN}"

    async def last50_with(rng: random.Random) -> None:
        owner, other = pick(rng)
        await mam.query(DOMAIN, owner, ArchiveQuery(with_jid=other, limit=50, reverse=True))

    async def page_back_10(rng: random.Random) -> None:
        owner, _ = pick(rng)
        page, _ = await mam.query(DOMAIN, owner, ArchiveQuery(limit=50, reverse=True))
        for _ in range(10):
            if not page:
                break
            page, _ = await mam.query(
                DOMAIN, owner, ArchiveQuery(limit=50, reverse=True, before_id=page[0].id)
            )

    async def since_day(rng: random.Random) -> None:
        owner, _ = pick(rng)
        await mam.query(DOMAIN, owner, ArchiveQuery(start=now - DAY, limit=50))

    async def search(rng: random.Random) -> None:
        owner, _ = pick(rng)
        await mam.query(DOMAIN, owner, ArchiveQuery(text=rng.choice(words), limit=50, reverse=True))

    async def room_last50(rng: random.Random) -> None:
        await rooms.query(ROOM_SERVICE, ROOM, ArchiveQuery(limit=50, reverse=True))

    async def count_with(rng: random.Random) -> None:
        owner, other = pick(rng)
        await mam.count(DOMAIN, owner, ArchiveQuery(with_jid=other))

    scenarios: dict[str, Callable[[random.Random], Awaitable[None]]] = {
        "last50_with": last50_with,
        "page_back_10": page_back_10,
        "since_day": since_day,
        "search": search,
        "room_last50": room_last50,
        "count_with": count_with,
    }
    if args.only:
        wanted = args.only.split(",")
        unknown = [name for name in wanted if name not in scenarios]
        if unknown:
            raise SystemExit(f"unknown queries {unknown} (known: {', '.join(scenarios)})")
        scenarios = {name: scenarios[name] for name in wanted}
    rng = random.Random(args.seed)
    results: dict[str, dict[str, float]] = {}
    engine = args.url.split(":")[0]
    print(f"{'query':<14} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}   ({args.runs} runs, {engine})")
    for name, fn in scenarios.items():
        await _timed(min(5, args.runs), fn, rng)  # warm caches and statements
        times = await _timed(args.runs, fn, rng)
        results[name] = {
            "p50_ms": _percentile(times, 50),
            "p99_ms": _percentile(times, 99),
            "mean_ms": statistics.fmean(times),
        }
        r = results[name]
        print(f"{name:<14} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['mean_ms']:>9.2f}")
    rows = await storage.archive("mam").count(DOMAIN, user(0))
    print(f"(archive of {user(0)}: {rows:,} rows)")
    await storage.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mam_archive", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fill", help="fill an archive through the SQL layer")
    f.add_argument("--url", required=True, help="sqlite:///path.db or postgresql://user:pw@host/db")
    f.add_argument("--users", type=int, default=10_000)
    f.add_argument("--messages", type=int, default=10_000_000, help="rows in user archives")
    f.add_argument("--room-messages", type=int, default=1_000_000, help="rows in the one room's archive")
    f.add_argument("--days", type=float, default=365.0, help="the rows span this many days up to now")
    f.add_argument("--batch", type=int, default=20_000, help="rows per transaction")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--copy", action="store_true", help="PostgreSQL: load with COPY (same rows, faster)")
    q = sub.add_parser("query", help="time the MAM queries (p50/p99)")
    q.add_argument("--url", required=True)
    q.add_argument("--users", type=int, default=10_000, help="as given to fill")
    q.add_argument("--runs", type=int, default=200)
    q.add_argument("--seed", type=int, default=2)
    q.add_argument("--json", help="also write the figures to this file")
    q.add_argument("--only", help="only these queries, comma-separated (e.g. search: for callgrind)")
    args = parser.parse_args(argv)
    if args.command == "fill":
        if args.users < 2:
            raise SystemExit("--users must be at least 2")
        asyncio.run(fill(args))
    else:
        results = asyncio.run(query(args))
        if args.json:
            summary = {"url": args.url.split("@")[-1], "runs": args.runs, "results": results}
            Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
