"""Initial schema: accounts with SCRAM credentials, key-value, map and archive stores.

Revision ID: 0001
Revises:
Create Date: 2026-06-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("domain", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "username", name="pk_accounts"),
    )
    op.create_table(
        "account_credentials",
        sa.Column("domain", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("hash_name", sa.String(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("stored_key", sa.LargeBinary(), nullable=False),
        sa.Column("server_key", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "username", "hash_name", name="pk_account_credentials"),
        sa.ForeignKeyConstraint(
            ["domain", "username"],
            ["accounts.domain", "accounts.username"],
            name="fk_account_credentials_accounts",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "kv",
        sa.Column("store", sa.String(), nullable=False),
        sa.Column("domain", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("store", "domain", "username", name="pk_kv"),
    )
    op.create_table(
        "map",
        sa.Column("store", sa.String(), nullable=False),
        sa.Column("domain", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("store", "domain", "username", "key", name="pk_map"),
    )
    op.create_table(
        "archive",
        sa.Column("seq", _big_id, primary_key=True, autoincrement=True),
        sa.Column("store", sa.String(), nullable=False),
        sa.Column("domain", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("with_jid", sa.String(), nullable=False),
        sa.Column("with_bare", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index("ix_archive_time", "archive", ["store", "domain", "username", "ts", "seq"])
    op.create_index("ix_archive_with", "archive", ["store", "domain", "username", "with_bare", "ts", "seq"])
    op.create_index("ix_archive_id", "archive", ["store", "domain", "username", "id", "ts", "seq"])


def downgrade() -> None:
    op.drop_table("archive")
    op.drop_table("map")
    op.drop_table("kv")
    op.drop_table("account_credentials")
    op.drop_table("accounts")
