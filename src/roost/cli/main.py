"""The ``roost`` command: run the server, manage users, check a configuration.

Exit codes: 0 success, 1 the operation failed (user exists, check found problems …), 2 usage or
configuration error. Passwords are never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from roost.cli.errors import OperationFailed, UsageError
from roost.config import Config, ConfigError, load_config
from roost.config.schema import redact_url
from roost.jid import JID, JIDError, prepare_domain
from roost.storage.api import StorageError
from roost.util.logging import LEVELS, setup_logging

if TYPE_CHECKING:
    from roost.storage.api import StoredCredentialsLike
    from roost.storage.manager import StorageManager

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

PROG = "roost"
IMPORT_PROGRESS_EVERY = 1000

log = logging.getLogger("roost.cli")


# --- argument parsing --------------------------------------------------------------------------

_HELP_FORMATTER = argparse.RawDescriptionHelpFormatter


def _common_options(*, top_level: bool) -> argparse.ArgumentParser:
    """--config/--log-level/--set, accepted before or after the subcommand.

    The copies on subcommands default to SUPPRESS so that, when absent there, they do not overwrite
    what was given before the subcommand.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options (before or after the command)")
    default: Any = None if top_level else argparse.SUPPRESS
    group.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        default=default,
        help="configuration file (default: $ROOST_CONFIG, else built-in defaults)",
    )
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=list(LEVELS),
        default=default,
        help="override [log] level",
    )
    group.add_argument(
        "--set",
        dest="overrides_top" if top_level else "overrides_sub",
        action="append",
        metavar="KEY=VALUE",
        default=[] if top_level else argparse.SUPPRESS,
        help="override one setting, e.g. --set c2s.max_stanza_bytes=524288 (repeatable)",
    )
    return parent


_MAIN_DESCRIPTION = """\
Roost is an XMPP server. Run it, manage its users and check its configuration.

Without --config, Roost reads the file named by $ROOST_CONFIG, or runs on built-in defaults
(domain 'localhost', data in ./roost-data, a generated self-signed certificate).
"""

_MAIN_EPILOG = """\
examples:
  roost run                                  start on built-in defaults (domain localhost)
  roost --config /etc/roost/roost.toml run   start with a configuration file
  roost check -c roost.toml                  validate the configuration before starting
  roost user add alice@example.org           create a user (asks for the password)
  roost user list                            list every user

'roost COMMAND --help' explains each command. Exit codes: 0 ok, 1 failed, 2 usage or config error.
"""

_RUN_DESCRIPTION = """\
Start the server in the foreground. It stops cleanly on SIGTERM or Ctrl-C (SIGINT): listeners close,
clients get <system-shutdown/>, queued writes are flushed.
"""
_RUN_EPILOG = """\
examples:
  roost run                                     built-in defaults: localhost, ./roost-data
  roost run --config /etc/roost/roost.toml
  ROOST_CONFIG=/etc/roost/roost.toml roost run
  roost run -c roost.toml --log-level debug     stanza traces (passwords are masked)
  roost run -c roost.toml --set listen.c2s_tls=""   disable the direct-TLS listener
"""

_CHECK_DESCRIPTION = """\
Validate the configuration without starting the server: the file itself, the TLS certificate and key
(domains covered, expiry, key matches), the data directory, listen addresses and the storage URL.
Each problem is printed with how to fix it. Exit code 1 if there is any.
"""
_CHECK_EPILOG = """\
examples:
  roost check -c /etc/roost/roost.toml
  ROOST_CONFIG=roost.toml roost check
"""

_USER_DESCRIPTION = """\
Manage accounts. These commands open the database directly; with SQLite they are safe to use while
the server runs. The JID's domain must be one of [server] domains.
"""
_USER_EPILOG = """\
examples:
  roost user add alice@example.org
  roost user passwd alice@example.org --password-stdin < new-password.txt
  roost user del alice@example.org
  roost user list example.org
  roost user import users.csv
"""

