"""Schema migrations on the SQL backends: fresh and old databases end at head, matching schema.py."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from roost.storage import ArchiveQuery, StorageError, StorageManager
from roost.storage.sql import migrate
from roost.storage.sql.archive import owner_token
from roost.storage.sql.backend import _USER_KV, _USER_MAP, _normalize_url
from roost.storage.sql.schema import include_name, metadata


async def run_sync(url: str, fn: Callable[[Connection], Any]) -> Any:
    sa_url = _normalize_url(url)
    if sa_url.get_backend_name() == "sqlite":  # Roost drives SQLite synchronously, on a thread

        def run() -> Any:
            sync_engine = create_engine(sa_url)
            try:
                with sync_engine.begin() as conn:
                    return fn(conn)
            finally:
                sync_engine.dispose()

        return await asyncio.to_thread(run)
    engine = create_async_engine(sa_url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def all_revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


async def test_fresh_database_is_migrated_with_progress_and_reopens_silently(sql_url: str) -> None:
    messages: list[str] = []
    storage = await StorageManager.open(sql_url, progress=messages.append)
    await storage.close()
    head = migrate.version_number(migrate.head_revision())

    assert messages[0] == f"storage: migrating schema 0 → {head} …"
    assert messages[-1] == f"storage: schema is at version {head}"
    assert await run_sync(sql_url, migrate.current_revision) == migrate.head_revision()

    messages.clear()
    storage = await StorageManager.open(sql_url, progress=messages.append)
    await storage.close()
    assert messages == []


async def test_migrated_schema_matches_schema_py(sql_url: str) -> None:
    storage = await StorageManager.open(sql_url)
    await storage.close()

    def differences(conn: Connection) -> list[Any]:
        return list(
            compare_metadata(MigrationContext.configure(conn, opts={"include_name": include_name}), metadata)
        )

    assert await run_sync(sql_url, differences) == []


@pytest.mark.parametrize("revision", all_revisions())
async def test_database_at_any_older_revision_is_upgraded_to_head(sql_url: str, revision: str) -> None:
    def upgrade_to(conn: Connection) -> None:
        cfg = migrate.alembic_config(conn)
        command.upgrade(cfg, revision)

    await run_sync(sql_url, upgrade_to)
    assert await run_sync(sql_url, migrate.current_revision) == revision

    storage = await StorageManager.open(sql_url)
    await storage.accounts.create("example.org", "juliet", [])
    await storage.close()

    assert await run_sync(sql_url, migrate.current_revision) == migrate.head_revision()


async def test_every_revision_downgrades_and_upgrades_again(sql_url: str) -> None:
    storage = await StorageManager.open(sql_url)
    await storage.close()

    def down_and_up(conn: Connection) -> None:
        cfg = migrate.alembic_config(conn)
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")

    await run_sync(sql_url, down_and_up)
    storage = await StorageManager.open(sql_url)
    await storage.accounts.create("example.org", "juliet", [])
    await storage.close()


async def test_database_newer_than_the_code_is_refused(sql_url: str) -> None:
    storage = await StorageManager.open(sql_url)
    await storage.close()
    await run_sync(
        sql_url, lambda conn: conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    )

    with pytest.raises(StorageError, match="9999 is newer"):
        await StorageManager.open(sql_url)


def test_revisions_form_one_numbered_line() -> None:
    revisions = all_revisions()
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]


async def test_a_users_rows_are_found_by_index_not_by_scanning(tmp_path: Path) -> None:
    """The login snapshot reads one user's rows across stores: a table scan per login would not scale."""
    url = f"sqlite:///{tmp_path / 'roost.db'}"
    storage = await StorageManager.open(url)
    await storage.close()
    connection = sqlite3.connect(tmp_path / "roost.db")
    try:
        for statement in (_USER_KV, _USER_MAP):
            sql = str(statement.compile(dialect=sqlite_dialect()))
            plan = " ".join(
                str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", ("d", "u"))
            )
            assert "USING INDEX" in plan and "SCAN" not in plan, plan
    finally:
        connection.close()


async def test_search_rows_indexed_before_0005_are_scoped_to_their_owner_after_it(sql_url: str) -> None:
    """Migration 0005 puts the owner's token into every existing full-text row: old messages are
    still found, only in their own archive, and the index itself tells the owners apart."""

    def fill_at_0004(conn: Connection) -> None:
        command.upgrade(migrate.alembic_config(conn), "0004")
        for seq, user in ((1, "juliet"), (2, "romeo")):
            conn.execute(
                text(
                    "INSERT INTO archive (seq, store, domain, username, id, ts, with_jid, with_bare, kind, "
                    "payload) VALUES (:seq, 'mam', 'example.org', :user, :id, :seq, 'nurse@example.org', "
                    "'nurse@example.org', 'chat', '<message/>')"
                ),
                {"seq": seq, "user": user, "id": f"id{seq}"},
            )
            if conn.dialect.name == "sqlite":
                conn.execute(
                    text("INSERT INTO archive_fts (rowid, body) VALUES (:seq, 'wherefore art thou')"),
                    {"seq": seq},
                )
            else:
                conn.execute(
                    text(
                        "UPDATE archive SET tsv = to_tsvector('simple', 'wherefore art thou') "
                        "WHERE seq = :seq"
                    ),
                    {"seq": seq},
                )

    await run_sync(sql_url, fill_at_0004)
    storage = await StorageManager.open(sql_url)
    try:
        for user, item_id in (("juliet", "id1"), ("romeo", "id2")):
            found, _ = await storage.archive("mam").query("example.org", user, ArchiveQuery(text="Wherefore"))
            assert [item.id for item in found] == [item_id]
    finally:
        await storage.close()

    def index_hits(conn: Connection) -> int:
        words = f"{owner_token('mam', 'example.org', 'juliet')} wherefore"
        if conn.dialect.name == "sqlite":
            query = " ".join(f'"{word}"' for word in words.split())
            sql = "SELECT count(*) FROM archive_fts WHERE archive_fts MATCH :q"
            return int(conn.execute(text(sql), {"q": query}).scalar_one())
        sql = "SELECT count(*) FROM archive WHERE tsv @@ plainto_tsquery('simple', :q)"
        return int(conn.execute(text(sql), {"q": words}).scalar_one())

    assert await run_sync(sql_url, index_hits) == 1
