"""The least SQLite itself can spend archiving a 1:1 message: raw ``sqlite3``, no Roost code.

Issue 11's goal is archiving at ≤ 20 % of an unarchived message's server CPU. This script measures the
floor under that goal: the instructions SQLite (and the ``sqlite3`` module) needs to store one message,
with nothing of Roost's own work (no decision, no serialization, no ids, no queues). It writes in
batches of 2,000 rows per transaction, WAL, ``synchronous=NORMAL``, like Roost's writer, into a fresh
database. The shapes:

* ``two``: one row per owner (sender and recipient), keyed (owner, id), with a (owner, with, id) index.
  This is the shape of today's archive, minimal: integer owners, no extra indexes.
* ``one``: one row per message shared by both owners, with an index from each side.
* ``none``: the loop alone, to subtract.

With an ``fts`` suffix, each row also gets an FTS5 entry (XEP-0431 search, required by the issue).
Count instructions with callgrind at two sizes and take the slope, so start-up cancels out:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/f-N.out \\
        .venv/bin/python -m bench.archive_floor --messages N --shape onefts    # N = 10000 and 50000
    # per message = (Collected(50000) - Collected(10000)) / 40000, minus the same for --shape none

Figures: docs/performance.md, "The floor under issue 11's goal".
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
from pathlib import Path

SHAPES = ("none", "two", "twofts", "one", "onefts")
XML = (
    b"<message xmlns='jabber:client' to='u2@localhost' from='u1@localhost/r' type='chat' id='abcdef'>"
    b"<body>hello there, how are you doing today?</body></message>"
)
BODY = "hello there how are you doing today"
BATCH = 2000
USERS = 10_000


def create(db: sqlite3.Connection, shape: str) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if shape.startswith("two"):
        db.execute(
            "CREATE TABLE a(owner INTEGER, id INTEGER, ts INTEGER, w TEXT, xml BLOB,"
            " PRIMARY KEY(owner, id)) WITHOUT ROWID"
        )
        db.execute("CREATE INDEX a_w ON a(owner, w, id)")
    elif shape.startswith("one"):
        db.execute("CREATE TABLE m(id INTEGER PRIMARY KEY, ts INTEGER, s INTEGER, r INTEGER, xml BLOB)")
        db.execute("CREATE INDEX m_s ON m(s, r, id)")
        db.execute("CREATE INDEX m_r ON m(r, s, id)")
    if shape.endswith("fts"):
        db.execute("CREATE VIRTUAL TABLE t USING fts5(body, content='')")


def fill(db: sqlite3.Connection, shape: str, messages: int) -> None:
    rnd = random.Random(1)
    base = 1 << 40
    rows: list[tuple[object, ...]] = []
    two = shape.startswith("two")
    for n in range(messages):
        sender, recipient = rnd.randrange(USERS), rnd.randrange(USERS)
        if two:
            rows.append((sender, base + 2 * n, n, f"u{recipient}@localhost", XML))
            rows.append((recipient, base + 2 * n + 1, n, f"u{sender}@localhost", XML))
        else:
            rows.append((base + n, n, sender, recipient, XML))
        if len(rows) >= BATCH:
            write(db, shape, rows)
            rows.clear()


def write(db: sqlite3.Connection, shape: str, rows: list[tuple[object, ...]]) -> None:
    if shape == "none":
        return
    db.execute("BEGIN")
    if shape.startswith("two"):
        db.executemany("INSERT INTO a VALUES (?, ?, ?, ?, ?)", rows)
        key = 1
    else:
        db.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?)", rows)
        key = 0
    if shape.endswith("fts"):
        db.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", [(row[key], BODY) for row in rows])
    db.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--shape", choices=SHAPES, default="onefts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        create(db, args.shape)
        fill(db, args.shape, args.messages)
        db.close()


if __name__ == "__main__":
    main()
