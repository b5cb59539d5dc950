"""Indexes on (domain, username) for the key-value and map stores.

The login snapshot reads every row of one user across all stores; with only the (store, …)
primary keys that was a scan of the whole table per login.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_kv_user", "kv", ["domain", "username"])
    op.create_index("ix_map_user", "map", ["domain", "username"])


def downgrade() -> None:
    op.drop_index("ix_map_user", table_name="map")
    op.drop_index("ix_kv_user", table_name="kv")
