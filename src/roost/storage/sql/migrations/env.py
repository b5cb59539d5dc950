"""Alembic environment: always "online", on the connection (and transaction) the caller passes in.

``roost.storage.sql.migrate.upgrade`` puts the connection into ``config.attributes``; the whole upgrade then
runs in the caller's transaction, so a failed migration leaves the database as it was (PostgreSQL, SQLite).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from roost.storage.sql.schema import include_name, metadata

config = context.config
connection = config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through roost.storage.sql.migrate, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    include_name=include_name,
    render_as_batch=True,  # SQLite can only ALTER through table copies
    on_version_apply=config.attributes.get("on_version_apply", ()),
)
with context.begin_transaction():
    context.run_migrations()
