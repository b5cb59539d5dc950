"""Archive queries over the wire, Roost against Prosody's mod_mam, on the same archives.

``bench.mam_archive fill`` writes Roost's archive; ``prosody-fill`` writes the same rows (same
generator, same arguments) into the ``prosodyarchive`` table of Prosody's mod_storage_sql on SQLite, as
mod_mam 0.12 stores them (host, user, store 'archive', key, when in seconds, with = bare JID, the
stanza as XML text). ``compare`` then starts each server on its filled database (Roost with ``[mam]``
on, Prosody with mod_mam on SQL storage, accounts for the first ``--accounts`` users), logs in over
STARTTLS + SCRAM like the other benchmarks and times, per query from sending the <iq/> to its result
(the forwarded messages included), p50/p99 in ms:

* last50_with  — the last 50 with one contact (form 'with', RSM <before/>)
* page_back_10 — the last page of 50, then 10 more going back (RSM <before>first id</before>), summed
* since_day    — the first 50 since yesterday (form 'start')
* search       — Roost only (XEP-0431 full-text; Prosody 0.12's mod_mam has no search)

    .venv/bin/python -m bench.mam_archive fill --url sqlite:////tmp/roost6.db --users 10000 \\
        --messages 1000000 --room-messages 0
    .venv/bin/python -m bench.mam_wire prosody-fill --db /tmp/prosody6.sqlite --users 10000 \\
        --messages 1000000 --room-messages 0
    .venv/bin/python -m bench.mam_wire compare --roost-db /tmp/roost6.db --prosody-db /tmp/prosody6.sqlite \\
        --users 10000 --runs 200

Room archives are not compared (Prosody's mod_muc_mam needs a persistent room's stored config).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.certs import make_self_signed
from bench.mam_archive import DAY, DOMAIN, generate, user, vocabulary
from bench.targets import ProsodyTarget, Provisioning, RoostTarget, Target
from bench.xmppload.client import Account, CredentialCache, LoginOptions, Session, client_tls_context, login
from roost.storage.api import bare_jid

#: mod_storage_sql's archive table as Prosody 0.12 creates it (mod_storage_sql.lua, create_table).
PROSODY_SCHEMA = """
CREATE TABLE IF NOT EXISTS "prosodyarchive" ("sort_id" INTEGER PRIMARY KEY AUTOINCREMENT,
  "host" TEXT NOT NULL, "user" TEXT NOT NULL, "store" TEXT NOT NULL, "key" TEXT NOT NULL,
  "when" INTEGER NOT NULL, "with" TEXT NOT NULL, "type" TEXT NOT NULL, "value" MEDIUMTEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS "prosodyarchive_index" ON "prosodyarchive" ("host", "user", "store", "key");
CREATE INDEX IF NOT EXISTS "prosodyarchive_with_when"
  ON "prosodyarchive" ("host", "user", "store", "with", "when");
CREATE INDEX IF NOT EXISTS "prosodyarchive_when" ON "prosodyarchive" ("host", "user", "store", "when");
CREATE INDEX IF NOT EXISTS "prosodyarchive_sort" ON "prosodyarchive" ("host", "user", "store", "sort_id");
"""

PASSWORD = "pw"
MAM = "urn:xmpp:mam:2"


def prosody_fill(args: argparse.Namespace) -> None:
    """The user archives of ``bench.mam_archive fill`` in Prosody's table (room rows are left out)."""
    db = sqlite3.connect(args.db)
    db.executescript(PROSODY_SCHEMA)
    insert = (
        'INSERT INTO "prosodyarchive" ("host", "user", "store", "when", "with", "key", "type", "value") '
        "VALUES (?, ?, ?, ?, ?, ?, 'xml', ?)"
    )
    rows: list[tuple[str, str, str, int, str, str, str]] = []
    written = 0
    started = time.perf_counter()
    for entry in generate(args.users, args.messages, args.room_messages, args.days, args.seed, time.time()):
        if entry.store != "mam":
            continue
        item = entry.item
        rows.append(
            (
                entry.domain,
                entry.user,
                "archive",
                int(item.timestamp),
                bare_jid(item.with_jid),
                item.id,
                item.payload,
            )
        )
        if len(rows) >= args.batch:
            with db:
                db.executemany(insert, rows)
            written += len(rows)
            rows.clear()
            print(
                f"  {written:,} rows, {written / (time.perf_counter() - started):,.0f} rows/s",
                file=sys.stderr,
            )
    if rows:
        with db:
            db.executemany(insert, rows)
        written += len(rows)
    db.execute('ANALYZE "prosodyarchive"')
    db.close()
    print(f"filled {written:,} rows in {time.perf_counter() - started:.1f} s")


def _query(qid: str, fields: dict[str, str], rsm: str) -> bytes:
    form = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (
        f"<iq type='set' id='{qid}'><query xmlns='{MAM}' queryid='{qid}'>"
        f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value>"
        f"</field>{form}</x><set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>"
    ).encode()


_FIRST = re.compile(rb"<first[^>]*>([^<]+)</first>")


class Querier:
    """One logged-in session sending archive queries one at a time."""

    def __init__(self, session: Session, timeout: float) -> None:
        self.session = session
        self.timeout = timeout
        self.n = 0
        self.results = 0

    async def ask(self, fields: dict[str, str], rsm: str) -> bytes | None:
        """Send a query, wait for its result; the id of the page's first message (None: empty)."""
        self.n += 1
        qid = f"q{self.n}"
        done = re.compile(rb"<iq\b[^>]*\bid=[\"']" + qid.encode() + rb"[\"'][^>]*(?:/>|>.*?</iq>)", re.S)
        self.session.conn.write(_query(qid, fields, rsm))
        m = await self.session.conn.expect(done, self.timeout)
        text = m.string[: m.end()]
        tag = m.group(0)[: m.group(0).index(b">")]
        if b"'result'" not in tag and b'"result"' not in tag:
            raise RuntimeError(f"query failed: {m.group(0)[:400]!r}")
        self.results += text.count(b"<result ")
        first = _FIRST.search(m.group(0))
        return first.group(1) if first else None


async def measure(target: Target, args: argparse.Namespace, search: bool) -> dict[str, dict[str, float]]:
    creds = CredentialCache()
    if isinstance(target, ProsodyTarget):
        target.seed_credentials(creds)
    opts = LoginOptions(tls=client_tls_context(), timeout=args.timeout, presence="none")
    accounts = [Account(user(n), PASSWORD) for n in range(args.accounts)]
    sessions = {
        a.user: Querier(await login(target.endpoint, a, "bench", creds, opts), args.timeout) for a in accounts
    }
    rng = random.Random(args.seed)
    words = vocabulary()

    def pick() -> tuple[Querier, str]:
        owner = rng.randrange(args.accounts)
        other = (owner + 1 + rng.randrange(args.users - 1)) % args.users
        return sessions[user(owner)], f"{user(other)}@{DOMAIN}"

    async def last50_with() -> None:
        q, other = pick()
        await q.ask({"with": other}, "<max>50</max><before/>")

    async def page_back_10() -> None:
        q, _ = pick()
        first = await q.ask({}, "<max>50</max><before/>")
        for _ in range(10):
            if first is None:
                break
            first = await q.ask({}, f"<max>50</max><before>{first.decode()}</before>")

    async def since_day() -> None:
        q, _ = pick()
        start = datetime.datetime.fromtimestamp(time.time() - DAY, datetime.UTC)
        await q.ask({"start": start.strftime("%Y-%m-%dT%H:%M:%SZ")}, "<max>50</max>")

    async def fulltext() -> None:
        q, _ = pick()
        await q.ask({"{urn:xmpp:fulltext:0}fulltext": rng.choice(words)}, "<max>50</max><before/>")

    queries: dict[str, Callable[[], Awaitable[None]]] = {
        "last50_with": last50_with,
        "page_back_10": page_back_10,
        "since_day": since_day,
    }
    if search:
        queries["search"] = fulltext
    out: dict[str, dict[str, float]] = {}
    for name, fn in queries.items():
        for _ in range(5):
            await fn()  # warm up
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            await fn()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[name] = {
            "p50_ms": times[len(times) // 2],
            "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))],
            "mean_ms": statistics.fmean(times),
        }
    total = sum(q.results for q in sessions.values())
    print(f"  {target.name}: {total:,} archived messages received", file=sys.stderr)
    for q in sessions.values():
        if q.session.conn.transport is not None:
            q.session.conn.transport.close()
    return out


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def compare(args: argparse.Namespace) -> None:
    roost_db, prosody_db = Path(args.roost_db).resolve(), Path(args.prosody_db).resolve()  # noqa: ASYNC240
    work = Path(tempfile.mkdtemp(prefix="roost-bench-mamwire-"))
    certs = make_self_signed(work / "certs")
    prov = Provisioning(accounts=[Account(user(n), PASSWORD) for n in range(args.accounts)])
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.servers.split(","):
        target: Target
        if name == "roost":
            roost = RoostTarget(work / "roost", certs, -1, _log)
            url = f"sqlite:///{roost_db}"
            roost.template = roost.template.replace('url = "sqlite:///{data}/roost.db"', f'url = "{url}"')
            target = roost
        elif name == "prosody":
            target = ProsodyTarget(work / "prosody", certs, -1, _log)
            target.data.mkdir(parents=True, exist_ok=True)
            (target.data / "prosody.sqlite").symlink_to(prosody_db)
        else:
            raise SystemExit(f"unknown server {name!r} (roost, prosody)")
        target.mam = True
        target.dir.mkdir(parents=True, exist_ok=True)
        _log(f"{name}: starting")
        await target.start(prov)
        try:
            results[name] = await measure(target, args, search=name == "roost")
        finally:
            await target.stop()
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"{'query':<14}"
        + "".join(f"{n + ' p50':>14}{n + ' p99':>14}" for n in results)
        + f"   ({args.runs} runs)"
    )
    names = list(dict.fromkeys(q for r in results.values() for q in r))  # every server's, in order
    for query in names:
        row = "".join(
            f"{r[query]['p50_ms']:>14.2f}{r[query]['p99_ms']:>14.2f}" if query in r else f"{'-':>14}{'-':>14}"
            for r in results.values()
        )
        print(f"{query:<14}{row}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("prosody-fill", help="the fill's user archives into Prosody's SQLite archive table")
    f.add_argument("--db", required=True, help="the SQLite file (created if missing)")
    f.add_argument("--users", type=int, default=10_000)
    f.add_argument("--messages", type=int, default=1_000_000)
    f.add_argument("--room-messages", type=int, default=0, help="as given to bench.mam_archive fill")
    f.add_argument("--days", type=float, default=365.0)
    f.add_argument("--batch", type=int, default=20_000)
    f.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("compare", help="start each server on its filled archive and time the queries")
    c.add_argument("--roost-db", required=True)
    c.add_argument("--prosody-db", required=True)
    c.add_argument("--servers", default="roost,prosody")
    c.add_argument("--users", type=int, default=10_000, help="as given to the fills")
    c.add_argument("--accounts", type=int, default=50, help="the first N users log in and query")
    c.add_argument("--runs", type=int, default=200)
    c.add_argument("--timeout", type=float, default=60.0)
    c.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "prosody-fill":
        prosody_fill(args)
    else:
        asyncio.run(compare(args))


if __name__ == "__main__":
    main()
