"""bench/archive_floor.py stores what each shape says, in whole batches."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from bench.archive_floor import BATCH, SHAPES, create, fill


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_stores_its_rows(tmp_path: Path, shape: str) -> None:
    db = sqlite3.connect(tmp_path / "floor.db", isolation_level=None)
    create(db, shape)
    fill(db, shape, 2 * BATCH)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if shape == "none":
        assert not tables
        return
    if shape.startswith("two"):
        # A row per owner: two per message, each owner's key unique.
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM a").fetchone() == (4 * BATCH, 4 * BATCH)
    else:
        assert db.execute("SELECT count(*) FROM m").fetchone() == (2 * BATCH,)
    if shape.endswith("fts"):
        rows = 4 * BATCH if shape.startswith("two") else 2 * BATCH
        assert db.execute("SELECT count(*) FROM t WHERE t MATCH 'hello'").fetchone() == (rows,)
    else:
        assert "t" not in tables
