"""Archive search and retention: full-text index (SQLite FTS5, PostgreSQL tsvector) and an age index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_archive_age", "archive", ["store", "ts"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        # detail=none: whole-word AND queries only, the smallest index. remove_diacritics 0: words
        # match as typed (case-folded), as in PostgreSQL's 'simple' configuration.
        op.execute(
            "CREATE VIRTUAL TABLE archive_fts USING fts5("
            "body, detail=none, tokenize='unicode61 remove_diacritics 0')"
        )
        op.execute(
            "CREATE TRIGGER archive_fts_delete AFTER DELETE ON archive "
            "BEGIN DELETE FROM archive_fts WHERE rowid = old.seq; END"
        )
    elif dialect == "postgresql":
        op.add_column("archive", sa.Column("tsv", TSVECTOR(), nullable=True))
        op.execute("CREATE INDEX ix_archive_tsv ON archive USING gin (tsv)")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS archive_fts_delete")
        op.execute("DROP TABLE IF EXISTS archive_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_archive_tsv")
        op.drop_column("archive", "tsv")
    op.drop_index("ix_archive_age", table_name="archive")
