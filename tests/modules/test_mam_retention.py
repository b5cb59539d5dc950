"""Retention of archives: defaults, own limits per user and room, batches; persistence across restarts."""

from __future__ import annotations

from pathlib import Path

from roost.modules.mam import retention
from roost.modules.mam.module import ROOM_STORE, MessageArchive
from roost.storage import ArchiveItem, ArchiveQuery, StorageManager
from tests.modules.test_mam import bodies, chat, form, query
from tests.support.scenario import Harness

NOW = 1_800_000_000.0
DAY = retention.DAY


def aged(n: int, days_old: float) -> ArchiveItem:
    return ArchiveItem(f"i{n:04d}", NOW - days_old * DAY, "x@y", "<message/>", "chat")


async def archive_of(storage: StorageManager, user: str, ages: list[float]) -> None:
    store = storage.archive("mam")
    for n, age in enumerate(sorted(ages, reverse=True)):
        await store.append("d", user, aged(n, age))


async def remaining(storage: StorageManager, user: str) -> int:
    return await storage.archive("mam").count("d", user)


async def test_default_age_and_count_with_own_limits_both_ways() -> None:
    storage = await StorageManager.open("memory://")
    try:
        for user in ("plain", "longer", "shorter", "counted"):
            await archive_of(storage, user, [100, 40, 20, 5, 1])
        policy = retention.RetentionPolicy(
            retention.Limit(days=30),
            {
                ("d", "longer"): retention.Limit(days=365),
                ("d", "shorter"): retention.Limit(days=3),
                ("d", "counted"): retention.Limit(messages=2),
            },
        )
        deleted = await retention.sweep(storage.archive("mam"), policy, NOW, batch=1)
        assert deleted == 2 + 0 + 4 + 3
        assert [await remaining(storage, u) for u in ("plain", "longer", "shorter", "counted")] == [
            3,
            5,
            1,
            2,
        ]
        assert await retention.sweep(storage.archive("mam"), policy, NOW) == 0  # nothing more to do
    finally:
        await storage.close()


async def test_default_count_walks_every_archive_and_keeps_the_newest() -> None:
    storage = await StorageManager.open("memory://")
    try:
        for n in range(150):  # more archives than one page of the owner walk
            await archive_of(storage, f"u{n:03d}", [3, 2, 1])
        policy = retention.RetentionPolicy(retention.Limit(messages=1))
        assert await retention.sweep(storage.archive("mam"), policy, NOW, batch=1) == 300
        page, _ = await storage.archive("mam").query("d", "u149", ArchiveQuery())
        assert [i.timestamp for i in page] == [NOW - 1 * DAY]
    finally:
        await storage.close()


async def test_module_sweeps_users_and_rooms_with_configured_limits(tmp_path: Path) -> None:
    config = """
[mam]
max_messages = 2
room_max_messages = 1
retention_batch = 1
limits = { "bob@localhost" = { messages = 3 } }
"""
    async with Harness.running(tmp_path, config) as h:
        alice = await h.login("alice")
        await h.login("bob")
        for n in range(4):
            await chat(h, alice, "bob@localhost", f"m{n}")
        rooms = h.server.storage.archive(ROOM_STORE)
        for n in range(3):
            await rooms.append("conference.localhost", "lobby", aged(n, 1))
        archive = h.module(MessageArchive)
        assert await archive.sweep_now() == 2 + 1 + 2
        assert bodies((await query(alice))[0]) == ["m2", "m3"]
        assert bodies((await query(h.session("bob")))[0]) == ["m1", "m2", "m3"]
        assert await rooms.count("conference.localhost", "lobby") == 1


async def test_archives_survive_a_restart(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, storage=f"sqlite:///{tmp_path / 'roost.db'}") as h:
        alice = await h.login("alice")
        await h.login("bob")
        await chat(h, alice, "bob@localhost", "remember me")
        await h.restart()
        bob = await h.login("bob")
        items, _ = await query(bob)
        assert bodies(items) == ["remember me"]
        items, _ = await query(bob, form(**{"{urn:xmpp:fulltext:0}fulltext": "remember"}))
        assert bodies(items) == ["remember me"]
