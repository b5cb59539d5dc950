"""``roost backup FILE`` and ``roost restore FILE``: a consistent online snapshot, and putting it back.

The archive is a gzip'd tar with a ``manifest.json``, the SQLite database (``roost.db``, taken with
SQLite's online backup API: consistent while the server writes, WAL or not) and the server's files
from the data directory (the generated TLS certificate and key, ``server.secret`` whose loss would
let clients tell real accounts from unknown ones, and ``uploads/`` when it exists) plus the
configured certificate and key. A running server is asked to flush its queued writes first, so
nothing it acknowledged before the backup began is missing.

PostgreSQL databases are backed up with ``pg_dump`` (the archive then holds the files only, and the
command says how). Restoring refuses to overwrite a database unless ``--force``, and refuses while a
server runs on the data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sqlite3
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from roost.config import Config

FORMAT = 1
DB_MEMBER = "roost.db"
MANIFEST = "manifest.json"
#: Files and directories of data_dir that belong in a backup.
DATA_FILES = ("server.secret", "tls", "uploads")
SECRET_FILES = ("server.secret", "tls/roost.key")


def add_commands(
    commands: Any, common: argparse.ArgumentParser, formatter: type[argparse.HelpFormatter]
) -> None:
    backup = commands.add_parser(
        "backup",
        help="write a consistent snapshot of the database and the server's files",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        epilog="examples:\n  roost backup /var/backups/roost-$(date +%F).tar.gz\n"
        "  roost restore /var/backups/roost-2025-01-31.tar.gz   (server stopped)\n",
        formatter_class=formatter,
        parents=[common],
    )
    backup.add_argument("file", metavar="FILE", type=Path, help="the archive to write (.tar.gz)")
    backup.set_defaults(handler=cmd_backup)
    restore = commands.add_parser(
        "restore",
        help="restore a backup onto a stopped or fresh installation",
        description="Put the database and files of a 'roost backup' archive in place for the "
        "configuration given (its data_dir and database may differ from the backed-up server's).",
        epilog="examples:\n  roost restore backup.tar.gz -c /etc/roost/roost.toml\n",
        formatter_class=formatter,
        parents=[common],
    )
    restore.add_argument("file", metavar="FILE", type=Path, help="an archive made by roost backup")
    restore.add_argument("--force", action="store_true", help="overwrite an existing database")
    restore.set_defaults(handler=cmd_restore)


def _sqlite_file(config: Config) -> Path | None:
    from roost.cli.main import _sqlite_path

    url = config.storage_url
    return _sqlite_path(url) if url.split(":", 1)[0].split("+")[0] == "sqlite" else None


def _is_postgres(config: Config) -> bool:
    return config.storage_url.split(":", 1)[0].split("+")[0] in ("postgresql", "postgres")


def _server_running(config: Config) -> bool:
    from roost.core import control

    try:
        return (
            asyncio.run(control.request(control.socket_path(config.server.data_dir), {"op": "ping"}, 5))
            is not None
        )
    except OSError:
        return True


def _flush_running_server(config: Config) -> bool:
    """Ask a running server to write what it has queued; False when none runs."""
    from roost.core import control

    try:
        reply = asyncio.run(control.request(control.socket_path(config.server.data_dir), {"op": "flush"}))
    except OSError:
        return False
    return reply is not None and bool(reply.get("ok"))


def cmd_backup(args: argparse.Namespace) -> int:
    from roost.cli.errors import OperationFailed
    from roost.cli.main import EXIT_FAILED, EXIT_OK, _cli_logging, _load
    from roost.config.schema import redact_url

    config = _load(args)
    _cli_logging(args)
    target: Path = args.file
    data_dir = config.server.data_dir
    flushed = _flush_running_server(config)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "domains": list(config.server.domains),
        "storage": redact_url(config.storage_url),
        "database": None,
        "files": [],
    }
    db = _sqlite_file(config)
    postgres = _is_postgres(config)
    if db is not None and not db.exists():
        raise OperationFailed(f"no database at {db}: nothing to back up")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="roost-backup-") as tmp:
        snapshot = Path(tmp) / DB_MEMBER
        if db is not None:
            _sqlite_snapshot(db, snapshot)
            manifest["database"] = DB_MEMBER
        # Owner-only from the start: the archive holds password hashes and private keys.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            if db is not None:
                tar.add(snapshot, arcname=DB_MEMBER)
            for name in DATA_FILES:
                path = data_dir / name
                if path.exists():
                    tar.add(path, arcname=f"data/{name}")
                    manifest["files"].append(f"data/{name}")
            for what, configured in (("cert", config.tls.cert), ("key", config.tls.key)):
                if configured is not None and configured.exists():
                    tar.add(configured, arcname=f"tls-configured/{what}.pem")
                    manifest["files"].append(f"tls-configured/{what}.pem")
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    files = ", ".join(manifest["files"]) or "no files"
    print(f"backup written to {target} ({redact_url(config.storage_url)}; {files})")
    if flushed:
        print("the running server flushed its queued writes first")
    if postgres:
        print(
            "the database is PostgreSQL: this archive holds the files only. Back up the database with\n"
            "  pg_dump --format=custom --file=roost.pgdump 'DATABASE_URL'\n"
            "and restore it with pg_restore --clean --dbname='DATABASE_URL' roost.pgdump",
            file=sys.stderr,
        )
        return EXIT_OK
    return EXIT_OK if db is not None else EXIT_FAILED


def _sqlite_snapshot(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy while other connections keep writing."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=1024)
            ok = dst.execute("PRAGMA integrity_check").fetchone()
            if not ok or ok[0] != "ok":
                raise sqlite3.DatabaseError(f"the snapshot failed its integrity check: {ok}")
        finally:
            dst.close()
    finally:
        src.close()


def cmd_restore(args: argparse.Namespace) -> int:
    from roost.cli.errors import OperationFailed, UsageError
    from roost.cli.main import EXIT_OK, _cli_logging, _load

    config = _load(args)
    _cli_logging(args)
    source: Path = args.file
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    if _server_running(config):
        raise OperationFailed(
            f"a Roost server is running on {config.server.data_dir}: stop it before restoring "
            "(systemctl stop roost)"
        )
    data_dir = config.server.data_dir
    db = _sqlite_file(config)
    try:
        tar = tarfile.open(source, mode="r:gz")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as e:
        raise UsageError(f"{source} is not a roost backup archive ({e})") from None
    with tar:
        try:
            manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        except (KeyError, AttributeError, ValueError):
            raise UsageError(f"{source} has no manifest: not an archive made by 'roost backup'") from None
        if manifest.get("format") != FORMAT:
            raise UsageError(
                f"{source} has backup format {manifest.get('format')!r}; this Roost reads {FORMAT}"
            )
        if manifest.get("database"):
            if db is None:
                raise OperationFailed(
                    "the backup holds a SQLite database but this configuration's storage is not SQLite; "
                    "restore it with a SQLite storage.url first (a PostgreSQL import is a migration)"
                )
            if db.exists() and not args.force:
                raise OperationFailed(f"a database already exists at {db}; pass --force to replace it")
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        restored: list[str] = []
        for member in tar.getmembers():
            name = member.name
            if name == MANIFEST:
                continue
            if name.startswith("/") or ".." in Path(name).parts or not (member.isfile() or member.isdir()):
                raise UsageError(f"{source}: unexpected member {name!r}; refusing to restore")
            if name == DB_MEMBER and db is not None:
                _restore_file(tar, member, db, 0o600)
                for suffix in ("-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                restored.append(str(db))
            elif name.startswith("data/") and member.isfile():
                relative = name.removeprefix("data/")
                if relative.split("/", 1)[0] not in DATA_FILES:
                    raise UsageError(f"{source}: unexpected member {name!r}; refusing to restore")
                mode = 0o600 if relative in SECRET_FILES or relative.startswith("tls/") else 0o644
                _restore_file(tar, member, data_dir / relative, mode)
                restored.append(str(data_dir / relative))
            elif name.startswith("tls-configured/") and member.isfile():
                what = Path(name).stem
                path = config.tls.cert if what == "cert" else config.tls.key
                if path is not None and not path.exists():
                    _restore_file(tar, member, path, 0o600 if what == "key" else 0o644)
                    restored.append(str(path))
    print(f"restored {len(restored)} files from {source} (backup of {manifest.get('created')}):")
    for line in restored:
        print(f"  {line}")
    if _is_postgres(config):
        print(
            "PostgreSQL: restore the database separately with pg_restore (see docs/backup.md)",
            file=sys.stderr,
        )
    return EXIT_OK


def _restore_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, mode: int) -> None:
    """Write one member to ``target`` atomically, with ``mode`` from the start."""
    source = tar.extractfile(member)
    assert source is not None
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.restoring")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
    os.chmod(tmp, mode)
    os.replace(tmp, target)
