"""The [gc] policy: start-up objects frozen, periodic collect-and-freeze, pauses measured and logged."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from roost.core.gc_policy import MIN_INTERVAL, MIN_LOOK, _Policy, malloc_trim, unfrozen
from roost.util.bounded import TrackedDict
from roost.util.gcstats import STATS, GcStats
from tests.support.raw import RawClient
from tests.support.server import running_server


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycles(n: int) -> None:
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a


def test_stats_measure_every_generation() -> None:
    stats = GcStats()
    stats.install()
    stats.install()  # idempotent
    try:
        make_cycles(10)
        gc.collect()
        gc.collect(0)
    finally:
        stats.uninstall()
    snap = stats.snapshot()
    full = snap["generations"][2]
    assert full["collections"] == 1
    assert full["collected"] >= 20
    assert snap["generations"][0]["collections"] >= 1
    assert 0 < full["pause_ms_max"] <= snap["max_pause_ms"]
    assert stats._callback not in gc.callbacks


async def test_server_freezes_collects_periodically_and_unfreezes_on_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="roost.gc")
    extra = (
        "[gc]\ntuning = true\nfreeze_interval_seconds = 0.5\nlog_pause_ms = 0\nyoung_threshold = 2000\n"
        "malloc_trim_interval_seconds = 0.5\n"
    )
    thresholds = gc.get_threshold()
    try:
        async with running_server(tmp_path, extra):
            assert gc.get_freeze_count() > 1000  # modules, config, tables: never scanned again
            assert gc.get_threshold()[0] == 2000
            before = STATS.generations[2].collected
            make_cycles(50)  # garbage made after start-up: the next periodic collection finds it
            for _ in range(40):
                await asyncio.sleep(0.1)
                if STATS.generations[2].collected - before >= 100:
                    break
            assert STATS.generations[2].collected - before >= 100
            assert "unreachable objects in the last interval" in caplog.text
            assert any(r.getMessage().startswith("gc generation 2:") for r in caplog.records)
            if malloc_trim() is not None:  # glibc: the C heap's free pages went back to the system
                assert STATS.malloc_trims >= 1
                assert "malloc_trim:" in caplog.text
        # An embedding process gets its collector back as it was.
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.skipif(malloc_trim() is None, reason="malloc_trim is glibc's")
async def test_without_tuning_nothing_is_frozen_but_the_heap_is_still_trimmed(tmp_path: Path) -> None:
    extra = "[gc]\ntuning = false\nmalloc_trim_interval_seconds = 0.5\n"
    thresholds = gc.get_threshold()
    async with running_server(tmp_path, extra):
        before = STATS.malloc_trims
        for _ in range(40):
            await asyncio.sleep(0.1)
            if STATS.malloc_trims > before:
                break
        assert STATS.malloc_trims > before
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds


async def test_collections_come_more_often_while_they_take_longer_than_the_target() -> None:
    policy = _Policy(10.0, False, None, 0)
    try:
        policy.target = 0.010
        policy.adapt(0.050)
        assert policy.current == 5.0
        for _ in range(10):
            policy.adapt(0.050)
        assert policy.current == MIN_INTERVAL
        policy.adapt(0.005)  # under the target, not far under: stays
        assert policy.current == MIN_INTERVAL
        for _ in range(20):
            policy.adapt(0.001)
        assert policy.current == 10.0  # never longer than configured
    finally:
        policy.stop(None)


async def test_a_periodic_collection_over_the_target_says_what_made_it_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="roost.gc")
    policy = _Policy(10.0, True, None, 0)
    STATS.slow_periodic.clear()
    kept = [Node() for _ in range(5000)]  # survivors of the interval: what the collection walks
    try:
        policy.target = 1e-9  # every collection is "slow"
        policy.tick()
        took_ms, new, survivors, since = STATS.slow_periodic[-1]
        assert took_ms > 0 and since >= 0
        assert survivors >= len(kept)  # all of them, frozen now
        assert new >= 0
        assert "periodic collection:" in caplog.text and "survived" in caplog.text
        STATS.reset()
        assert not STATS.slow_periodic
    finally:
        policy.stop(None)
        gc.unfreeze()


async def test_tables_that_span_the_accounts_stay_frozen(tmp_path: Path) -> None:
    """A dict whose keys and values are all untracked (strings, ints, tuples of them) is untracked by a
    full collection, and the next insertion of a freshly built tuple tracks it again, young: the next
    periodic collection then walks every entry. At 10,000 sessions two such tables (vCard photo
    hashes, the read cache's generations) were 40,000 references, most of the ~10 ms each collection
    took. A login, a message and a logout must leave no table of all the accounts young."""
    users = 60  # more entries than any per-connection object's attribute dict has
    thresholds = gc.get_threshold()
    async with running_server(tmp_path) as running:
        clients: list[RawClient] = []
        try:
            for n in range(users + 1):
                await running.add_user(f"u{n}@localhost", "pw")
            for n in range(users):
                client = await RawClient.login(running.c2s_port, f"u{n}", "pw", "r")
                client.send_raw("<presence/>")
                assert (await client.element()).name == "presence"
                clients.append(client)
            await asyncio.sleep(0.2)  # the modules' session/bound and presence work
            gc.collect()
            gc.freeze()  # what the [gc] policy does every interval
            newcomer = await RawClient.login(running.c2s_port, f"u{users}", "pw", "r")
            newcomer.send_raw("<presence/>")
            assert (await newcomer.element()).name == "presence"
            newcomer.send_raw("<message to='u0@localhost' type='chat'><body>hi</body></message>")
            while (await clients[0].element()).name != "message":
                pass
            newcomer.send_raw("</stream:stream>")
            assert await newcomer.closed()
            newcomer.close()
            await asyncio.sleep(0.2)
            young = [
                list(o.items())[:2]
                for generation in range(3)
                for o in gc.get_objects(generation)
                if type(o) is dict and len(o) >= users
            ]
            assert young == []
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)
            for client in clients:
                client.close()


async def test_a_burst_of_allocations_is_collected_before_the_interval_ends() -> None:
    """A quiet server's interval grows to freeze_interval_seconds; a burst of logins then must not
    wait for it (the first collection after 10,000 logins walked 219,000 survivors: 225 ms)."""
    STATS.install()
    thresholds = gc.get_threshold()
    gc.set_threshold(1000, thresholds[1], thresholds[2])
    gc.collect()
    gc.freeze()  # as the server does at start
    policy = _Policy(10.0, True, None, 0)
    at_start = STATS.generations[2].collections
    try:
        await asyncio.sleep(0.6)
        quiet = STATS.generations[2].collections
        assert quiet == at_start  # looked twice, little new: no collection yet
        burst = [Node() for _ in range(3 * policy.unfrozen_budget)]
        for _ in range(20):
            await asyncio.sleep(0.1)
            if STATS.generations[2].collections > quiet:
                break
        assert STATS.generations[2].collections > quiet  # well before the 10 s interval
        assert unfrozen() < policy.unfrozen_budget  # all frozen at that collection
        assert gc.get_freeze_count() >= len(burst)  # the survivors are frozen
    finally:
        policy.stop(None)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_the_policy_looks_more_often_while_objects_pile_up_fast() -> None:
    policy = _Policy(10.0, True, None, 0)
    try:
        budget = policy.unfrozen_budget
        assert policy.next_look(0) == MIN_INTERVAL  # nothing new: the usual pace
        assert policy.next_look(budget / 10) == MIN_INTERVAL  # slow: a look every 0.25 s is enough
        assert policy.next_look(10 * budget) == pytest.approx(0.05)  # 10 budgets a second: every 50 ms
        assert policy.next_look(1000 * budget) == MIN_LOOK  # never busier than every 20 ms
    finally:
        policy.stop(None)


async def test_a_burst_after_a_quiet_spell_shortens_the_next_look_at_once() -> None:
    gc.collect()
    gc.freeze()
    policy = _Policy(10.0, True, None, 0)
    try:
        policy.unfrozen_budget = 100_000  # more than the burst: only the pace is looked at
        now = policy.loop.time()
        policy.last_tick = now - 7.0  # a quiet spell since the last collection
        policy.last_look = (now - 0.05, unfrozen())
        burst = [Node() for _ in range(50_000)]  # ~1,000,000 new objects a second since the last look
        collections = STATS.generations[2].collections
        policy.tick()
        assert STATS.generations[2].collections == collections  # under the budget: no collection
        # At the pace since the collection (~7,000/s) the next look would be 0.25 s away.
        assert MIN_LOOK <= policy.period < 0.15, policy.period
        del burst
    finally:
        policy.stop(None)
        gc.unfreeze()


def test_a_tracked_dict_of_atomic_entries_stays_tracked_where_a_plain_one_is_retracked_young() -> None:
    """What TrackedDict is for (the read cache's generations, carbons' ids): a plain dict of atomic
    entries is untracked by a full collection and comes back young with the next fresh tuple key."""
    plain: dict[tuple[str, str], int] = {("localhost", f"u{n}"): n for n in range(100)}
    kept: TrackedDict[tuple[str, str], int] = TrackedDict(plain)
    gc.collect()
    assert not gc.is_tracked(plain)
    assert gc.is_tracked(kept)
    gc.freeze()
    try:
        user = f"new{len(plain)}"  # a tuple built at run time, as (domain, user) keys are
        plain[("localhost", user)] = 1
        kept[("localhost", user)] = 1
        young = [o for generation in range(3) for o in gc.get_objects(generation)]
        assert any(o is plain for o in young)  # walked again by the next collection
        assert not any(o is kept for o in young)  # still frozen
    finally:
        gc.unfreeze()
