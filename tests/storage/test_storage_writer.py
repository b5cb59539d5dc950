"""The batching archive writer on its own, with a fake commit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from roost.storage import ArchiveItem, StorageError
from roost.storage.backend import QueuedAppend
from roost.storage.manager import ArchiveWriter


def entry(n: int, user: str = "juliet") -> QueuedAppend:
    return QueuedAppend("mam", "example.org", user, ArchiveItem(f"id{n}", 1_700_000_000.0 + n, "a@b", "<m/>"))


class FakeBackend:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, entries: Sequence[QueuedAppend]) -> None:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("database is down")
        self.batches.append([e.item.id for e in entries])


async def test_queued_items_are_committed_in_order_in_batches_of_at_most_batch_size() -> None:
    backend = FakeBackend()
    writer = ArchiveWriter(backend.commit, batch_delay=3600, batch_size=4)
    for n in range(10):
        await writer.append(entry(n))

    await writer.flush()

    assert backend.batches == [["id0", "id1", "id2", "id3"], ["id4", "id5", "id6", "id7"], ["id8", "id9"]]
    assert writer.pending == 0
    await writer.close()


async def test_failed_batches_are_logged_and_retried_until_written(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend(failures=3)
    writer = ArchiveWriter(backend.commit, batch_delay=0, batch_size=10, retry_delay=0)
    for n in range(3):
        await writer.append(entry(n))

    with caplog.at_level(logging.ERROR, logger="roost.storage.manager"):
        await writer.flush()

    assert backend.batches == [["id0", "id1", "id2"]]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 3
    assert "database is down" in failures[0].getMessage()
    await writer.close()


async def test_close_writes_everything_still_queued() -> None:
    backend = FakeBackend()
    writer = ArchiveWriter(backend.commit, batch_delay=3600, batch_size=2)
    for n in range(5):
        await writer.append(entry(n))

    await writer.close()

    assert [i for batch in backend.batches for i in batch] == [f"id{n}" for n in range(5)]
    with pytest.raises(StorageError):
        await writer.append(entry(5))


async def test_append_waits_while_the_queue_is_full() -> None:
    backend = FakeBackend()
    backend.gate.clear()  # the database hangs
    writer = ArchiveWriter(backend.commit, batch_delay=0, batch_size=2, max_pending=2)
    await writer.append(entry(0))
    await writer.append(entry(1))

    third = asyncio.create_task(writer.append(entry(2)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()

    backend.gate.set()
    await third
    await writer.flush()
    assert [i for batch in backend.batches for i in batch] == ["id0", "id1", "id2"]
    await writer.close()


async def test_settle_waits_for_that_archive_only() -> None:
    backend = FakeBackend()
    writer = ArchiveWriter(backend.commit, batch_delay=3600, batch_size=100)
    await writer.append(entry(0, user="romeo"))

    await writer.settle(("mam", "example.org", "juliet"))  # nothing queued for juliet: returns at once
    assert backend.batches == []
    await writer.settle(("mam", "example.org", "romeo"))
    assert backend.batches == [["id0"]]
    await writer.close()


async def test_settle_gives_up_when_storage_stays_unreachable() -> None:
    backend = FakeBackend(failures=10**9)
    writer = ArchiveWriter(
        backend.commit, batch_delay=0, batch_size=10, retry_delay=0.001, max_retry_delay=0.001
    )
    await writer.append(entry(0))

    with pytest.raises(StorageError):
        await writer.settle(("mam", "example.org", "juliet"), wait_limit=0.05)

    backend.failures = 0
    await writer.close()
    assert backend.batches == [["id0"]]


async def test_giving_up_on_close_reports_the_unwritten_items(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend()
    backend.gate.clear()  # the database hangs for good
    writer = ArchiveWriter(backend.commit, batch_delay=0, batch_size=10)
    for n in range(3):
        await writer.append(entry(n))

    with caplog.at_level(logging.ERROR, logger="roost.storage.manager"), pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await writer.close()

    assert any("3 items not written" in r.getMessage() for r in caplog.records)
    assert backend.batches == []
