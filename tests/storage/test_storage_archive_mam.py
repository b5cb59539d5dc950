"""ArchiveStore contract, the parts MAM needs beyond paging: search, metadata, tombstones, retention,
the non-blocking offer. Runs against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from roost.storage import ArchiveItem, ArchiveQuery, ArchiveStore, StorageManager
from roost.storage.api import search_words

T0 = 1_700_000_000.0
DOMAIN = "example.org"
USER = "juliet"


def item(n: int, *, ts: float | None = None, with_jid: str = "romeo@example.net/a") -> ArchiveItem:
    return ArchiveItem(f"m{n:03d}", T0 + n if ts is None else ts, with_jid, f"<message>{n}</message>", "chat")


def ids(items: list[ArchiveItem]) -> list[str]:
    return [i.id for i in items]


@pytest.fixture
def mam(storage: StorageManager) -> ArchiveStore:
    return storage.archive("mam")


BODIES = [
    "Wherefore art thou Romeo?",
    "Deny thy father and refuse thy name",
    "a rose by any other name would smell as sweet",
    "",  # nothing to search (a receipt)
    "ROMEO, doff thy NAME",
    "Ромео, где ты?",
    "snake_case and cafe\u0301",  # '_' separates words; a decomposed é is found as the composed one
]


async def fill_search(mam: ArchiveStore, user: str = USER) -> None:
    for n, body in enumerate(BODIES):
        await mam.append(DOMAIN, user, item(n), search=body)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("romeo", ["m000", "m004"]),
        ("Romeo", ["m000", "m004"]),
        ("name thy", ["m001", "m004"]),  # every word, in any order
        ("name rose", ["m002"]),
        ("ромео", ["m005"]),
        ("snake_case", ["m006"]),
        ("CASE café", ["m006"]),
        ("juliet", []),
        ("   ", []),  # no words: nothing matches
    ],
)
async def test_full_text_search_finds_items_with_every_word(
    mam: ArchiveStore, text: str, expected: list[str]
) -> None:
    await fill_search(mam)
    await fill_search(mam, user="romeo")  # another archive: never mixed in

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(text=text))

    assert (ids(page), complete) == (expected, True)
    assert await mam.count(DOMAIN, USER, ArchiveQuery(text=text)) == len(expected)


async def test_search_combines_with_filters_and_paging(mam: ArchiveStore) -> None:
    for n in range(20):
        with_jid = "romeo@example.net/a" if n % 2 else "nurse@example.net"
        await mam.append(DOMAIN, USER, item(n, with_jid=with_jid), search=f"hello {n}")

    page, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(text="hello", with_jid="romeo@example.net", limit=3, reverse=True)
    )
    assert (ids(page), complete) == (["m015", "m017", "m019"], False)
    page, complete = await mam.query(
        DOMAIN,
        USER,
        ArchiveQuery(text="hello", with_jid="romeo@example.net", limit=3, reverse=True, before_id="m015"),
    )
    assert (ids(page), complete) == (["m009", "m011", "m013"], False)
    assert await mam.count(DOMAIN, USER, ArchiveQuery(text="HELLO", start=T0 + 10)) == 10


async def test_deleted_items_leave_the_search_index(mam: ArchiveStore) -> None:
    await fill_search(mam)
    await mam.delete(DOMAIN, USER, ["m000"])
    assert ids((await mam.query(DOMAIN, USER, ArchiveQuery(text="romeo")))[0]) == ["m004"]
    await mam.trim(DOMAIN, USER, keep=0)
    await mam.append(DOMAIN, USER, item(9), search="unrelated")
    assert (await mam.query(DOMAIN, USER, ArchiveQuery(text="romeo")))[0] == []


def test_search_words_are_case_folded_unique_words() -> None:
    assert search_words("Hello, hello WORLD! ß snake_case") == ["hello", "world", "ss", "snake", "case"]


async def test_ends_are_the_first_and_last_items(mam: ArchiveStore) -> None:
    assert await mam.ends(DOMAIN, USER) == (None, None)
    items = [item(3), item(1), item(2)]
    for i in items:
        await mam.append(DOMAIN, USER, i)

    assert await mam.ends(DOMAIN, USER) == (items[1], items[0])


async def test_replace_makes_a_tombstone_and_updates_search(mam: ArchiveStore) -> None:
    await fill_search(mam)

    assert await mam.replace(DOMAIN, USER, "m000", "<tombstone/>") is True
    assert await mam.replace(DOMAIN, USER, "nope", "<tombstone/>") is False

    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery(ids=["m000"]))
    assert [(i.id, i.payload, i.timestamp) for i in page] == [("m000", "<tombstone/>", T0)]
    assert ids((await mam.query(DOMAIN, USER, ArchiveQuery(text="romeo")))[0]) == ["m004"]
    await mam.replace(DOMAIN, USER, "m001", "<edited/>", search="new words")
    assert ids((await mam.query(DOMAIN, USER, ArchiveQuery(text="words")))[0]) == ["m001"]


async def test_trim_by_count_keeps_the_newest_in_batches(mam: ArchiveStore) -> None:
    for n in range(10):
        await mam.append(DOMAIN, USER, item(n))
    await mam.append(DOMAIN, "romeo", item(0))

    assert await mam.trim(DOMAIN, USER, keep=4, batch=4) == 4
    assert await mam.trim(DOMAIN, USER, keep=4, batch=4) == 2
    assert await mam.trim(DOMAIN, USER, keep=4, batch=4) == 0

    assert ids((await mam.query(DOMAIN, USER, ArchiveQuery()))[0]) == ["m006", "m007", "m008", "m009"]
    assert await mam.count(DOMAIN, "romeo") == 1


async def test_trim_by_age_and_everything(mam: ArchiveStore) -> None:
    for n in range(10):
        await mam.append(DOMAIN, USER, item(n))

    assert await mam.trim(DOMAIN, USER, before=T0 + 3) == 3  # strictly older
    assert await mam.trim(DOMAIN, USER, before=T0 + 3, keep=6) == 1  # the stricter of the two
    assert ids((await mam.query(DOMAIN, USER, ArchiveQuery()))[0])[0] == "m004"
    assert await mam.trim(DOMAIN, USER) == 0  # no rule: nothing
    assert await mam.trim(DOMAIN, USER, keep=0, batch=100) == 6
    assert await mam.count(DOMAIN, USER) == 0


async def test_expire_deletes_old_items_across_archives_except_spared(storage: StorageManager) -> None:
    mam = storage.archive("mam")
    other = storage.archive("muc")
    for user in ("a", "b", "c"):
        for n in range(5):
            await mam.append(DOMAIN, user, item(n))
    await other.append(DOMAIN, "a", item(0))

    assert await mam.expire(T0 + 2, batch=4, spare=[(DOMAIN, "c")]) == 4
    assert await mam.expire(T0 + 2, batch=4, spare=[(DOMAIN, "c")]) == 0

    assert [await mam.count(DOMAIN, u) for u in ("a", "b", "c")] == [3, 3, 5]
    assert await other.count(DOMAIN, "a") == 1


async def test_owners_walks_every_archive_of_the_store(storage: StorageManager) -> None:
    mam = storage.archive("mam")
    for domain, user in [("b.org", "x"), ("a.org", "z"), ("a.org", "y"), ("a.org", "y")]:
        await mam.append(domain, user, item(0))
    await storage.archive("muc").append("0.org", "room", item(0))

    assert await mam.owners() == [("a.org", "y"), ("a.org", "z"), ("b.org", "x")]
    assert await mam.owners(limit=1) == [("a.org", "y")]
    assert await mam.owners(("a.org", "y"), limit=5) == [("a.org", "z"), ("b.org", "x")]
    assert await mam.owners(("b.org", "x")) == []


async def test_offer_never_waits_and_refuses_when_the_queue_is_full(
    open_storage: Callable[..., Awaitable[StorageManager]],
) -> None:
    storage = await open_storage(batch_delay=3600, batch_size=2, max_pending=2)
    mam = storage.archive("mam")

    assert mam.offer(DOMAIN, USER, item(0)) is True
    assert mam.offer(DOMAIN, USER, item(1), search="x") is True
    assert mam.offer(DOMAIN, USER, item(2)) is False  # full: refused at once, nothing waits

    await storage.flush()
    assert mam.offer(DOMAIN, USER, item(3)) is True
    assert ids((await mam.query(DOMAIN, USER, ArchiveQuery()))[0]) == ["m000", "m001", "m003"]
    with pytest.raises(ValueError):
        mam.offer(DOMAIN, USER, item(4), search="\x00")


async def test_sqlite_search_rows_stay_right_when_rowids_are_not_sequential(tmp_path: Path) -> None:
    """With the largest rowid taken SQLite picks random rowids: the writer then inserts row by row."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    storage = await StorageManager.open(url)
    try:
        await storage.archive("mam").append(DOMAIN, "other", item(0), search="filler")
        await storage.flush()
        db = sqlite3.connect(tmp_path / "r.db")
        db.execute("UPDATE archive SET seq = 9223372036854775807")
        db.execute("UPDATE archive_fts SET rowid = 9223372036854775807")
        db.commit()
        db.close()
        mam = storage.archive("mam")
        for n, body in enumerate(BODIES):
            await mam.append(DOMAIN, USER, item(n), search=body)
        page, _ = await mam.query(DOMAIN, USER, ArchiveQuery(text="romeo"))
        assert ids(page) == ["m000", "m004"]
        assert await mam.count(DOMAIN, USER) == len(BODIES)
        assert ids((await mam.query(DOMAIN, "other", ArchiveQuery(text="filler")))[0]) == ["m000"]
    finally:
        await storage.close()
