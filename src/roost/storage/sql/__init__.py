"""SQL backend (SQLite via aiosqlite, PostgreSQL via asyncpg) with Alembic migrations."""

from roost.storage.sql.backend import SqlBackend, open_sql_backend

__all__ = ["SqlBackend", "open_sql_backend"]