_PASSWORD_HELP_EPILOG = """\
Without --password/--password-stdin the password is asked twice on a terminal, or read as one line
from standard input otherwise. Prefer --password-stdin to --password: a command-line argument is
visible to other users in the process list and stays in your shell history.
"""


def _build_parser() -> argparse.ArgumentParser:
    common_sub = _common_options(top_level=False)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=_HELP_FORMATTER,
        parents=[_common_options(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="start the server",
        description=_RUN_DESCRIPTION,
        epilog=_RUN_EPILOG,
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser(
        "check",
        help="validate the configuration, certificates and paths",
        description=_CHECK_DESCRIPTION,
        epilog=_CHECK_EPILOG,
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    check.add_argument(
        "what", nargs="?", choices=["federation"], help="'federation': check the way to another server"
    )
    check.add_argument("domain", nargs="?", help="the remote domain for 'check federation'")
    check.set_defaults(handler=_cmd_check)

    user = commands.add_parser(
        "user",
        help="add, remove, list and import users",
        description=_USER_DESCRIPTION,
        epilog=_USER_EPILOG,
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    user_commands = user.add_subparsers(title="user commands", dest="user_command", metavar="ACTION")
    user.set_defaults(handler=_usage_of(user))

    def password_options(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--password", metavar="PW", help="the password (see the note below)")
        group.add_argument(
            "--password-stdin", action="store_true", help="read the password as one line from standard input"
        )

    add = user_commands.add_parser(
        "add",
        help="create a user",
        description="Create a user with a password. Fails (exit code 1) if the user exists.",
        epilog="examples:\n"
        "  roost user add alice@example.org\n"
        "  printf '%s\\n' \"$PW\" | roost user add alice@example.org --password-stdin\n\n"
        + _PASSWORD_HELP_EPILOG,
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    add.add_argument("jid", metavar="JID", help="the new user's address, user@domain")
    password_options(add)
    add.set_defaults(handler=_cmd_user_add)

    delete = user_commands.add_parser(
        "del",
        aliases=["delete"],
        help="delete a user and all of their data",
        description="Delete a user's account and everything stored for them (roster, archive, "
        "offline messages …). This cannot be undone.",
        epilog="examples:\n  roost user del alice@example.org\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    delete.add_argument("jid", metavar="JID", help="the user to delete, user@domain")
    delete.set_defaults(handler=_cmd_user_del)

    passwd = user_commands.add_parser(
        "passwd",
        help="change a user's password",
        description="Set a new password. Sessions already logged in stay connected.",
        epilog="examples:\n"
        "  roost user passwd alice@example.org\n"
        "  roost user passwd alice@example.org --password-stdin < pw.txt\n\n" + _PASSWORD_HELP_EPILOG,
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    passwd.add_argument("jid", metavar="JID", help="the user, user@domain")
    password_options(passwd)
    passwd.set_defaults(handler=_cmd_user_passwd)

    listing = user_commands.add_parser(
        "list",
        aliases=["ls"],
        help="list users",
        description="Print the users, one JID per line, sorted.",
        epilog="examples:\n  roost user list\n  roost user list example.org | wc -l\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    listing.add_argument("domain", metavar="DOMAIN", nargs="?", help="only users of this domain")
    listing.set_defaults(handler=_cmd_user_list)

    importing = user_commands.add_parser(
        "import",
        help="create many users from a CSV file",
        description="Create users from a CSV file with one 'jid,password' per line. A header line "
        "'jid,password' is optional; blank lines and lines starting with '#' are ignored. Quote a "
        'password that contains a comma or a double quote ("pa,ss"); it is otherwise taken exactly '
        "as written after the comma. Existing users are skipped, not changed. Progress goes to standard "
        "error; exit code 1 if any line failed.",
        epilog="examples:\n"
        "  roost user import users.csv\n"
        "  generate-users | roost user import -\n\n"
        "users.csv:\n"
        "  # migrated from the old server\n"
        "  jid,password\n"
        "  alice@example.org,correct horse battery staple\n"
        '  bob@example.org,"with,comma"\n',
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    importing.add_argument("file", metavar="FILE", help="the CSV file, or - for standard input")
    importing.set_defaults(handler=_cmd_user_import)

    lock = user_commands.add_parser(
        "lock",
        help="lock an account: it cannot log in, and is told why",
        description="Lock an account (XEP-0133 disable user): its sessions end and it cannot log in "
        "until unlocked; its data is kept. Works with or without a running server.",
        epilog="examples:\n  roost user lock mallory@example.org --reason 'spam'\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    lock.add_argument("jid", metavar="JID")
    lock.add_argument("--reason", default="", help="shown to the user when they try to log in")
    lock.set_defaults(handler=_cmd_user_lock)
    unlock = user_commands.add_parser(
        "unlock",
        help="unlock a locked account",
        description="Let a locked account log in again.",
        epilog="examples:\n  roost user unlock mallory@example.org\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    unlock.add_argument("jid", metavar="JID")
    unlock.set_defaults(handler=_cmd_user_unlock)

    user_sessions = user_commands.add_parser(
        "sessions",
        help="a user's sessions (resource, client, IP, since, stream management) and token devices",
        description="List one account's sessions on the running server, and the devices that hold FAST "
        "login tokens (XEP-0484), each with the id that revokes it.",
        epilog="examples:\n  roost user sessions alice@example.org\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    user_sessions.add_argument("jid", metavar="JID")
    user_sessions.set_defaults(
        handler=lambda a: _run_admin_command(a, "user-sessions", {"accountjid": [a.jid]})
    )
    user_kick = user_commands.add_parser(
        "kick",
        help="end one session of a user, or all of them",
        description="End a session (with RESOURCE) or all of the user's sessions on the running server, "
        "with a <policy-violation/> stream error. Add --revoke to also forget the login tokens of "
        "all the user's devices, so that they need the password again.",
        epilog="examples:\n  roost user kick alice@example.org phone\n"
        "  roost user kick alice@example.org --revoke\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    user_kick.add_argument("jid", metavar="JID")
    user_kick.add_argument("resource", metavar="RESOURCE", nargs="?")
    user_kick.add_argument("--reason", default="", help="text shown to the user")
    user_kick.add_argument("--revoke", action="store_true", help="also revoke every device's login tokens")
    user_kick.set_defaults(handler=_cmd_user_kick)
    revoke = user_commands.add_parser(
        "revoke-token",
        help="revoke a device's login tokens (see roost user sessions)",
        description="Forget the FAST login tokens of one device (or * for all): its next login needs "
        "the password. Sessions go on (end them with roost user kick).",
        epilog="examples:\n  roost user revoke-token alice@example.org 3f1c…\n",
        formatter_class=_HELP_FORMATTER,
        parents=[common_sub],
    )
    revoke.add_argument("jid", metavar="JID")
    revoke.add_argument("client", metavar="DEVICE")
    revoke.set_defaults(
        handler=lambda a: _run_admin_command(a, "revoke-token", {"accountjid": [a.jid], "client": [a.client]})
    )

    from roost.cli import admin

    admin.add_commands(commands, common_sub, _HELP_FORMATTER, _run_admin_command, _cmd_reload)
    from roost.cli import backup

    backup.add_commands(commands, common_sub, _HELP_FORMATTER)

    parser.set_defaults(handler=_usage_of(parser))
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("roost")
    except Exception:
        return "unknown"


def _usage_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def show_usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return show_usage


# --- entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``roost`` command line; return the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return _exit_code(exit_.code)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as e:
        _error(str(e))
        return EXIT_USAGE
    except ConfigError as e:
        _error(str(e))
        return EXIT_USAGE
    except OperationFailed as e:
        _error(str(e))
        return EXIT_FAILED
    except StorageError as e:
        _error(f"storage: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _error("cancelled")
        return 130
    except _admin_no_server() as e:
        _error(str(e))
        return EXIT_FAILED


def _admin_no_server() -> type[Exception]:
    from roost.cli.admin import NoServer

    return NoServer


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    return EXIT_USAGE


def _error(message: str) -> None:
    for line in message.splitlines() or [""]:
        print(f"{PROG}: {line}", file=sys.stderr)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=_overrides(args))


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in [*getattr(args, "overrides_top", []), *getattr(args, "overrides_sub", [])]:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set log.level=debug")
        overrides[key.strip()] = value
    if args.log_level is not None:
        overrides["log.level"] = args.log_level
    return overrides


def _cli_logging(args: argparse.Namespace) -> None:
    """Admin commands log to stderr only, quietly unless --log-level asks for more."""
    setup_logging(args.log_level or "warning")


# --- run -----------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    from roost.app import serve  # sets up logging from config.log

    return serve(config, _overrides(args))


# --- check: see roost.cli.check ---------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from roost.cli.check import cmd_check

    return cmd_check(args)


def _sqlite_path(url: str) -> Path | None:
    _, sep, rest = url.partition(":///")
    if not sep or not rest or rest.startswith(":memory:"):
        return None
    return Path(rest.split("?", 1)[0])


# --- users -------------------------------------------------------------------------------------


def _user_jid(text: str, config: Config) -> JID:
    """Parse a user's bare JID on one of this server's domains, or explain why not."""
    try:
        jid = JID.parse(text.strip())
    except JIDError as e:
        raise UsageError(f"{text!r} is not a valid JID: {e}") from None
    if jid.local is None:
        raise UsageError(f"{text!r} has no user part: expected user@domain")
    if jid.resource is not None:
        raise UsageError(f"{text!r} has a /resource: expected a bare JID, user@domain")
    if jid.domain not in config.server.domains:
        where = str(config.path) if config.path is not None else "the configuration"
        raise UsageError(
            f"{jid.domain!r} is not a domain of this server (server.domains: "
            f"{', '.join(config.server.domains)}); add it to [server] domains in {where}"
        )
    return jid


def _local(jid: JID) -> str:
    assert jid.local is not None  # _user_jid guarantees it
    return jid.local


def _read_password(args: argparse.Namespace, stdin: IO[str] | None = None) -> str:
    """The password from --password, --password-stdin, a double prompt, or one line of piped input."""
    stdin = stdin if stdin is not None else sys.stdin
    if args.password is not None:
        password: str = args.password
    elif args.password_stdin or not _is_tty(stdin):
        password = _strip_newline(stdin.readline())
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password (again): ")
        except EOFError:  # Ctrl-D
            print(file=sys.stderr)
            raise UsageError("no password given (end of input); nothing was changed") from None
        if password != again:
            raise UsageError("the passwords do not match")
    if not password:
        raise UsageError("the password is empty")
    return password


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _strip_newline(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


def _derive_all(password: str, config: Config) -> list[StoredCredentialsLike]:
    """SCRAM credentials for every configured hash. ValueError for a password PRECIS refuses."""
    from roost.stream.sasl.scram import derive_credentials

    iterations = config.storage.scram_iterations
    return [derive_credentials(password, name, iterations) for name in config.storage.scram_hashes]


def _derive_or_usage_error(password: str, config: Config) -> list[StoredCredentialsLike]:
    try:
        return _derive_all(password, config)
    except ValueError as e:
        raise UsageError(f"the password cannot be used: {e}") from None


async def _open_storage(config: Config) -> StorageManager:
    from roost.storage.manager import StorageManager

    try:
        return await StorageManager.open(config.storage_url, progress=_progress)
    except (StorageError, OSError) as e:
        raise OperationFailed(f"cannot open storage {redact_url(config.storage_url)}: {e}") from None


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def _database(config: Config) -> str:
    """How outputs name the database a command acted on (password masked)."""
    return f"database {redact_url(config.storage_url)}"


def _user_config(args: argparse.Namespace) -> Config:
    """The configuration for a user command, refusing to create a database in an unexpected place.

    Without a configuration file, the built-in defaults put the database in ./roost-data: run from
    another directory, that would silently be a new, empty database beside the real one.
    """
    config = _load(args)
    _cli_logging(args)
    if config.path is None and config.storage_url.startswith("sqlite"):
        path = _sqlite_path(config.storage_url)
        if path is not None and not path.exists():
            running = _running_default_server()
            if running is not None:
                print(f"using the data of the Roost server running on {running}", file=sys.stderr)
                override = f"server.data_dir={json.dumps(str(running))}"
                args.overrides_top = [*getattr(args, "overrides_top", []), override]
                return _load(args)
            raise OperationFailed(
                f"no configuration file given and no database at {path} (the built-in default, "
                "relative to the current directory); nothing was created.\n"
                "Run this command in the directory where 'roost run' runs, or give the server's "
                "configuration with --config FILE or ROOST_CONFIG=FILE."
            )
    return config


def _running_default_server() -> Path | None:
    """The data_dir of a server running on built-in defaults, found through its control socket link."""
    from roost.core import control

    pointer = control.default_pointer()
    try:
        target = Path(os.readlink(pointer))
    except OSError:
        return None
    try:
        reply = asyncio.run(control.request(target, {"op": "ping"}, timeout=5))
    except (OSError, ValueError):
        return None
    if reply is None or reply.get("config") is not None or not isinstance(reply.get("data_dir"), str):
        return None
    return Path(reply["data_dir"])


def _cmd_user_add(args: argparse.Namespace) -> int:
    jid, config = _store_password(args, new_account=True)
    print(f"created {jid} ({_database(config)})")
    return EXIT_OK


def _cmd_user_passwd(args: argparse.Namespace) -> int:
    jid, config = _store_password(args, new_account=False)
    print(f"password changed for {jid} ({_database(config)})")
    return EXIT_OK


def _store_password(args: argparse.Namespace, *, new_account: bool) -> tuple[JID, Config]:
    """Read a password and store credentials for ``args.jid``: a new account, or an existing one's.

    Whether the account exists is checked before the password is asked for; one created or deleted
    in between (another process) gets the same answer. The prompt runs outside the event loop, so
    Ctrl-C and Ctrl-D end it at once, with a message and no traceback.
    """
    from roost.cli.admin import tell
    from roost.storage.api import AccountExists, NoSuchAccount

    config = _user_config(args)
    jid = _user_jid(args.jid, config)
    local = _local(jid)
    if new_account:
        refused = OperationFailed(f"user {jid} already exists (change it with 'roost user passwd {jid}')")
        lost_race: type[Exception] = AccountExists
    else:
        refused = OperationFailed(f"no such user: {jid}")
        lost_race = NoSuchAccount

    async def exists() -> bool:
        storage = await _open_storage(config)
        try:
            return await storage.accounts.exists(jid.domain, local)
        finally:
            await storage.close()

    if asyncio.run(exists()) == new_account:
        raise refused
    password = _read_password(args)
    credentials = _derive_or_usage_error(password, config)

    async def store() -> bool:
        """Through the running server's account service if there is one (its modules hear of the
        new account); else in storage directly. True if a running server did it."""
        from roost.core import control

        op = "create-account" if new_account else "set-credentials"
        keys = [
            {
                "hash_name": c.hash_name,
                "salt": c.salt.hex(),
                "iterations": c.iterations,
                "stored_key": c.stored_key.hex(),
                "server_key": c.server_key.hex(),
            }
            for c in credentials
        ]
        message = {"op": op, "domain": jid.domain, "username": local, "credentials": keys}
        try:
            reply = await control.request(control.socket_path(config.server.data_dir), message)
        except OSError as e:
            raise OperationFailed(f"the running server did not complete the change: {e}") from None
        if reply is not None:
            if reply.get("ok"):
                return True
            if reply.get("exists") or reply.get("missing"):
                raise refused
            raise OperationFailed(f"the running server refused: {reply.get('error', 'no reason given')}")
        storage = await _open_storage(config)
        try:
            if new_account:
                await storage.accounts.create(jid.domain, local, credentials)
            else:
                await storage.accounts.set_credentials(jid.domain, local, credentials)
        except lost_race:
            raise refused from None
        finally:
            await storage.close()
        return False

    if not asyncio.run(store()):
        tell(config, f"user {jid} {'created' if new_account else 'password changed'}")
    return jid, config


def _cmd_user_del(args: argparse.Namespace) -> int:
    from roost.core import control

    config = _user_config(args)
    jid = _user_jid(args.jid, config)
    local = _local(jid)

    async def delete() -> str:
        # A running server removes the account itself: it ends the user's sessions and forgets its
        # caches. Without one, storage is changed directly.
        try:
            reply = await control.request(
                control.socket_path(config.server.data_dir),
                {"op": "remove-account", "domain": jid.domain, "username": local},
            )
        except OSError as e:
            raise OperationFailed(f"the running server did not complete the removal: {e}") from None
        if reply is not None:
            if not reply.get("ok"):
                raise OperationFailed(f"the running server refused: {reply.get('error', 'no reason given')}")
            if not reply.get("removed"):
                raise OperationFailed(f"no such user: {jid}")
            return " (the running server ended their sessions)"
        storage = await _open_storage(config)
        try:
            if not await storage.accounts.exists(jid.domain, local):
                raise OperationFailed(f"no such user: {jid}")
            await storage.delete_user(jid.domain, local)
        finally:
            await storage.close()
        return ""

    how = asyncio.run(delete())
    print(f"deleted {jid} and all of their data{how} ({_database(config)})")
    return EXIT_OK


def _cmd_user_list(args: argparse.Namespace) -> int:
    config = _user_config(args)
    domain: str | None = None
    if args.domain is not None:
        try:
            domain = prepare_domain(args.domain.strip())
        except JIDError as e:
            raise UsageError(f"{args.domain!r} is not a valid domain: {e}") from None
        if domain not in config.server.domains:
            where = str(config.path) if config.path is not None else "the configuration"
            raise UsageError(
                f"{domain!r} is not a domain of this server (server.domains: "
                f"{', '.join(config.server.domains)}); add it to [server] domains in {where}"
            )

    async def listing() -> list[tuple[str, str]]:
        storage = await _open_storage(config)
        try:
            return await storage.accounts.list(domain)
        finally:
            await storage.close()

    found = asyncio.run(listing())
    for user_domain, username in found:
        print(f"{username}@{user_domain}")
    print(f"{len(found)} user{'s' if len(found) != 1 else ''} in {_database(config)}", file=sys.stderr)
    return EXIT_OK


def _cmd_user_lock(args: argparse.Namespace) -> int:
    return _lock_or_unlock(args, lock=True)


def _cmd_user_unlock(args: argparse.Namespace) -> int:
    return _lock_or_unlock(args, lock=False)


def _lock_or_unlock(args: argparse.Namespace, *, lock: bool) -> int:
    """Through the running server (it also ends the sessions), else directly in storage."""
    from roost.admin import locks
    from roost.cli.admin import NoServer, ask, command_request

    config = _user_config(args)
    jid = _user_jid(args.jid, config)
    values = {"accountjids": [str(jid)]}
    if lock and args.reason:
        values["reason"] = [args.reason]
    try:
        reply = ask(config, command_request("lock" if lock else "unlock", values))
    except NoServer:
        reply = None
    except OSError as e:
        raise OperationFailed(f"the running server did not answer: {e}") from None
    if reply is not None:
        if not reply.get("ok"):
            raise OperationFailed(str(reply.get("error", "the running server refused")))
        print(f"{reply.get('note', '')} (through the running server; {_database(config)})")
        return EXIT_OK

    async def offline() -> str:
        storage = await _open_storage(config)
        try:
            if not await storage.accounts.exists(jid.domain, _local(jid)):
                raise OperationFailed(f"no such user: {jid}")
            if lock:
                await locks.lock(storage, jid.domain, _local(jid), args.reason, "the roost CLI")
                return f"locked {jid}"
            done = await locks.unlock(storage, jid.domain, _local(jid))
            return f"unlocked {jid}" if done else f"{jid} was not locked"
        finally:
            await storage.close()

    print(f"{asyncio.run(offline())} ({_database(config)})")
    return EXIT_OK


# --- administration through the control socket ----------------------------------------------------


def _cmd_user_kick(args: argparse.Namespace) -> int:
    target = f"{args.jid}/{args.resource}" if args.resource else args.jid
    code = _run_admin_command(
        args, "kick", {"accountjids": [target], "reason": [args.reason] if args.reason else []}
    )
    if args.revoke:
        code = _run_admin_command(args, "revoke-token", {"accountjid": [args.jid], "client": ["*"]})
    return code


def _run_admin_command(args: argparse.Namespace, name: str, values: dict[str, list[str]]) -> int:
    from roost.cli.admin import ask, command_request, print_result

    config = _load(args)
    _cli_logging(args)
    try:
        reply = ask(config, command_request(name, values, getattr(args, "domain", None)))
    except OSError as e:
        raise OperationFailed(f"the running server did not answer: {e}") from None
    if not reply.get("ok"):
        raise OperationFailed(str(reply.get("error", "the running server refused")))
    print_result(reply)
    return EXIT_OK


def _cmd_reload(args: argparse.Namespace) -> int:
    from roost.cli.admin import ask

    try:
        config = _load(args)
    except ConfigError as e:
        for problem in e.problems:
            print(f"problem: {problem}")
        print("reload not requested: the running server would refuse this configuration")
        return EXIT_FAILED
    _cli_logging(args)
    try:
        reply = ask(config, {"op": "reload"})
    except OSError as e:
        raise OperationFailed(f"the running server did not answer: {e}") from None
    from roost.core.reload import ReloadReport

    report = ReloadReport(
        ok=bool(reply.get("ok")),
        error=str(reply.get("error", "")),
        changed=list(reply.get("changed", [])),
        needs_restart=list(reply.get("needs_restart", [])),
        failed=list(reply.get("failed", [])),
    )
    for line in report.lines():
        print(line)
    return EXIT_OK if report.ok and not report.failed else EXIT_FAILED


# --- user import -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ImportRow:
    line: int
    jid: JID
    password: str


@dataclass
class _ImportResult:
    rows: int = 0  # data rows seen (not comments or the header)
    created: int = 0
    skipped: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def line(self) -> str:
        done = self.created + self.skipped + len(self.errors)
        return (
            f"{done}/{self.rows} rows: {self.created} created, {self.skipped} skipped (already exist), "
            f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}"
        )


def _parse_import(lines: Sequence[str], config: Config, result: _ImportResult) -> list[_ImportRow]:
    """Valid rows of a 'jid,password' CSV; every bad line is recorded in ``result.errors``."""
    rows: list[_ImportRow] = []
    seen: dict[JID, int] = {}
    header_possible = True
    for number, raw in enumerate(lines, start=1):
        text = _strip_newline(raw)
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as e:
            result.rows += 1
            result.errors.append((number, f"not valid CSV ({e})"))
            header_possible = False
            continue
        if header_possible:
            header_possible = False
            if [f.strip().lower() for f in fields] == ["jid", "password"]:
                continue
        result.rows += 1
        if len(fields) != 2:
            found = len(fields)
            result.errors.append(
                (number, f"expected 2 fields (jid,password), found {found}; quote a password with commas")
            )
            continue
        jid_text, password = fields
        try:
            jid = _user_jid(jid_text, config)
        except UsageError as e:
            result.errors.append((number, str(e)))
            continue
        if not password:
            result.errors.append((number, f"{jid}: empty password"))
            continue
        if jid in seen:
            result.errors.append((number, f"{jid} is already on line {seen[jid]}"))
            continue
        seen[jid] = number
        rows.append(_ImportRow(number, jid, password))
    return rows


def _read_import_file(name: str) -> list[str]:
    if name == "-":
        return sys.stdin.readlines()
    try:
        with open(name, encoding="utf-8-sig", newline="") as f:
            return f.readlines()
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{name}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise UsageError(f"{name}: cannot read ({e.strerror or e})") from None


def _cmd_user_import(args: argparse.Namespace) -> int:
    from roost.cli.admin import tell

    config = _user_config(args)
    lines = _read_import_file(args.file)
    result = _ImportResult()
    rows = _parse_import(lines, config, result)
    workers = max(1, min(32, os.cpu_count() or 1))
    # PBKDF2 dominates (a few ms per hash per user); hashlib.pbkdf2_hmac releases the GIL, so
    # threads use every core without the start-up and pickling cost of processes.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roost-import") as pool:
        asyncio.run(_import_rows(rows, config, result, pool, window=workers * 32))
    _report_import(result, final=True)
    print(f"import: {_database(config)}", file=sys.stderr)
    if result.created:
        tell(config, f"user import: {result.created} users created")
    return EXIT_FAILED if result.errors else EXIT_OK


async def _import_rows(
    rows: Sequence[_ImportRow], config: Config, result: _ImportResult, pool: Executor, window: int
) -> None:
    from roost.storage.api import AccountExists

    loop = asyncio.get_running_loop()
    storage = await _open_storage(config)
    try:
        existing: set[tuple[str, str]] = set()
        for domain in {row.jid.domain for row in rows}:
            existing.update(await storage.accounts.list(domain))
        todo = deque[_ImportRow]()
        for row in rows:
            assert row.jid.local is not None
            if (row.jid.domain, row.jid.local) in existing:
                result.skipped += 1
            else:
                todo.append(row)
        # Rows already decided (errors, existing users) count as processed for progress.
        done = result.skipped + len(result.errors)
        next_report = IMPORT_PROGRESS_EVERY
        while done >= next_report:
            next_report += IMPORT_PROGRESS_EVERY

        # Derive ahead in the pool while the event loop writes accounts in file order.
        pending: deque[tuple[_ImportRow, asyncio.Future[list[StoredCredentialsLike]]]] = deque()
        while todo or pending:
            while todo and len(pending) < window:
                row = todo.popleft()
                pending.append((row, loop.run_in_executor(pool, _derive_all, row.password, config)))
            row, future = pending.popleft()
            assert row.jid.local is not None
            try:
                credentials = await future
            except ValueError as e:
                result.errors.append((row.line, f"{row.jid}: the password cannot be used ({e})"))
            else:
                try:
                    await storage.accounts.create(row.jid.domain, row.jid.local, credentials)
                    result.created += 1
                except AccountExists:  # created meanwhile, e.g. by in-band registration
                    result.skipped += 1
            done += 1
            if done >= next_report and done < result.rows:
                _report_import(result, final=False)
                next_report += IMPORT_PROGRESS_EVERY
    finally:
        await storage.close()


def _report_import(result: _ImportResult, *, final: bool) -> None:
    if not final:
        print(f"import: {result.line()} ...", file=sys.stderr)
        return
    for line, message in sorted(result.errors):
        print(f"line {line}: {message}", file=sys.stderr)
    print(f"import finished: {result.line()}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
