"""ArchiveStore contract (MAM/RSM paging, filters, offline pop), for every backend."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from roost.storage import ArchiveItem, ArchiveQuery, ArchiveStore, NoSuchItem, StorageManager

T0 = 1_700_000_000.0
DOMAIN = "example.org"
USER = "juliet"
WITH = ["romeo@example.net/balcony", "romeo@example.net/orchard", "nurse@example.net", "romeo@example.net"]


def item(n: int, *, ts: float | None = None, with_jid: str | None = None, kind: str = "chat") -> ArchiveItem:
    return ArchiveItem(
        id=f"m{n:02d}",
        timestamp=T0 + n if ts is None else ts,
        with_jid=WITH[n % len(WITH)] if with_jid is None else with_jid,
        payload=f"<message xmlns='jabber:client'><body>#{n}</body></message>",
        kind=kind,
    )


def ids(items: list[ArchiveItem]) -> list[str]:
    return [i.id for i in items]


async def fill(store: ArchiveStore, count: int, user: str = USER) -> list[ArchiveItem]:
    items = [item(n) for n in range(count)]
    for i in items:
        await store.append(DOMAIN, user, i)
    return items


@pytest.fixture
def mam(storage: StorageManager) -> ArchiveStore:
    return storage.archive("mam")


async def test_query_returns_everything_chronologically_and_complete(mam: ArchiveStore) -> None:
    items = await fill(mam, 5)

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery())

    assert page == items
    assert complete is True


async def test_empty_archive_gives_an_empty_complete_page(mam: ArchiveStore) -> None:
    assert await mam.query(DOMAIN, USER, ArchiveQuery()) == ([], True)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(reverse=True)) == ([], True)
    assert await mam.count(DOMAIN, USER) == 0


async def test_timestamps_keep_microseconds(mam: ArchiveStore) -> None:
    await mam.append(DOMAIN, USER, item(1, ts=T0 + 0.123456))
    await mam.append(DOMAIN, USER, item(2, ts=T0 + 0.1234564))  # below a microsecond: rounded

    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery())

    assert [i.timestamp for i in page] == [T0 + 0.123456, T0 + 0.123456]


async def test_items_are_ordered_by_timestamp_then_append_order(mam: ArchiveStore) -> None:
    await mam.append(DOMAIN, USER, item(3, ts=T0 + 30))
    await mam.append(DOMAIN, USER, item(1, ts=T0 + 10))
    await mam.append(DOMAIN, USER, item(2, ts=T0 + 20))
    await mam.append(DOMAIN, USER, item(4, ts=T0 + 20))  # same time as m02, appended later

    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery())

    assert ids(page) == ["m01", "m02", "m04", "m03"]


async def test_paging_forward_with_after_id(mam: ArchiveStore) -> None:
    items = await fill(mam, 8)

    first, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=3))
    assert (first, complete) == (items[0:3], False)
    second, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=3, after_id=first[-1].id))
    assert (second, complete) == (items[3:6], False)
    third, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=3, after_id=second[-1].id))
    assert (third, complete) == (items[6:8], True)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(limit=3, after_id=third[-1].id)) == ([], True)


async def test_page_that_ends_exactly_at_the_last_item_is_complete(mam: ArchiveStore) -> None:
    items = await fill(mam, 6)

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=3, after_id="m02"))

    assert (page, complete) == (items[3:6], True)


async def test_paging_backward_from_the_end(mam: ArchiveStore) -> None:
    items = await fill(mam, 8)

    last, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=3, reverse=True))
    assert (last, complete) == (items[5:8], False)  # newest three, still chronological
    middle, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(limit=3, reverse=True, before_id=last[0].id)
    )
    assert (middle, complete) == (items[2:5], False)
    oldest, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(limit=3, reverse=True, before_id=middle[0].id)
    )
    assert (oldest, complete) == (items[0:2], True)


async def test_before_id_going_forward_takes_the_oldest_items_before_it(mam: ArchiveStore) -> None:
    items = await fill(mam, 8)

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=2, before_id="m05"))
    assert (page, complete) == (items[0:2], False)
    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=10, before_id="m05"))
    assert (page, complete) == (items[0:5], True)


async def test_after_id_going_backward_takes_the_newest_items_after_it(mam: ArchiveStore) -> None:
    items = await fill(mam, 8)

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=2, after_id="m02", reverse=True))
    assert (page, complete) == (items[6:8], False)


async def test_after_and_before_id_select_the_range_between(mam: ArchiveStore) -> None:
    items = await fill(mam, 10)

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(after_id="m02", before_id="m07"))
    assert (page, complete) == (items[3:7], True)
    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(after_id="m02", before_id="m07", limit=2))
    assert (page, complete) == (items[3:5], False)
    page, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(after_id="m02", before_id="m07", limit=2, reverse=True)
    )
    assert (page, complete) == (items[5:7], False)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(after_id="m05", before_id="m06")) == ([], True)


async def test_paging_through_equal_timestamps_loses_nothing(mam: ArchiveStore) -> None:
    items = [item(n, ts=T0 + n // 4) for n in range(12)]  # four items per second
    for i in items:
        await mam.append(DOMAIN, USER, i)

    seen: list[ArchiveItem] = []
    after: str | None = None
    while True:
        page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=3, after_id=after))
        seen += page
        if complete:
            break
        after = page[-1].id
    assert seen == items

    seen = []
    before: str | None = None
    while True:
        page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(limit=5, before_id=before, reverse=True))
        seen = page + seen
        if complete:
            break
        before = page[0].id
    assert seen == items


async def test_limit_zero_returns_no_items_but_tells_whether_there_are_some(mam: ArchiveStore) -> None:
    assert await mam.query(DOMAIN, USER, ArchiveQuery(limit=0)) == ([], True)
    await fill(mam, 2)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(limit=0)) == ([], False)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(limit=0, reverse=True)) == ([], False)


async def test_with_bare_jid_matches_every_resource(mam: ArchiveStore) -> None:
    items = await fill(mam, 8)
    romeo = [i for i in items if i.with_jid.startswith("romeo@example.net")]

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(with_jid="romeo@example.net"))

    assert (page, complete) == (romeo, True)
    assert len(romeo) == 6


async def test_with_full_jid_matches_only_that_resource(mam: ArchiveStore) -> None:
    items = await fill(mam, 8)

    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery(with_jid="romeo@example.net/orchard"))

    assert page == [i for i in items if i.with_jid == "romeo@example.net/orchard"]
    assert ids(page) == ["m01", "m05"]


async def test_with_jid_does_not_match_other_jids_sharing_a_prefix(mam: ArchiveStore) -> None:
    await mam.append(DOMAIN, USER, item(1, with_jid="romeo@example.net.evil/x"))
    await mam.append(DOMAIN, USER, item(2, with_jid="romeo@example.ne"))

    assert await mam.query(DOMAIN, USER, ArchiveQuery(with_jid="romeo@example.net")) == ([], True)


async def test_with_filter_pages_within_the_filtered_set(mam: ArchiveStore) -> None:
    items = await fill(mam, 12)
    nurse = [i for i in items if i.with_jid == "nurse@example.net"]  # m02, m06, m10

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(with_jid="nurse@example.net", limit=2))
    assert (page, complete) == (nurse[:2], False)
    page, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(with_jid="nurse@example.net", limit=2, after_id=page[-1].id)
    )
    assert (page, complete) == (nurse[2:], True)


async def test_start_and_end_are_inclusive(mam: ArchiveStore) -> None:
    items = await fill(mam, 10)

    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery(start=T0 + 3, end=T0 + 6))
    assert page == items[3:7]
    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery(start=T0 + 7.5))
    assert page == items[8:]
    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery(end=T0 + 1))
    assert page == items[:2]
    assert await mam.query(DOMAIN, USER, ArchiveQuery(start=T0 + 6, end=T0 + 3)) == ([], True)


async def test_time_range_with_reverse_paging(mam: ArchiveStore) -> None:
    items = await fill(mam, 10)

    page, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(start=T0 + 2, end=T0 + 8, limit=3, reverse=True)
    )

    assert (page, complete) == (items[6:9], False)


async def test_ids_selects_exactly_those_items(mam: ArchiveStore) -> None:
    items = await fill(mam, 6)

    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(ids=["m04", "m01", "m04"]))

    assert (page, complete) == ([items[1], items[4]], True)


async def test_ids_combine_with_paging_and_filters(mam: ArchiveStore) -> None:
    items = await fill(mam, 10)
    wanted = ["m08", "m01", "m03", "m06", "m05"]

    assert await mam.query(DOMAIN, USER, ArchiveQuery(ids=wanted, limit=2)) == ([items[1], items[3]], False)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(ids=wanted, limit=2, reverse=True)) == (
        [items[6], items[8]],
        False,
    )
    assert await mam.query(DOMAIN, USER, ArchiveQuery(ids=wanted, limit=2, after_id="m05")) == (
        [items[6], items[8]],
        True,
    )
    page, complete = await mam.query(
        DOMAIN, USER, ArchiveQuery(ids=wanted, with_jid="romeo@example.net/orchard")
    )
    assert (ids(page), complete) == (["m01", "m05"], True)


@pytest.mark.parametrize(
    "query",
    [
        ArchiveQuery(after_id="nope"),
        ArchiveQuery(before_id="nope"),
        ArchiveQuery(ids=["m01", "nope"]),
    ],
    ids=["after_id", "before_id", "ids"],
)
async def test_unknown_ids_raise_no_such_item(mam: ArchiveStore, query: ArchiveQuery) -> None:
    # XEP-0313 §4.1.1/§6.1: the module answers item-not-found.
    await fill(mam, 3)

    with pytest.raises(NoSuchItem) as error:
        await mam.query(DOMAIN, USER, query)

    assert error.value.item_id == "nope"


async def test_ids_of_another_users_archive_are_unknown(mam: ArchiveStore) -> None:
    await fill(mam, 3, user="romeo")

    with pytest.raises(NoSuchItem):
        await mam.query(DOMAIN, USER, ArchiveQuery(after_id="m01"))


async def test_count_applies_filters_but_not_paging(mam: ArchiveStore) -> None:
    await fill(mam, 10)

    assert await mam.count(DOMAIN, USER) == 10
    assert await mam.count(DOMAIN, USER, ArchiveQuery()) == 10
    assert await mam.count(DOMAIN, USER, ArchiveQuery(with_jid="romeo@example.net")) == 8
    assert await mam.count(DOMAIN, USER, ArchiveQuery(with_jid="nurse@example.net", start=T0 + 2)) == 2
    assert await mam.count(DOMAIN, USER, ArchiveQuery(limit=2, after_id="m05", reverse=True)) == 10
    assert await mam.count(DOMAIN, USER, ArchiveQuery(ids=["m01", "m02"])) == 2


async def test_delete_by_ids(mam: ArchiveStore) -> None:
    items = await fill(mam, 5)

    assert await mam.delete(DOMAIN, USER, ["m01", "m03", "unknown"]) == 2
    assert await mam.delete(DOMAIN, USER, []) == 0

    page, _ = await mam.query(DOMAIN, USER, ArchiveQuery())
    assert page == [items[0], items[2], items[4]]


async def test_delete_all_of_one_user(mam: ArchiveStore) -> None:
    await fill(mam, 5)
    await fill(mam, 2, user="romeo")

    assert await mam.delete(DOMAIN, USER) == 5

    assert await mam.count(DOMAIN, USER) == 0
    assert await mam.count(DOMAIN, "romeo") == 2


async def test_pop_all_returns_chronologically_and_empties(storage: StorageManager) -> None:
    offline = storage.archive("offline")
    items = [item(2), item(0), item(1, ts=T0 + 2), item(3)]
    for i in items:
        await offline.append(DOMAIN, USER, i)
    await offline.append(DOMAIN, "romeo", item(9))

    popped = await offline.pop_all(DOMAIN, USER)

    assert ids(popped) == ["m00", "m02", "m01", "m03"]
    assert await offline.pop_all(DOMAIN, USER) == []
    assert await offline.count(DOMAIN, USER) == 0
    assert ids(await offline.pop_all(DOMAIN, "romeo")) == ["m09"]


async def test_stores_users_and_domains_are_separate(storage: StorageManager) -> None:
    places = [
        ("mam", DOMAIN, USER),
        ("mam", DOMAIN, "romeo"),
        ("mam", "example.net", USER),
        ("muc", DOMAIN, USER),
    ]
    for n, (name, domain, user) in enumerate(places):
        await storage.archive(name).append(domain, user, item(n))

    for n, (name, domain, user) in enumerate(places):
        page, _ = await storage.archive(name).query(domain, user, ArchiveQuery())
        assert ids(page) == [f"m{n:02d}"]

    await storage.archive("mam").delete_user(DOMAIN, USER)

    assert await storage.archive("mam").count(DOMAIN, USER) == 0
    for name, domain, user in places[1:]:
        assert await storage.archive(name).count(domain, user) == 1


async def test_items_keep_every_field(mam: ArchiveStore) -> None:
    original = ArchiveItem(
        id="5f2b-Ünïcode",
        timestamp=T0 + 0.5,
        with_jid="ромео@example.net/телефон",
        payload="<x>é\n</x>",
        kind="",
    )
    await mam.append(DOMAIN, USER, original)

    assert await mam.query(DOMAIN, USER, ArchiveQuery()) == ([original], True)


BadItem = Callable[[], ArchiveItem]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ArchiveItem(id="", timestamp=T0, with_jid="a@b", payload="<x/>"),
        lambda: ArchiveItem(id="x", timestamp=math.nan, with_jid="a@b", payload="<x/>"),
        lambda: ArchiveItem(id="x", timestamp=math.inf, with_jid="a@b", payload="<x/>"),
        lambda: ArchiveItem(id="x", timestamp=T0, with_jid="a@b", payload="<x>\x00</x>"),
        lambda: ArchiveItem(id="x", timestamp=T0, with_jid="a@b", payload="<x>\udc00</x>"),
        lambda: ArchiveItem(id="x", timestamp=T0, with_jid=None, payload="<x/>"),  # type: ignore[arg-type]
    ],
    ids=["empty-id", "nan-time", "infinite-time", "nul", "surrogate", "none-with"],
)
async def test_unstorable_items_are_refused_at_append(mam: ArchiveStore, make: BadItem) -> None:
    with pytest.raises((ValueError, TypeError)):
        await mam.append(DOMAIN, USER, make())

    assert await mam.count(DOMAIN, USER) == 0


async def test_queries_see_items_still_waiting_in_the_write_queue(
    open_storage: Callable[..., Awaitable[StorageManager]],
) -> None:
    storage = await open_storage(batch_delay=3600)  # the writer would wait an hour on its own
    mam = storage.archive("mam")
    items = await fill(mam, 3)

    assert await mam.query(DOMAIN, USER, ArchiveQuery()) == (items, True)
    await mam.append(DOMAIN, USER, item(3))
    assert await mam.count(DOMAIN, USER) == 4
    await mam.append(DOMAIN, USER, item(4))
    assert await mam.delete(DOMAIN, USER, ["m04"]) == 1
    await mam.append(DOMAIN, USER, item(5))
    assert ids(await mam.pop_all(DOMAIN, USER)) == ["m00", "m01", "m02", "m03", "m05"]


async def test_large_archive_pages_and_selects_by_many_ids(
    open_storage: Callable[..., Awaitable[StorageManager]],
) -> None:
    storage = await open_storage(batch_size=64)
    mam = storage.archive("mam")
    items = await fill(mam, 700)

    assert await mam.count(DOMAIN, USER) == 700
    assert await mam.query(DOMAIN, USER, ArchiveQuery(limit=100, after_id="m549")) == (items[550:650], False)
    assert await mam.query(DOMAIN, USER, ArchiveQuery(limit=100, before_id="m50", reverse=True)) == (
        items[0:50],
        True,
    )
    wanted = [i.id for i in items[::-1] if int(i.id[1:]) % 7]  # 600 ids, more than one statement's worth
    page, complete = await mam.query(DOMAIN, USER, ArchiveQuery(ids=wanted, limit=1000))
    assert (ids(page), complete) == (sorted(wanted, key=lambda i: int(i[1:])), True)
    assert await mam.delete(DOMAIN, USER, wanted) == 600
    assert await mam.count(DOMAIN, USER) == 100
