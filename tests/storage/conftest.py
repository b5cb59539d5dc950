"""Backends for the storage contract suite: memory, SQLite (tmp_path) and PostgreSQL.

PostgreSQL runs when ROOST_TEST_POSTGRES_URL is set (see scripts/start-postgres); each test then gets an
empty database (the public schema is dropped and recreated), so the suite owns that database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from roost.storage import StorageManager

POSTGRES_URL = os.environ.get("ROOST_TEST_POSTGRES_URL", "")

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=pytest.mark.skipif(not POSTGRES_URL, reason="ROOST_TEST_POSTGRES_URL not set"),
    ),
]
SQL_BACKENDS = BACKENDS[1:]

OpenStorage = Callable[..., Awaitable[StorageManager]]


async def reset_postgres(url: str) -> None:
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


_worker_url: str | None = None


async def worker_postgres_url() -> str:
    """The database this pytest process empties: under pytest-xdist each worker has its own (made on
    first use next to the given one), since two workers resetting one database break each other."""
    global _worker_url
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:
        return POSTGRES_URL
    if _worker_url is None:
        given = make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg")
        name = f"{given.database}_{worker}"
        engine = create_async_engine(given, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                if not found:
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        _worker_url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    return _worker_url


async def url_for(backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'roost.db'}"
    url = await worker_postgres_url()
    await reset_postgres(url)
    return url


@pytest.fixture(params=BACKENDS)
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await url_for(request.param, tmp_path)


@pytest.fixture(params=SQL_BACKENDS)
async def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await url_for(request.param, tmp_path)


@pytest.fixture
async def open_storage(storage_url: str) -> AsyncIterator[OpenStorage]:
    """Open (more) managers on this test's storage; all are closed at the end."""
    opened: list[StorageManager] = []

    async def open_(**kwargs: object) -> StorageManager:
        manager = await StorageManager.open(storage_url, **kwargs)  # type: ignore[arg-type]
        opened.append(manager)
        return manager

    yield open_
    for manager in opened:
        await manager.close()


@pytest.fixture
async def storage(open_storage: OpenStorage) -> StorageManager:
    return await open_storage()
