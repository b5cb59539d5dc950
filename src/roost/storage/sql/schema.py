"""The SQL schema as SQLAlchemy Core tables: what the queries use and what migrations must produce.

This file describes the *current* schema (head). Changing it needs a new migration under
``migrations/versions/``; ``tests/storage/test_migrations.py`` fails while the two disagree.

Column ``username`` rather than ``user``: USER is reserved in PostgreSQL and SQL:2016.
Archive timestamps are integer microseconds (``ts``): exact, and ordered the same way by every engine.
``seq`` is the append order; items sort by (ts, seq), so equal timestamps keep their append order.
``with_bare`` is the bare part of ``with_jid``, so that a MAM query 'with' a bare JID (XEP-0313 §4.1.1)
is an index lookup rather than a prefix scan.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR

metadata = MetaData()

# SQLite only auto-assigns "INTEGER PRIMARY KEY" (the rowid alias), never BIGINT.
_BigIntId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("domain", String, nullable=False),
    Column("username", String, nullable=False),
    PrimaryKeyConstraint("domain", "username", name="pk_accounts"),
)

account_credentials = Table(
    "account_credentials",
    metadata,
    Column("domain", String, nullable=False),
    Column("username", String, nullable=False),
    Column("hash_name", String, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("stored_key", LargeBinary, nullable=False),
    Column("server_key", LargeBinary, nullable=False),
    PrimaryKeyConstraint("domain", "username", "hash_name", name="pk_account_credentials"),
    ForeignKeyConstraint(
        ["domain", "username"],
        ["accounts.domain", "accounts.username"],
        name="fk_account_credentials_accounts",
        ondelete="CASCADE",
    ),
)

kv = Table(
    "kv",
    metadata,
    Column("store", String, nullable=False),
    Column("domain", String, nullable=False),
    Column("username", String, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("store", "domain", "username", name="pk_kv"),
)
# All of one user's rows (the login snapshot, account deletion) without scanning the table.
Index("ix_kv_user", kv.c.domain, kv.c.username)

map_ = Table(
    "map",
    metadata,
    Column("store", String, nullable=False),
    Column("domain", String, nullable=False),
    Column("username", String, nullable=False),
    Column("key", String, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("store", "domain", "username", "key", name="pk_map"),
)
Index("ix_map_user", map_.c.domain, map_.c.username)


def _archive_columns() -> list[Column[Any]]:
    return [
        Column("seq", _BigIntId, primary_key=True, autoincrement=True),
        Column("store", String, nullable=False),
        Column("domain", String, nullable=False),
        Column("username", String, nullable=False),
        Column("id", String, nullable=False),
        Column("ts", BigInteger, nullable=False),
        Column("with_jid", String, nullable=False),
        Column("with_bare", String, nullable=False),
        Column("kind", String, nullable=False),
        Column("payload", Text, nullable=False),
    ]


archive = Table("archive", metadata, *_archive_columns())
# MAM pages: by time (and append order) within one archive ...
Index("ix_archive_time", archive.c.store, archive.c.domain, archive.c.username, archive.c.ts, archive.c.seq)
# ... the same restricted to one contact (bare 'with'; a full JID is a filter on these rows) ...
Index(
    "ix_archive_with",
    archive.c.store,
    archive.c.domain,
    archive.c.username,
    archive.c.with_bare,
    archive.c.ts,
    archive.c.seq,
)
# ... and RSM anchors / 'ids' lookups. The id leads (migration 0004): archive ids are time-ordered, so
# appends land at the index's right edge instead of on one random page per owner (measured: a third
# of the insert cost on a 300k-row archive). Not unique: a duplicate id must not wedge the write queue.
Index("ix_archive_id", archive.c.id, archive.c.store, archive.c.domain, archive.c.username)
# Retention by age across a whole store (the server default): the oldest rows first, in batches.
Index("ix_archive_age", archive.c.store, archive.c.ts)

# -- full-text search (XEP-0431): engine-specific, so created by raw DDL in migration 0003 and left out of
# ``metadata`` (``include_name`` keeps schema comparisons from reporting them).
#: SQLite: an FTS5 table whose rowid is archive.seq; a trigger drops its row with the archive row.
SQLITE_FTS_TABLE: Final = "archive_fts"
#: PostgreSQL: a nullable ``tsv tsvector`` column on archive ('simple' configuration), GIN-indexed.
PG_TSV_COLUMN: Final = "tsv"
PG_TSV_INDEX: Final = "ix_archive_tsv"
#: The archive table as PostgreSQL has it, for INSERTs that fill the tsvector.
archive_pg = Table("archive", MetaData(), *_archive_columns(), Column(PG_TSV_COLUMN, TSVECTOR))


def include_name(name: str | None, type_: str, parent_names: MutableMapping[Any, str | None]) -> bool:
    """Alembic filter: the search structures are not in ``metadata`` on purpose."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(SQLITE_FTS_TABLE)
    if type_ == "column":
        return name != PG_TSV_COLUMN
    if type_ == "index":
        return name != PG_TSV_INDEX
    return True
