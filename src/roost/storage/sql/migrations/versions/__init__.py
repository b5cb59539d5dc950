"""Schema revisions, numbered 0001, 0002 …; alembic skips this file."""
