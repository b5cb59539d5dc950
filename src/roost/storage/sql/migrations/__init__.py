"""Alembic migration environment; run programmatically by ``roost.storage.sql.migrate``."""
