"""StorageManager: opening by URL, delete_user across stores, durability of batched archive writes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from roost.storage import ArchiveItem, ArchiveQuery, StorageError, StorageManager, StoredCredentials

OpenStorage = Callable[..., Awaitable[StorageManager]]
T0 = 1_700_000_000.0
CREDS = [StoredCredentials("SHA-256", b"salt", 4096, b"s" * 32, b"k" * 32)]


def item(n: int) -> ArchiveItem:
    return ArchiveItem(id=f"id{n}", timestamp=T0 + n, with_jid="romeo@example.net/a", payload=f"<m>{n}</m>")


async def populate(storage: StorageManager, domain: str, user: str) -> None:
    if user:
        await storage.accounts.create(domain, user, CREDS)
    await storage.keyvalue("roster").set(domain, user, {"owner": user})
    await storage.keyvalue("vcard").set(domain, user, {"fn": user})
    await storage.map("private").set(domain, user, "k", user)
    await storage.archive("mam").append(domain, user, item(1))
    await storage.archive("offline").append(domain, user, item(2))


async def holdings(storage: StorageManager, domain: str, user: str) -> list[object]:
    return [
        await storage.accounts.exists(domain, user),
        await storage.keyvalue("roster").get(domain, user),
        await storage.keyvalue("vcard").get(domain, user),
        await storage.map("private").items(domain, user),
        await storage.archive("mam").count(domain, user),
        await storage.archive("offline").count(domain, user),
    ]


async def test_delete_user_removes_the_account_and_all_its_data(storage: StorageManager) -> None:
    await populate(storage, "example.org", "juliet")
    await populate(storage, "example.org", "romeo")
    await populate(storage, "example.net", "juliet")
    await populate(storage, "example.org", "")  # host-wide data
    await storage.archive("mam").append("example.org", "juliet", item(3))  # still queued, most likely

    await storage.delete_user("example.org", "juliet")

    assert await holdings(storage, "example.org", "juliet") == [False, None, None, {}, 0, 0]
    expected = [True, {"owner": "romeo"}, {"fn": "romeo"}, {"k": "romeo"}, 1, 1]
    assert await holdings(storage, "example.org", "romeo") == expected
    assert (await holdings(storage, "example.net", "juliet"))[0] is True
    assert (await holdings(storage, "example.org", ""))[1:] == [{"owner": ""}, {"fn": ""}, {"k": ""}, 1, 1]


async def test_delete_user_refuses_host_wide_data(storage: StorageManager) -> None:
    with pytest.raises(ValueError):
        await storage.delete_user("example.org", "")


async def test_flushed_and_closed_writes_survive_reopening(
    storage_url: str, open_storage: OpenStorage
) -> None:
    if storage_url.startswith("memory"):
        pytest.skip("memory storage is not persistent")
    first = await open_storage(batch_size=7)
    for n in range(50):
        await first.archive("mam").append("example.org", "juliet", item(n))
    await first.accounts.create("example.org", "juliet", CREDS)
    await first.close()  # no explicit flush: close drains the queue

    second = await open_storage()
    page, complete = await second.archive("mam").query("example.org", "juliet", ArchiveQuery(limit=100))
    assert ([i.id for i in page], complete) == ([f"id{n}" for n in range(50)], True)
    assert await second.accounts.get_credentials("example.org", "juliet", "SHA-256") == CREDS[0]


async def test_flush_makes_writes_visible_to_another_process(
    storage_url: str, open_storage: OpenStorage
) -> None:
    if storage_url.startswith("memory"):
        pytest.skip("memory storage is not shared")
    server = await open_storage(batch_delay=3600)
    cli = await open_storage()
    for n in range(3):
        await server.archive("mam").append("example.org", "juliet", item(n))

    await server.flush()

    assert await cli.archive("mam").count("example.org", "juliet") == 3


async def test_two_managers_can_write_the_same_database_at_once(
    storage_url: str, open_storage: OpenStorage
) -> None:
    # `roost user add` writes to the same SQLite file while the server runs.
    if storage_url.startswith("memory"):
        pytest.skip("memory storage is not shared")
    server = await open_storage(batch_size=5)
    cli = await open_storage()

    async def server_work() -> None:
        for n in range(40):
            await server.archive("mam").append("example.org", "juliet", item(n))
            await server.keyvalue("roster").set("example.org", f"user{n}", {"n": n})
        await server.flush()

    async def cli_work() -> None:
        for n in range(40):
            await cli.accounts.create("example.org", f"user{n}", CREDS)

    await asyncio.gather(server_work(), cli_work())

    assert await server.accounts.count("example.org") == 40
    assert await cli.archive("mam").count("example.org", "juliet") == 40
    assert await cli.keyvalue("roster").get("example.org", "user39") == {"n": 39}


async def test_appending_after_close_fails_loudly(open_storage: OpenStorage) -> None:
    storage = await open_storage()
    await storage.close()

    with pytest.raises(StorageError):
        await storage.archive("mam").append("example.org", "juliet", item(1))
    await storage.close()  # idempotent


async def test_sqlite_file_uses_wal_and_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "roost.db"
    storage = await StorageManager.open(f"sqlite:///{path}")
    try:
        await storage.accounts.create("example.org", "juliet", CREDS)
    finally:
        await storage.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = await StorageManager.open("sqlite:///roost-data/roost.db")
    await storage.close()

    assert (tmp_path / "roost-data" / "roost.db").is_file()


async def test_sqlite_enforces_foreign_keys(tmp_path: Path) -> None:
    storage = await StorageManager.open(f"sqlite:///{tmp_path / 'roost.db'}")
    await storage.close()

    with sqlite3.connect(tmp_path / "roost.db") as db:
        db.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO account_credentials"
                " VALUES ('example.org', 'ghost', 'SHA-1', x'00', 1, x'00', x'00')"
            )


@pytest.mark.parametrize(
    "url",
    ["mysql://u:p@localhost/roost", "sqlite:///:memory:", "sqlite://", "not a url", "redis://localhost"],
)
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError):
        await StorageManager.open(url)
