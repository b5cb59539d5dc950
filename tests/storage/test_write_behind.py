"""WriteBehind: values wait in memory, are visible at once, and reach storage in one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

import pytest

from roost.storage import StorageManager
from roost.storage.api import JSON, KeyValueStore
from roost.storage.write_behind import WriteBehind


class Tasks:
    """A stand-in for Server.spawn that keeps the tasks so the test can await them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, awaitable: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        async def run() -> Any:
            return await awaitable

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        while self.tasks:
            await self.tasks.pop(0)


class CountingStore:
    """A real store that counts batched writes (and can be made to fail)."""

    def __init__(self, inner: KeyValueStore) -> None:
        self.inner = inner
        self.batches: list[dict[str, JSON | None]] = []
        self.fail = False

    async def get(self, domain: str, user: str) -> JSON | None:
        return await self.inner.get(domain, user)

    async def set(self, domain: str, user: str, value: JSON | None) -> None:
        await self.inner.set(domain, user, value)

    async def set_users(self, domain: str, values: Mapping[str, JSON | None]) -> None:
        if self.fail:
            raise OSError("disk on fire")
        self.batches.append(dict(values))
        await self.inner.set_users(domain, values)


@pytest.fixture
async def storage(tmp_path: Path) -> Any:
    manager = await StorageManager.open(f"sqlite:///{tmp_path / 'roost.db'}")
    yield manager
    await manager.close()


async def test_a_burst_of_values_is_one_batch_and_visible_before_it(storage: StorageManager) -> None:
    tasks = Tasks()
    store = CountingStore(storage.keyvalue("last"))
    behind = WriteBehind(store, "last", tasks.spawn, delay=0.01)
    for n in range(20):
        behind.put("example.org", f"u{n}", {"n": n})
    assert await behind.get("example.org", "u7") == {"n": 7}  # before it is written
    assert await storage.keyvalue("last").get("example.org", "u7") is None
    await asyncio.sleep(0.03)
    await tasks.settle()
    assert len(store.batches) == 1 and len(store.batches[0]) == 20
    assert await storage.keyvalue("last").get("example.org", "u7") == {"n": 7}


async def test_forgotten_values_are_not_written(storage: StorageManager) -> None:
    tasks = Tasks()
    behind = WriteBehind(storage.keyvalue("last"), "last", tasks.spawn, delay=0.01)
    behind.put("example.org", "gone", {"n": 1})
    behind.forget("example.org", "gone")
    await behind.close()
    assert await storage.keyvalue("last").get("example.org", "gone") is None


async def test_a_failed_batch_is_kept_and_newer_values_win(storage: StorageManager) -> None:
    tasks = Tasks()
    store = CountingStore(storage.keyvalue("last"))
    behind = WriteBehind(store, "last", tasks.spawn, delay=0.01)
    behind.put("example.org", "a", {"n": 1})
    store.fail = True
    await behind.flush()
    assert behind.pending("example.org", "a") == (True, {"n": 1})
    behind.put("example.org", "a", {"n": 2})
    store.fail = False
    await behind.close()
    assert await storage.keyvalue("last").get("example.org", "a") == {"n": 2}
    await tasks.settle()


async def test_after_stopping_nothing_is_scheduled_and_close_writes(storage: StorageManager) -> None:
    tasks = Tasks()
    behind = WriteBehind(storage.keyvalue("last"), "last", tasks.spawn, delay=0.01)
    behind.stopping()
    behind.put("example.org", "late", {"n": 3})
    await asyncio.sleep(0.03)
    assert tasks.tasks == []
    await behind.close()
    assert await storage.keyvalue("last").get("example.org", "late") == {"n": 3}
