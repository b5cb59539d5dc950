"""bench.mam_wire writes the fill's user archives into Prosody's mod_mam table (tiny size, no server)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from bench import mam_archive, mam_wire


def test_prosody_fill_holds_the_same_user_archives(tmp_path: Path) -> None:
    db = tmp_path / "prosody.sqlite"
    mam_wire.main(["prosody-fill", "--db", str(db), "--users", "10", "--messages", "200",
                   "--room-messages", "20", "--batch", "64"])  # fmt: skip
    query = 'SELECT "host", "user", "store", "with", "key", "type", "value" FROM "prosodyarchive"'
    rows = sqlite3.connect(db).execute(query + ' ORDER BY "sort_id"').fetchall()
    expected = [e for e in mam_archive.generate(10, 200, 20, 365.0, 1, 0.0) if e.store == "mam"]
    assert len(rows) == len(expected) == 200  # the room's rows are left out
    # Same owners and contacts in the same order (ids and times differ: they are made at fill time).
    assert [(r[1], r[3]) for r in rows] == [(e.user, e.item.with_jid.split("/")[0]) for e in expected]
    assert len({r[4] for r in rows}) == 200
    assert {(r[0], r[2], r[5]) for r in rows} == {(mam_archive.DOMAIN, "archive", "xml")}
    assert all(r[6].startswith("<message") and e.search in r[6] for r, e in zip(rows, expected, strict=True))
    assert len(Counter(r[1] for r in rows)) == 10
