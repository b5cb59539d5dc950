"""Schema migrations with Alembic, driven from code: no alembic.ini at runtime.

``upgrade`` runs inside ``AsyncConnection.run_sync`` within the caller's transaction when storage opens.
Revisions are numbered "0001", "0002" …; the number is the schema version shown to operators.

To add a revision (developers)::

    .venv/bin/python -m roost.storage.sql.migrate revision -m "add foo table"

then write its upgrade()/downgrade() by hand, update ``schema.py`` to match, and run tests/storage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from roost.storage.api import StorageError

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")

#: pg_advisory_xact_lock key, so that two processes starting together migrate one after the other.
_PG_LOCK_KEY: Final = 0x526F6F7374  # "Roost"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def version_number(revision: str | None) -> str:
    """Operator-facing schema version: "0" for an empty database, else the revision number."""
    if revision is None:
        return "0"
    return str(int(revision)) if revision.isdigit() else revision


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, progress: Callable[[str], None]) -> None:
    """Bring the schema to head, reporting each step; a database newer than this code is refused."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    cfg = alembic_config(connection)
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    current = current_revision(connection)
    if current == head:
        return
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise StorageError(
            f"database schema version {version_number(current)} is newer than this Roost knows "
            f"(up to {version_number(head)}); upgrade Roost or restore a matching backup"
        )
    progress(f"storage: migrating schema {version_number(current)} → {version_number(head)} …")

    def applied(*, step: MigrationInfo, **_: Any) -> None:
        rev_id = step.up_revision_id
        revision = script.get_revision(rev_id) if rev_id is not None else None
        doc = (revision.doc or "").strip().splitlines() if revision is not None else []
        title = f": {doc[0]}" if doc else ""
        progress(f"storage: schema version {version_number(step.up_revision_id)} applied{title}")

    cfg.attributes["on_version_apply"] = (applied,)
    command.upgrade(cfg, "head")
    progress(f"storage: schema is at version {version_number(head)}")


def _next_revision_id() -> str:
    script = ScriptDirectory.from_config(alembic_config())
    numbers = [int(rev.revision) for rev in script.walk_revisions() if rev.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m roost.storage.sql.migrate")
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="create an empty, numbered migration script")
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    if args.command == "revision":
        command.revision(alembic_config(), message=args.message, rev_id=_next_revision_id())


if __name__ == "__main__":
    main()
