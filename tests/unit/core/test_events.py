"""The event bus: priorities, claiming, async handlers resuming in order, folds that drop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from roost.core import hooks
from roost.core.events import EventBus
from roost.stanza.errors import StanzaError

EVENT = hooks.MESSAGE_BARE
FILTER = hooks.PRE_MESSAGE


async def test_handlers_run_from_highest_priority_and_a_claim_stops_the_chain() -> None:
    bus = EventBus()
    seen: list[str] = []

    def low(_: Any) -> bool:
        seen.append("low")
        return False

    def high(_: Any) -> bool:
        seen.append("high")
        return False

    def middle(_: Any) -> bool:
        seen.append("middle")
        return True

    bus.on(EVENT, low, priority=-5)
    bus.on(EVENT, high, priority=10)
    bus.on(EVENT, middle, priority=0)
    assert await bus.fire(EVENT, None) is True
    assert seen == ["high", "middle"]


async def test_equal_priorities_run_in_registration_order() -> None:
    bus = EventBus()
    seen: list[int] = []
    for i in range(5):
        bus.on(EVENT, lambda _, i=i: seen.append(i), priority=1)
    assert await bus.fire(EVENT, None) is False
    assert seen == [0, 1, 2, 3, 4]


async def test_unregistering_removes_only_that_handler() -> None:
    bus = EventBus()
    seen: list[str] = []
    remove = bus.on(EVENT, lambda _: seen.append("a"))
    bus.on(EVENT, lambda _: seen.append("b"))
    remove()
    remove()  # twice is harmless
    await bus.fire(EVENT, None)
    assert seen == ["b"]


def test_an_unknown_hook_name_is_refused_at_registration() -> None:
    with pytest.raises(KeyError, match="unknown hook"):
        EventBus().on("no/such/hook", lambda _: None)


async def test_a_failing_handler_is_logged_and_the_chain_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(_: Any) -> None:
        raise RuntimeError("boom")

    bus.on(EVENT, broken, priority=1)
    bus.on(EVENT, lambda _: seen.append("after"))
    assert await bus.fire(EVENT, None) is False
    assert seen == ["after"]
    assert "boom" in caplog.text


async def test_fire_sync_stays_synchronous_while_handlers_are() -> None:
    bus = EventBus()
    bus.on(EVENT, lambda _: False)
    bus.on(EVENT, lambda _: True, priority=-1)
    assert bus.fire_sync(EVENT, None) is True
    assert EventBus().fire_sync(EVENT, None) is False


async def test_fire_sync_resumes_after_an_awaitable_in_order() -> None:
    bus = EventBus()
    seen: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    def waits(_: Any) -> Awaitable[bool] | None:
        seen.append("first")

        async def later() -> bool:
            await gate
            seen.append("first done")
            return False

        return later()

    async def second(_: Any) -> bool:
        seen.append("second")
        return True

    def never(_: Any) -> bool:
        seen.append("never")
        return False

    bus.on(EVENT, waits, priority=3)
    bus.on(EVENT, second, priority=2)
    bus.on(EVENT, never, priority=1)
    result = bus.fire_sync(EVENT, None)
    assert not isinstance(result, bool)
    assert seen == ["first"]
    gate.set_result(None)
    assert await result is True
    assert seen == ["first", "first done", "second"]


async def test_fire_sync_lets_stanza_errors_through_to_the_router() -> None:
    bus = EventBus()

    def refuse(_: Any) -> bool:
        raise StanzaError("forbidden")

    bus.on(EVENT, refuse)
    with pytest.raises(StanzaError):
        bus.fire_sync(EVENT, None)


def test_fold_passes_the_value_through_every_filter_and_none_drops_it() -> None:
    bus = EventBus()
    bus.on(FILTER, lambda v: v + 1, priority=2)
    bus.on(FILTER, lambda v: v * 10, priority=1)
    assert bus.fold(FILTER, 1) == 20
    bus.on(FILTER, lambda v: None, priority=3)
    assert bus.fold(FILTER, 1) is None
    assert EventBus().fold(FILTER, 7) == 7


async def test_fold_continues_in_order_after_a_filter_that_waits() -> None:
    bus = EventBus()
    seen: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    def first(v: int) -> int:
        seen.append("first")
        return v + 1

    def waits(v: int) -> Awaitable[int]:
        async def later() -> int:
            await gate
            seen.append("waited")
            return v * 10

        return later()

    async def coroutine_filter(v: int) -> int:
        seen.append("async")
        return v + 5

    def last(v: int) -> int:
        seen.append("last")
        return v - 1

    bus.on(FILTER, first, priority=4)
    bus.on(FILTER, waits, priority=3)
    bus.on(FILTER, coroutine_filter, priority=2)
    bus.on(FILTER, last, priority=1)
    result = bus.fold(FILTER, 1)
    assert not isinstance(result, int)
    assert seen == ["first"]
    gate.set_result(None)
    assert await result == 24
    assert seen == ["first", "waited", "async", "last"]


async def test_a_waiting_filter_may_drop_the_value() -> None:
    bus = EventBus()
    later: list[int] = []

    async def drop(v: int) -> None:
        return None

    bus.on(FILTER, drop, priority=2)
    bus.on(FILTER, lambda v: later.append(v) or v, priority=1)
    result = bus.fold(FILTER, 1)
    assert await result is None  # type: ignore[misc]
    assert later == []


def test_a_failing_filter_fails_the_fold_for_the_router_to_answer() -> None:
    bus = EventBus()

    def broken(v: int) -> int:
        raise RuntimeError("filter bug")

    bus.on(FILTER, broken)
    with pytest.raises(RuntimeError):
        bus.fold(FILTER, 1)


def test_hooks_are_typed_and_modules_declare_their_own() -> None:
    assert isinstance(hooks.PRE_MESSAGE, hooks.FoldHook)
    assert isinstance(hooks.MESSAGE_BARE, hooks.FireHook)
    mine = hooks.FireHook[int]("test/declared-by-a-module")
    bus = EventBus()
    bus.on(mine, lambda _: None)
    bus.on("test/declared-by-a-module", lambda _: None)  # by name, once declared
    assert bus.has_handlers(mine)
    with pytest.raises(ValueError, match="already declared as a fire hook"):
        hooks.FoldHook[int]("test/declared-by-a-module")
