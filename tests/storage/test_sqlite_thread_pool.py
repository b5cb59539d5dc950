"""SQLite's database thread never waits for a pooled connection (issue 15, found by ``bench/run soak``).

Connections are checked out in the one database thread. When more coroutines held connections than the
pool has, the next checkout blocked that thread until the pool timed out, so the holders could not
finish either: everything stalled, then failed. Coroutines now wait for a connection on the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import create_engine, select, text

from roost.storage.sql.threaded import ThreadedEngine


async def test_more_concurrent_connections_than_the_pool_holds_all_complete(tmp_path: Path) -> None:
    # 1 + 2 connections, 2 s pool timeout: without the permits, the 4th checkout blocks the thread.
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}", pool_size=1, max_overflow=2, pool_timeout=2)
    db = ThreadedEngine(engine)
    try:
        assert await db.fetch(select(text("1")), {}) == [(1,)]  # fetch()'s reader keeps one connection

        async def reader(i: int) -> int:
            async with db.connect() as conn:
                await conn.execute(text("SELECT 1"))  # checks a connection out…
                await asyncio.sleep(0.01)  # …and holds it across awaits, like a read() block
                result = await conn.execute(text("SELECT :x"), {"x": i})
                return int(result.scalar())

        async def runner(i: int) -> int:
            return int(await db.run(lambda conn: conn.execute(text("SELECT :x"), {"x": i}).scalar()))

        results = await asyncio.gather(*(reader(i) for i in range(20)), *(runner(i) for i in range(5)))
        assert results == [*range(20), *range(5)]
    finally:
        await db.dispose()
