"""SQL backend (SQLite on a dedicated thread, PostgreSQL via asyncpg) with Alembic migrations.

``backend`` holds the stores, ``schema`` the tables, ``migrate`` the programmatic Alembic driver and
``migrations/`` the revision scripts.
"""
