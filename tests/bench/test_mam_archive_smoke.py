"""bench.mam_archive fills an archive through the SQL layer and times the MAM queries (tiny sizes here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bench import mam_archive
from roost.storage import ArchiveQuery, StorageManager


async def test_fill_then_query_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'mam.db'}"
    args = argparse.Namespace(
        url=url, users=20, messages=400, room_messages=50, days=30.0, batch=64, seed=1, copy=False
    )
    await mam_archive.fill(args)
    storage = await StorageManager.open(url)
    try:
        users = await storage.archive("mam").owners(limit=100)
        assert len(users) == 20
        assert sum([await storage.archive("mam").count(d, u) for d, u in users]) == 400
        assert await storage.archive("muc_mam").count(mam_archive.ROOM_SERVICE, mam_archive.ROOM) == 50
        word = mam_archive.vocabulary()[0]
        found = [
            i
            for d, u in users
            for i in (await storage.archive("mam").query(d, u, ArchiveQuery(text=word)))[0]
        ]
        assert all(word in i.payload for i in found)
    finally:
        await storage.close()

    results = await mam_archive.query(
        argparse.Namespace(url=url, users=20, runs=3, seed=2, json=None, only=None)
    )
    assert set(results) == {"last50_with", "page_back_10", "since_day", "search", "room_last50", "count_with"}
    assert "p99 ms" in capsys.readouterr().out


def test_command_line_writes_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mam.db'}"
    mam_archive.main(["fill", "--url", url, "--users", "5", "--messages", "50", "--room-messages", "5"])
    out = tmp_path / "q.json"
    mam_archive.main(["query", "--url", url, "--users", "5", "--runs", "2", "--json", str(out)])
    assert set(json.loads(out.read_text())["results"]["search"]) == {"p50_ms", "p99_ms", "mean_ms"}
