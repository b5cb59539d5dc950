"""``roost reload|status|sessions|kick|announce|motd|room …``: a running server's administration.

They reach the server through its control socket (:mod:`roost.core.control`).

The commands themselves live in :mod:`roost.admin.commands` (the same ones admins reach as XEP-0133
ad-hoc commands); this file only maps arguments to their fields and prints what they return.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from roost.config import Config

Handler = Callable[[argparse.Namespace], int]


class NoServer(Exception):
    """No server answers on the data directory's control socket."""


def ask(config: Config, message: dict[str, Any]) -> dict[str, Any]:
    """One request to the running server; NoServer when none runs, OSError when it failed to answer."""
    from roost.core import control

    path = control.socket_path(config.server.data_dir)
    reply = asyncio.run(control.request(path, message))
    if reply is None:
        raise NoServer(
            f"no Roost server is running on {config.server.data_dir} (nothing answers on {path}); "
            "start it, or point --config at the running server's configuration"
        )
    return reply


def tell(config: Config, text: str) -> None:
    """Tell a running server what the CLI changed (its log shows it); silent when none runs."""
    from roost.core import control

    try:
        asyncio.run(
            control.request(control.socket_path(config.server.data_dir), {"op": "note", "text": text})
        )
    except (OSError, ValueError):
        pass


def print_result(reply: dict[str, Any]) -> None:
    if reply.get("note"):
        print(reply["note"])
    for f in reply.get("fields", []):
        values = f.get("values", [])
        if not values:
            print(f"{f.get('label', f.get('var'))}: -")
        elif len(values) == 1 and "\n" not in values[0]:
            print(f"{f.get('label', f.get('var'))}: {values[0]}")
        else:
            print(f"{f.get('label', f.get('var'))}:")
            for value in values:
                print(f"  {value}")


def command_request(name: str, values: dict[str, list[str]], domain: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"op": "command", "name": name, "values": values}
    if domain is not None:
        message["domain"] = domain
    return message


def add_commands(
    commands: Any,
    common: argparse.ArgumentParser,
    formatter: type[argparse.HelpFormatter],
    run_command: Callable[[argparse.Namespace, str, dict[str, list[str]]], int],
    reload_handler: Handler,
) -> None:
    """Add the administration subcommands to the ``roost`` parser."""

    def parser(name: str, help_: str, description: str, epilog: str) -> argparse.ArgumentParser:
        return commands.add_parser(  # type: ignore[no-any-return]
            name,
            help=help_,
            description=description,
            epilog="examples:\n" + epilog,
            formatter_class=formatter,
            parents=[common],
        )

    def domain_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--domain", metavar="DOMAIN", help="only this domain (default: every domain)")

    reload = parser(
        "reload",
        "re-read the configuration, certificates and log file of the running server",
        "Ask the running server to apply its configuration file again, like SIGHUP: certificates, log "
        "file (after logrotate), domains, modules and their options change without dropping sessions. "
        "The file is checked first; a bad one changes nothing. What cannot change live (listener "
        "addresses, data_dir, the database) is listed. Exit code 1 if the reload was refused.",
        "  roost reload -c /etc/roost/roost.toml\n  systemctl reload roost    (sends SIGHUP)\n",
    )
    reload.set_defaults(handler=reload_handler)

    status = parser(
        "status",
        "uptime, version, sessions, rooms and memory of the running server",
        "Show what the running server is doing.",
        "  roost status\n",
    )
    domain_option(status)
    status.set_defaults(handler=lambda a: run_command(a, "status", {}))

    sessions = parser(
        "sessions",
        "list connected sessions (resource, transport, IP, since, client)",
        "List the sessions of every user, or of one.",
        "  roost sessions\n  roost sessions alice@example.org\n",
    )
    sessions.add_argument("jid", metavar="JID", nargs="?", help="only this user's sessions")
    domain_option(sessions)
    sessions.set_defaults(
        handler=lambda a: run_command(a, "sessions", {"accountjid": [a.jid]} if a.jid else {})
    )

    kick = parser(
        "kick",
        "end a session (full JID) or all of a user's sessions (bare JID)",
        "End sessions with a <policy-violation/> stream error carrying the reason. The user may log in "
        "again (lock the account to prevent that: roost user lock).",
        "  roost kick alice@example.org/phone\n  roost kick alice@example.org --reason 'maintenance'\n",
    )
    kick.add_argument("jids", metavar="JID", nargs="+")
    kick.add_argument("--reason", default="", help="text shown to the user")
    kick.set_defaults(
        handler=lambda a: run_command(
            a, "kick", {"accountjids": a.jids, "reason": [a.reason] if a.reason else []}
        )
    )

    announce = parser(
        "announce",
        "send a message to every online user",
        "Send a message from the server domain to every online session (XEP-0133 announce).",
        "  roost announce 'Restarting at 22:00 UTC for an upgrade'\n",
    )
    announce.add_argument("text", metavar="TEXT")
    domain_option(announce)
    announce.set_defaults(handler=lambda a: run_command(a, "announce", {"announcement": [a.text]}))

    motd = parser(
        "motd",
        "show, set or delete the message of the day",
        "The message of the day is sent to each user when they log in (and to those online when it is set).",
        "  roost motd\n  roost motd set 'Welcome!'\n  roost motd delete\n",
    )
    motd.add_argument("action", nargs="?", choices=["show", "set", "delete"], default="show")
    motd.add_argument("text", metavar="TEXT", nargs="?")
    domain_option(motd)

    def motd_handler(a: argparse.Namespace) -> int:
        if a.action == "set":
            if not a.text:
                from roost.cli.errors import UsageError

                raise UsageError("roost motd set needs the TEXT")
            return run_command(a, "set-motd", {"motd": [a.text]})
        return run_command(a, "delete-motd" if a.action == "delete" else "get-motd", {})

    motd.set_defaults(handler=motd_handler)

    room = parser(
        "room",
        "list or destroy chat rooms",
        "List the rooms of the MUC service, or destroy one (its occupants are told the reason).",
        "  roost room list\n  roost room destroy lobby@conference.example.org --reason 'spam'\n",
    )
    room.add_argument("action", choices=["list", "destroy"])
    room.add_argument("jid", metavar="ROOM", nargs="?")
    room.add_argument("--reason", default="")

    def room_handler(a: argparse.Namespace) -> int:
        if a.action == "destroy":
            if not a.jid:
                from roost.cli.errors import UsageError

                raise UsageError("roost room destroy needs the ROOM's JID")
            values = {"roomjid": [a.jid], "reason": [a.reason] if a.reason else []}
            return run_command(a, "destroy-room", values)
        return run_command(a, "rooms", {})

    room.set_defaults(handler=room_handler)
