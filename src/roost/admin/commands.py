"""Administration commands of a running server, declared once for both ways operators reach them.

Each :class:`Command` names its XEP-0050 node (the XEP-0133 one where XEP-0133 defines the use case,
``urn:roost:admin#…`` otherwise), its form fields, and an ``run`` coroutine taking the submitted
values. :mod:`roost.modules.adhoc` offers them as ad-hoc commands to the server's admins;
:mod:`roost.core.control` runs them for the ``roost`` CLI over the control socket. A command acts on
one domain (the one an ad-hoc command was sent to) or, from the CLI, on every served domain.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from roost.admin import locks
from roost.admin.sessions import describe, transport_name
from roost.jid import JID, JIDError
from roost.stanza.errors import StreamError
from roost.xml.element import Element
from roost.xml.ns import CLIENT

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.admin")

ADMIN = "http://jabber.org/protocol/admin"  # XEP-0133 node prefix and FORM_TYPE
ROOST = "urn:roost:admin"

MOTD_STORE = "motd"


@dataclass(frozen=True, slots=True)
class Field:
    """A form field a command asks for (XEP-0004 field types)."""

    var: str
    type: str
    label: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class ResultField:
    var: str
    label: str
    values: tuple[str, ...]
    type: str = "text-multi"


@dataclass
class Result:
    """What a command did: a note for people, fields for forms and the CLI."""

    note: str = ""
    fields: list[ResultField] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "note": self.note,
            "fields": [{"var": f.var, "label": f.label, "values": list(f.values)} for f in self.fields],
        }


Values = dict[str, list[str]]
Runner = Callable[["Server", "str | None", Values, str], Awaitable[Result]]


@dataclass(frozen=True, slots=True)
class Command:
    """One admin command: ``name`` for the CLI, ``node`` for XEP-0050."""

    name: str
    node: str
    title: str
    fields: tuple[Field, ...]
    run: Runner


class CommandError(Exception):
    """The submitted values cannot be used; the message says why (ad-hoc: bad-request)."""


def _domains(server: Server, domain: str | None) -> list[str]:
    if domain is None:
        return [d for d, h in server.hosts.items() if h.has_accounts]
    if domain not in server.hosts:
        raise CommandError(f"this server does not serve {domain}")
    return [domain]


def _jids(server: Server, domain: str | None, values: Sequence[str], *, bare: bool) -> list[JID]:
    """Account JIDs from a jid-multi field, each on a served domain (and ``domain`` if given)."""
    jids: list[JID] = []
    for text in values:
        for part in text.split():
            try:
                jid = JID.parse(part)
            except JIDError as e:
                raise CommandError(f"{part!r} is not a valid JID: {e}") from None
            if jid.local is None:
                raise CommandError(f"{part!r} is not an account (user@domain)")
            if bare and jid.resource is not None:
                raise CommandError(f"{part!r}: give the bare JID (user@domain)")
            if jid.domain not in _domains(server, domain):
                raise CommandError(f"{jid.domain} is not a domain of this server (or of this command)")
            jids.append(jid)
    if not jids:
        raise CommandError("no JID given")
    return jids


def _text(values: Values, var: str) -> str:
    return "\n".join(values.get(var, [])).strip()


def _memory_bytes() -> int:
    """Resident memory now (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rooms(server: Server) -> list[Any]:
    from roost.modules.muc.module import find_runtime

    runtime = find_runtime(server)
    return list(runtime.service) if runtime is not None else []


# -- the commands ---------------------------------------------------------------------------------


async def _status(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    from roost import __version__

    domains = _domains(server, domain)
    sessions = [s for s in server.sessions if s.jid.domain in domains]
    by_transport = Counter(transport_name(s) for s in sessions)
    uptime = int(time.time() - server.started_at)
    rooms = _rooms(server)
    fields = [
        ResultField("version", "Version", (__version__,), "text-single"),
        ResultField("uptime", "Uptime (seconds)", (str(uptime),), "text-single"),
        ResultField("domains", "Domains", tuple(domains)),
        ResultField("sessions", "Sessions", (str(len(sessions)),), "text-single"),
        ResultField(
            "sessions-by-transport",
            "Sessions by transport",
            tuple(f"{name}: {count}" for name, count in sorted(by_transport.items())),
        ),
        ResultField("users-online", "Users online", (str(len({s.jid.bare_str for s in sessions})),)),
        ResultField("rooms", "Rooms", (str(len(rooms)),), "text-single"),
        ResultField("memory", "Memory (bytes)", (str(_memory_bytes()),), "text-single"),
    ]
    return Result(fields=fields)


async def _online_num(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    domains = _domains(server, domain)
    users = {s.jid.bare_str for s in server.sessions if s.jid.domain in domains}
    return Result(fields=[ResultField("onlineusersnum", "Number of online users", (str(len(users)),))])


async def _online_list(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    domains = _domains(server, domain)
    users = sorted({s.jid.bare_str for s in server.sessions if s.jid.domain in domains})
    return Result(
        fields=[ResultField("onlineuserjids", "The list of all online users", tuple(users), "jid-multi")]
    )


async def _sessions(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    domains = _domains(server, domain)
    wanted = _jids(server, domain, values["accountjid"], bare=True) if values.get("accountjid") else []
    lines: list[str] = []
    for session in sorted(server.sessions, key=lambda s: s.jid_str):
        if session.jid.domain not in domains:
            continue
        if wanted and not any(session.jid.bare == j for j in wanted):
            continue
        d = describe(session)
        lines.append(
            f"{d['jid']} via {d['transport']} from {d['ip'] or '?'} since {d['since']}"
            + (f" client {d['client']}" if d["client"] else "")
        )
    return Result(note=f"{len(lines)} sessions", fields=[ResultField("sessions", "Sessions", tuple(lines))])


async def _kick(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    jids = _jids(server, domain, values.get("accountjids", []), bare=False)
    reason = _text(values, "reason") or "ended by the server's administrators"
    ended = 0
    for jid in jids:
        if jid.resource is not None:
            session = server.sessions.get(jid)
            targets = [session] if session is not None else []
        else:
            targets = server.sessions.resources(jid.domain, jid.local or "")
        for session in targets:
            log.info("kicking %s (by %s): %s", session.jid_str, actor, reason)
            session.close(StreamError("policy-violation", reason), reason="kicked")
            ended += 1
    return Result(note=f"{ended} session{'s' if ended != 1 else ''} ended")


def _message(frm: str, to: str, body: str, subject: str = "") -> Element:
    msg = Element("message", CLIENT, {"from": frm, "to": to, "type": "normal"})
    if subject:
        msg.add("subject", text=subject)
    msg.add("body", text=body)
    return msg


async def _announce(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    body = _text(values, "announcement")
    if not body:
        raise CommandError("the announcement is empty")
    sent = 0
    for session in list(server.sessions):
        if session.jid.domain in _domains(server, domain):
            server.router.send(_message(session.jid.domain, session.jid_str, body, "Announcement"))
            sent += 1
    log.info("announcement by %s sent to %d sessions", actor, sent)
    return Result(note=f"sent to {sent} session{'s' if sent != 1 else ''}")


#: Messages of the day by server and domain, read once (every login asks).
_motd_cache: weakref.WeakKeyDictionary[Server, dict[str, str | None]] = weakref.WeakKeyDictionary()


async def motd(server: Server, domain: str) -> str | None:
    """The message of the day of ``domain`` (None: there is none)."""
    cache = _motd_cache.setdefault(server, {})
    if domain in cache:
        return cache[domain]
    row = await server.storage.keyvalue(MOTD_STORE).get(domain, "")
    text = row.get("text") if isinstance(row, dict) else None
    found = text if isinstance(text, str) and text else None
    cache[domain] = found
    return found


async def _store_motd(server: Server, domain: str, text: str | None, actor: str) -> None:
    store = server.storage.keyvalue(MOTD_STORE)
    if text is None:
        await store.set(domain, "", None)
    else:
        await store.set(domain, "", {"text": text, "by": actor, "at": time.time()})
    _motd_cache.setdefault(server, {})[domain] = text


def motd_message(domain: str, to: str, text: str) -> Element:
    return _message(domain, to, text, "Message of the day")


async def _set_motd(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    text = _text(values, "motd")
    if not text:
        raise CommandError("the message of the day is empty (delete it instead)")
    for d in _domains(server, domain):
        await _store_motd(server, d, text, actor)
    # XEP-0133 §4.23: users who are online now get it too.
    sent = 0
    for session in list(server.sessions):
        if session.jid.domain in _domains(server, domain):
            server.router.send(motd_message(session.jid.domain, session.jid_str, text))
            sent += 1
    log.info("message of the day set by %s", actor)
    return Result(note=f"message of the day set; sent to {sent} online sessions")


async def _delete_motd(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    for d in _domains(server, domain):
        await _store_motd(server, d, None, actor)
    log.info("message of the day deleted by %s", actor)
    return Result(note="message of the day deleted")


async def _get_motd(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    lines = []
    for d in _domains(server, domain):
        text = await motd(server, d)
        lines.append(f"{d}: {text if text is not None else '(none)'}")
    return Result(fields=[ResultField("motd", "Message of the day", tuple(lines))])


async def _lock(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    jids = _jids(server, domain, values.get("accountjids", []), bare=True)
    reason = _text(values, "reason") or locks.DEFAULT_REASON
    done: list[str] = []
    for jid in jids:
        username = jid.local or ""
        if not await server.storage.accounts.exists(jid.domain, username):
            raise CommandError(f"no such user: {jid}")
        await locks.lock(server.storage, jid.domain, username, reason, actor)
        for session in server.sessions.resources(jid.domain, username):
            session.close(StreamError("not-authorized", f"account locked: {reason}"), reason="locked")
        log.info("account %s locked by %s: %s", jid, actor, reason)
        done.append(str(jid))
    return Result(note=f"locked {', '.join(done)}")


async def _unlock(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    jids = _jids(server, domain, values.get("accountjids", []), bare=True)
    done: list[str] = []
    for jid in jids:
        if await locks.unlock(server.storage, jid.domain, jid.local or ""):
            log.info("account %s unlocked by %s", jid, actor)
            done.append(str(jid))
    return Result(note=f"unlocked {', '.join(done)}" if done else "none of them was locked")


async def _room_list(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    lines = [
        f"{room.jid_str} ({len(room.occupants)} occupants{', persistent' if room.config.persistent else ''})"
        for room in sorted(_rooms(server), key=lambda r: r.jid_str)
    ]
    return Result(note=f"{len(lines)} rooms", fields=[ResultField("rooms", "Rooms", tuple(lines))])


async def _room_destroy(server: Server, domain: str | None, values: Values, actor: str) -> Result:
    from roost.modules.muc.module import find_runtime

    runtime = find_runtime(server)
    text = _text(values, "roomjid")
    try:
        jid = JID.parse(text)
    except JIDError:
        raise CommandError(f"{text!r} is not a room JID") from None
    room = runtime.service.get(jid.local) if runtime is not None and jid.domain == runtime.domain else None
    if room is None or runtime is None:
        raise CommandError(f"no such room: {text}")
    reason = _text(values, "reason") or "destroyed by the server's administrators"
    # XEP-0045 §10.9: occupants get an unavailable presence with <destroy/> and the reason.
    runtime.emit(room, room.destroy(reason, None, None))
    log.info("room %s destroyed by %s: %s", room.jid_str, actor, reason)
    return Result(note=f"destroyed {jid}")


_JIDS = Field("accountjids", "jid-multi", "The Jabber ID(s)", required=True)
_REASON = Field("reason", "text-single", "Reason (shown to the user)")

COMMANDS: tuple[Command, ...] = (
    Command("status", f"{ROOST}#status", "Server status", (), _status),
    Command(
        "online-users-num", f"{ADMIN}#get-online-users-num", "Get number of online users", (), _online_num
    ),
    Command("online-users", f"{ADMIN}#get-online-users-list", "Get list of online users", (), _online_list),
    Command(
        "sessions",
        f"{ROOST}#sessions",
        "List sessions",
        (Field("accountjid", "jid-single", "Only this user (optional)"),),
        _sessions,
    ),
    Command("kick", f"{ADMIN}#end-user-session", "End user session", (_JIDS, _REASON), _kick),
    Command(
        "announce",
        f"{ADMIN}#announce",
        "Send announcement to online users",
        (Field("announcement", "text-multi", "Announcement", required=True),),
        _announce,
    ),
    Command(
        "set-motd",
        f"{ADMIN}#set-motd",
        "Set message of the day",
        (Field("motd", "text-multi", "Message of the day", required=True),),
        _set_motd,
    ),
    Command(
        "edit-motd",
        f"{ADMIN}#edit-motd",
        "Edit message of the day",
        (Field("motd", "text-multi", "Message of the day", required=True),),
        _set_motd,
    ),
    Command("delete-motd", f"{ADMIN}#delete-motd", "Delete message of the day", (), _delete_motd),
    Command("get-motd", f"{ROOST}#get-motd", "Show message of the day", (), _get_motd),
    Command("lock", f"{ADMIN}#disable-user", "Disable (lock) a user", (_JIDS, _REASON), _lock),
    Command("unlock", f"{ADMIN}#reenable-user", "Re-enable (unlock) a user", (_JIDS,), _unlock),
    Command("rooms", f"{ROOST}#rooms", "List rooms", (), _room_list),
    Command(
        "destroy-room",
        f"{ROOST}#destroy-room",
        "Destroy a room",
        (Field("roomjid", "jid-single", "The room", required=True), _REASON),
        _room_destroy,
    ),
)

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}
BY_NODE: dict[str, Command] = {c.node: c for c in COMMANDS}


async def run(server: Server, name: str, domain: str | None, values: Values, actor: str) -> Result:
    """Run command ``name``; CommandError for unusable values, KeyError for an unknown name."""
    return await run_command(BY_NAME[name], server, domain, values, actor)


async def run_command(
    command: Command, server: Server, domain: str | None, values: Values, actor: str
) -> Result:
    """Check the required fields, then run ``command``; CommandError for unusable values."""
    for f in command.fields:
        if f.required and not any(v.strip() for v in values.get(f.var, [])):
            raise CommandError(f"{f.label} is required ({f.var})")
    return await command.run(server, domain, values, actor)
