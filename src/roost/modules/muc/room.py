"""The MUC room engine (XEP-0045): one room's state and every rule that changes it. Pure.

Input: stanzas addressed to the room or to one of its occupants, owner/admin commands, and the time.
Output: an :class:`Outcome` listing the stanzas to send (in order; one :class:`Broadcast` stands for
the same stanza sent to many occupants, so the caller can serialize it once) and what changed
(persist the room, the room is gone, sessions that joined or left). Requests that are refused raise
:class:`StanzaError`, except presence, whose errors the engine builds itself (they carry a
``<x xmlns='http://jabber.org/protocol/muc'/>`` and come from the occupant JID, §7.2.6).

The engine imports no asyncio, socket, ssl or storage: the module (``module.py``) feeds it and
carries out what it returns.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final

from roost.jid import JID, JIDError, prepare_resource
from roost.modules.muc import forms
from roost.modules.muc.model import (
    FULLTEXT,
    HINTS,
    MAM,
    MAM_EXTENDED,
    MODERATE,
    MUC,
    MUC_ADMIN,
    MUC_OWNER,
    MUC_REQUEST,
    MUC_SELF_PING,
    MUC_STABLE_ID,
    MUC_TRAFFIC,
    MUC_USER,
    OCCUPANT_ID,
    REGISTER,
    RETRACT,
    ROOMUSER_NODE,
    VCARD,
    Affiliation,
    Role,
    RoomConfig,
    ServicePolicy,
    nick_key,
)
from roost.stanza import error_condition
from roost.stanza.errors import StanzaError
from roost.util.datetime import format_datetime, parse_datetime
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DATA_FORMS, DELAY, DISCO_INFO, DISCO_ITEMS, PING, STANZA_ID
from roost.xml.serializer import serialize

#: Errors that mean "this occupant's session is gone" (§18.1 Ghost Users).
DELIVERY_ERRORS: Final = frozenset(
    (
        "gone",
        "item-not-found",
        "recipient-unavailable",
        "redirect",
        "remote-server-not-found",
        "remote-server-timeout",
    )
)

_ROOM_FEATURES: Final = (
    MUC,
    MUC_STABLE_ID,
    MUC_SELF_PING,
    OCCUPANT_ID,
    MODERATE,
    STANZA_ID,
    REGISTER,
    MUC_REQUEST,
    DISCO_INFO,
    DISCO_ITEMS,
    PING,
)


class IdGenerator:
    """Ids for the stanzas a room creates.

    Stanza ids (XEP-0359) are time-ordered so that a later archive can page by them: 12 hex digits
    of milliseconds, 4 of a sequence within the millisecond, then 8 random ones (unguessable).
    """

    __slots__ = ("_last", "_seq")

    def __init__(self) -> None:
        self._last = 0
        self._seq = 0

    def stanza_id(self, now: float) -> str:
        ms = int(now * 1000)
        if ms <= self._last:
            ms = self._last
            self._seq += 1
            if self._seq > 0xFFFF:
                ms += 1
                self._seq = 0
        else:
            self._seq = 0
        self._last = ms
        return f"{ms:012x}{self._seq:04x}{secrets.token_hex(4)}"

    @staticmethod
    def token() -> str:
        return secrets.token_hex(8)


@dataclass(slots=True)
class Broadcast:
    """One stanza for many recipients: ``stanza`` has 'from' set and no 'to'."""

    stanza: Element
    to: list[JID]
    frm: JID


@dataclass(slots=True)
class HistoryEntry:
    """A groupchat message as relayed (from the occupant JID, with stanza-id and occupant-id, no 'to')."""

    stanza: Element
    time: float
    stanza_id: str
    sender: str  #: real bare JID
    nick: str


@dataclass(slots=True)
class Outcome:
    """What one input did: stanzas to send, in order, and state changes for the caller."""

    out: list[Element | Broadcast] = field(default_factory=list)
    #: Persistent state changed (configuration, affiliations, subject, remembered roles).
    save: bool = False
    #: The room no longer exists (destroyed, or temporary and empty).
    destroyed: bool = False
    joined: list[JID] = field(default_factory=list)
    left: list[JID] = field(default_factory=list)
    #: Messages relayed that an archive (MAM) may keep; and stanza ids retracted by moderators.
    archive: list[HistoryEntry] = field(default_factory=list)
    retracted: list[str] = field(default_factory=list)

    def send(self, stanza: Element) -> None:
        self.out.append(stanza)

    def broadcast(self, stanza: Element, to: list[JID], frm: JID) -> None:
        if to:
            self.out.append(Broadcast(stanza, to, frm))

    def extend(self, other: Outcome) -> None:
        self.out.extend(other.out)
        self.save = self.save or other.save
        self.destroyed = self.destroyed or other.destroyed
        self.joined.extend(other.joined)
        self.left.extend(other.left)
        self.archive.extend(other.archive)
        self.retracted.extend(other.retracted)


@dataclass(slots=True)
class AffiliationRecord:
    affiliation: Affiliation
    nick: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class Subject:
    text: str
    nick: str | None
    time: float | None
    occupant_id: str | None = None


@dataclass(slots=True)
class PendingIq:
    """An IQ relayed from one occupant to another, awaiting the response (§17.4 rule 3)."""

    requester: JID
    request_id: str
    target: JID
    target_occupant: str  #: occupant JID the response appears to come from
    expires: float


class Occupant:
    """One nickname in the room, with one or more sessions of the same user (§7.2.9)."""

    __slots__ = (
        "bare",
        "bare_str",
        "jid",
        "jid_str",
        "key",
        "nick",
        "occupant_id",
        "primary",
        "role",
        "sessions",
        "stamp",
        "tokens",
    )

    def __init__(
        self, room_jid: JID, nick: str, bare: JID, role: Role, occupant_id: str, burst: float
    ) -> None:
        self.nick = nick
        self.key = nick_key(nick)
        self.jid = JID(room_jid.local, room_jid.domain, nick, prepared=True)
        self.jid_str = str(self.jid)
        self.bare = bare
        self.bare_str = str(bare)
        self.role = role
        self.occupant_id = occupant_id
        #: Real full JID of each session → the presence payload it last sent (show, status, caps …).
        self.sessions: dict[JID, list[Element]] = {}
        #: The session whose presence the room shows (the last to update).
        self.primary: JID = bare
        self.tokens = burst
        self.stamp = 0.0

    @property
    def payload(self) -> list[Element]:
        return self.sessions.get(self.primary, [])

    def rename(self, room_jid: JID, nick: str) -> None:
        self.nick = nick
        self.key = nick_key(nick)
        self.jid = JID(room_jid.local, room_jid.domain, nick, prepared=True)
        self.jid_str = str(self.jid)

    def __repr__(self) -> str:
        return f"<Occupant {self.jid_str} {self.role.label} sessions={len(self.sessions)}>"


def presence_payload(stanza: Element) -> list[Element]:
    """What the room reflects of a client's presence: not MUC protocol elements or forged occupant ids
    (§17.3 rule 6, XEP-0421 §4)."""
    out: list[Element] = []
    for c in stanza.children:
        if isinstance(c, Element) and c.ns not in (MUC, MUC_USER, OCCUPANT_ID):
            out.append(c)
    return out


def presence_error(room: str, stanza: Element, frm: JID, nick: str | None, error: StanzaError) -> Element:
    """An error reply to a join or nick change (§7.2.6 ff.): from the occupant JID, with <x/>."""
    attrs = {"from": f"{room}/{nick}" if nick else room, "to": str(frm), "type": "error"}
    sid = stanza.attrs.get("id")
    if sid is not None:
        attrs["id"] = sid
    p = Element("presence", stanza.ns or CLIENT, attrs)
    p.add("x", MUC)
    p.append(error.to_element(room, p.ns))
    return p


def _status_sort(codes: Iterable[str]) -> list[str]:
    return sorted(set(codes))


class Room:
    """One chat room: configuration, affiliations, occupants, subject and discussion history."""

    def __init__(
        self,
        jid: JID,
        policy: ServicePolicy,
        *,
        config: RoomConfig | None = None,
        secret: bytes | None = None,
        created: float = 0.0,
        ids: IdGenerator | None = None,
        locked: bool = False,
        creator: str | None = None,
    ) -> None:
        self.jid = jid
        self.jid_str = str(jid)
        self.policy = policy
        self.config = config or RoomConfig(
            max_users=policy.default_max_occupants, history_length=policy.default_history
        )
        #: HMAC key for occupant ids (XEP-0421 §6.1): stable per room and real bare JID.
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.created = created
        self.ids = ids or IdGenerator()
        #: Created but not yet configured by its owner (§10.1.1): nobody else may enter.
        self.locked = locked
        self.creator = creator
        self.affiliations: dict[str, AffiliationRecord] = {}
        #: Roles given by moderators in moderated rooms, remembered across visits (§5.1).
        self.roles: dict[str, Role] = {}
        self.occupants: dict[str, Occupant] = {}
        self.sessions: dict[JID, Occupant] = {}
        self.subject: Subject | None = None
        self.history: deque[HistoryEntry] = deque(maxlen=self.config.history_length)
        self.pending: OrderedDict[str, PendingIq] = OrderedDict()
        self.destroyed = False
        self._reserved: dict[str, str] = {}
        self._all: list[JID] | None = None

    # -- queries ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.jid.local or ""

    def __repr__(self) -> str:
        return f"<Room {self.jid_str} occupants={len(self.occupants)}>"

    def affiliation_of(self, jid: JID) -> Affiliation:
        """The affiliation of a (bare or full) JID: its own, else its domain's (§9.2), else none.
        Server administrators are owners of every room."""
        bare = jid.bare_str
        if bare in self.policy.admins:
            return Affiliation.OWNER
        record = self.affiliations.get(bare)
        if record is None and jid.local is not None:
            record = self.affiliations.get(jid.domain)
        return record.affiliation if record is not None else Affiliation.NONE

    def occupant(self, nick: str) -> Occupant | None:
        return self.occupants.get(nick_key(nick))

    def occupant_id(self, bare: JID) -> str:
        """XEP-0421: HMAC-SHA256 of the real bare JID under the room's secret."""
        return hmac.new(self.secret, bare.bare_str.encode(), hashlib.sha256).hexdigest()[:40]

    def reserved_nick(self, bare: JID) -> str | None:
        record = self.affiliations.get(bare.bare_str)
        if record is None or record.affiliation < Affiliation.MEMBER:
            return None
        return record.nick

    def list_affiliation(self, affiliation: Affiliation) -> list[str]:
        return sorted(k for k, r in self.affiliations.items() if r.affiliation == affiliation)

    def owned_by(self, bare: str) -> bool:
        record = self.affiliations.get(bare)
        return record is not None and record.affiliation == Affiliation.OWNER

    def all_sessions(self) -> list[JID]:
        """Every occupant session (cached until someone joins or leaves)."""
        if self._all is None:
            self._all = list(self.sessions)
        return self._all

    # -- presence -----------------------------------------------------------------------------------
    def presence(
        self, stanza: Element, frm: JID, nick: str, now: float, *, creating: bool = False
    ) -> Outcome:
        """Presence from a real JID to ``room/nick``: join, nick change, status change or exit."""
        type_ = stanza.attrs.get("type")
        occ = self.sessions.get(frm)
        if type_ == "unavailable":
            if occ is None:
                return Outcome()  # §17.3 rule 5: ignored from a non-occupant
            return self._leave(stanza, occ, frm)
        if type_ == "error":
            if occ is not None and error_condition(stanza) in DELIVERY_ERRORS:
                return self.remove_session(frm, now, codes=("333",))
            return Outcome()
        if type_ is not None:
            return Outcome()  # probes and subscriptions are not joins (§17.3 rules 1-2)
        x_muc = stanza.find("x", MUC)
        if occ is None:
            if x_muc is None:
                return self.not_in_room(stanza, frm, nick)
            return self._join(stanza, frm, nick, x_muc, now, creating=creating)
        if nick != occ.nick:
            return self._change_nick(stanza, occ, frm, nick)
        if x_muc is not None:
            return self._resync(stanza, occ, frm, x_muc, now)
        return self._update(stanza, occ, frm)

    def not_in_room(self, stanza: Element, frm: JID, nick: str) -> Outcome:
        """§7.2.22: a presence without <x/> from a non-occupant gets an explicit kick (110, 307, 333)."""
        out = Outcome()
        p = Element(
            "presence", CLIENT, {"from": f"{self.jid_str}/{nick}", "to": str(frm), "type": "unavailable"}
        )
        x = p.add("x", MUC_USER)
        x.add("item", attrs={"affiliation": self.affiliation_of(frm).label, "role": "none"}).add(
            "reason", text="You are not in the room."
        )
        for code in ("110", "307", "333"):
            x.add("status", attrs={"code": code})
        out.send(p)
        return out

    def presence_error(self, stanza: Element, frm: JID, nick: str, error: StanzaError) -> Outcome:
        out = Outcome()
        out.send(presence_error(self.jid_str, stanza, frm, nick, error))
        return out

    def _join(
        self, stanza: Element, frm: JID, nick: str, x_muc: Element, now: float, *, creating: bool
    ) -> Outcome:
        bare = frm.bare
        affiliation = self.affiliation_of(bare)
        try:
            self._check_join(stanza, frm, nick, x_muc, affiliation)
        except StanzaError as e:
            return self.presence_error(stanza, frm, nick, e)
        key = nick_key(nick)
        occ = self.occupants.get(key)
        out = Outcome()
        payload = presence_payload(stanza)
        if occ is not None:
            # §7.2.9: another session of the same user under the same nick joins that occupant.
            changed = occ.payload != payload
            occ.sessions[frm] = payload
            occ.primary = frm
            self.sessions[frm] = occ
            self._all = None
            out.joined.append(frm)
            codes = self._join_codes(creating=False)
            if nick != occ.nick:
                codes.append("210")  # §7.2.3: joined under the spelling the occupant already uses
            self._send_state(out, occ, frm, stanza, x_muc, now, codes=codes)
            if changed:
                self._announce(out, occ, to_self=False)
            return out
        role = self._initial_role(bare, affiliation)
        occ = Occupant(self.jid, nick, bare, role, self.occupant_id(bare), self.policy.message_burst)
        occ.stamp = now
        occ.sessions[frm] = payload
        occ.primary = frm
        self.occupants[key] = occ
        self.sessions[frm] = occ
        self._all = None
        out.joined.append(frm)
        self._send_state(out, occ, frm, stanza, x_muc, now, codes=self._join_codes(creating=creating))
        self._announce(out, occ, to_self=False)
        return out

    def _check_join(
        self, stanza: Element, frm: JID, nick: str, x_muc: Element, affiliation: Affiliation
    ) -> None:
        """The entry rules of §7.2.3-§7.2.11, in the order a refused user learns the most useful reason."""
        if self.locked and affiliation != Affiliation.OWNER:
            raise StanzaError("item-not-found", "the room is locked until its owner configures it")
        if affiliation == Affiliation.OUTCAST:
            raise StanzaError("forbidden", "you are banned from this room")
        if self.config.members_only and affiliation < Affiliation.MEMBER:
            raise StanzaError("registration-required", "this room is members-only")
        self._check_nick(nick)
        if self.config.password_protected and affiliation != Affiliation.OWNER:
            given = x_muc.find_text("password", MUC)
            x_user = stanza.find("x", MUC_USER)
            if given is None and x_user is not None:
                given = x_user.find_text("password", MUC_USER)  # the form §20.1's IRC mapping shows
            if given != self.config.password:
                raise StanzaError("not-authorized", "a password is required to enter this room")
        key = nick_key(nick)
        occ = self.occupants.get(key)
        if occ is not None and occ.bare != frm.bare:
            raise StanzaError("conflict", "that nickname is in use")
        owner = self._reserved.get(key)
        if owner is not None and owner != frm.bare_str:
            raise StanzaError("conflict", "that nickname is registered by another user")
        if occ is None:
            limit = self.config.max_users
            if affiliation >= Affiliation.ADMIN:
                limit += self.policy.admin_headroom
            if len(self.occupants) >= limit:
                raise StanzaError("service-unavailable", "the room is full", type="wait")

    def _check_nick(self, nick: str) -> None:
        # §15.1: no empty or invisible nicknames.
        if not nick.strip() or not any(c.isprintable() and not c.isspace() for c in nick):
            raise StanzaError("jid-malformed", "a nickname cannot be blank")
        if len(nick) > self.policy.max_nick_chars:
            raise StanzaError("not-acceptable", "that nickname is too long")

    def _initial_role(self, bare: JID, affiliation: Affiliation) -> Role:
        """§5.1.2 default roles, or the role a moderator gave this user before (moderated rooms)."""
        if affiliation >= Affiliation.ADMIN:
            return Role.MODERATOR
        if self.config.moderated:
            remembered = self.roles.get(bare.bare_str)
            if remembered is not None:
                return remembered
            return Role.PARTICIPANT if affiliation >= Affiliation.MEMBER else Role.VISITOR
        return Role.PARTICIPANT

    def _default_role(self, affiliation: Affiliation) -> Role:
        if affiliation >= Affiliation.ADMIN:
            return Role.MODERATOR
        if self.config.moderated and affiliation < Affiliation.MEMBER:
            return Role.VISITOR
        return Role.PARTICIPANT

    def _join_codes(self, *, creating: bool) -> list[str]:
        codes = ["110"]
        if self.config.non_anonymous:
            codes.append("100")  # §7.2.4
        if self.config.enable_logging:
            codes.append("170")  # §7.2.12
        if creating:
            codes.append("201")  # §10.1.1
        return codes

    def _send_state(
        self,
        out: Outcome,
        occ: Occupant,
        session: JID,
        stanza: Element,
        x_muc: Element | None,
        now: float,
        *,
        codes: list[str],
    ) -> None:
        """§7.1 order of events: others' presence, self-presence, history, subject."""
        to = str(session)
        sees_jids = self.config.non_anonymous or occ.role == Role.MODERATOR
        broadcast = self.config.presence_broadcast
        for other in self.occupants.values():
            if other is occ or other.role not in broadcast:
                continue
            p = self._presence(other, jid=other.primary if sees_jids else None)
            p.attrs["to"] = to
            out.send(p)
        me = self._presence(occ, jid=session, codes=codes, payload=occ.sessions.get(session))
        me.attrs["to"] = to
        sid = stanza.attrs.get("id")
        if sid is not None:
            me.attrs["id"] = sid  # §7.2.2: reflect the join's id for tracking
        out.send(me)
        self._send_history(out, session, x_muc, now)
        self._send_subject(out, session)

    def _send_history(self, out: Outcome, session: JID, x_muc: Element | None, now: float) -> None:
        request = x_muc.find("history", MUC) if x_muc is not None else None
        to = str(session)
        for _, stanza in self._select_history(request, now):
            stanza.attrs["to"] = to
            out.send(stanza)

    def _select_history(self, request: Element | None, now: float) -> list[tuple[HistoryEntry, Element]]:
        """§7.2.14: the smallest history meeting every limit the joining client asked for."""
        entries = list(self.history)
        if request is not None:
            attrs = request.attrs
            cutoff: float | None = None
            seconds = _int_attr(attrs.get("seconds"))
            if seconds is not None:
                cutoff = now - seconds
            since = attrs.get("since")
            if since:
                try:
                    ts = parse_datetime(since).timestamp()
                except ValueError:
                    ts = None
                if ts is not None:
                    cutoff = ts if cutoff is None else max(cutoff, ts)
            if cutoff is not None:
                entries = [e for e in entries if e.time >= cutoff]
            maxstanzas = _int_attr(attrs.get("maxstanzas"))
            if maxstanzas is not None:
                entries = entries[len(entries) - maxstanzas :] if maxstanzas > 0 else []
            maxchars = _int_attr(attrs.get("maxchars"))
        else:
            maxchars = None
        stanzas = [(e, self._history_stanza(e)) for e in entries]
        if maxchars is not None:
            kept: list[tuple[HistoryEntry, Element]] = []
            total = 0
            for pair in reversed(stanzas):
                size = len(serialize(pair[1], CLIENT)) + 40  # + the 'to' attribute, roughly
                if total + size > maxchars:
                    break
                total += size
                kept.append(pair)
            stanzas = kept[::-1]
        return stanzas

    def _history_stanza(self, entry: HistoryEntry) -> Element:
        stanza = entry.stanza.shallow_copy()
        # §7.2.13: history carries a XEP-0203 delay from the room itself.
        stanza.add("delay", DELAY, {"from": self.jid_str, "stamp": format_datetime(entry.time)})
        return stanza

    def _send_subject(self, out: Outcome, session: JID) -> None:
        """§7.2.15: the subject (empty if none) ends the join sequence."""
        subject = self.subject
        frm = self.jid_str
        if subject is not None and subject.nick:
            frm = f"{self.jid_str}/{subject.nick}"
        msg = Element(
            "message", CLIENT, {"type": "groupchat", "from": frm, "to": str(session), "id": self.ids.token()}
        )
        msg.add("subject", text=subject.text if subject is not None else None)
        if subject is not None and subject.time is not None:
            msg.add("delay", DELAY, {"from": self.jid_str, "stamp": format_datetime(subject.time)})
        if subject is not None and subject.occupant_id and subject.nick:
            msg.add("occupant-id", OCCUPANT_ID, {"id": subject.occupant_id})
        out.send(msg)

    def _resync(self, stanza: Element, occ: Occupant, frm: JID, x_muc: Element, now: float) -> Outcome:
        """§7.2.1 / §17.3 rule 3: a join from a client already in the room: it lost track; start over."""
        out = Outcome()
        payload = presence_payload(stanza)
        changed = occ.payload != payload or occ.primary != frm
        occ.sessions[frm] = payload
        occ.primary = frm
        self._send_state(out, occ, frm, stanza, x_muc, now, codes=self._join_codes(creating=False))
        if changed:
            self._announce(out, occ, to_self=False)
        return out

    def _update(self, stanza: Element, occ: Occupant, frm: JID) -> Outcome:
        """§7.7: a change of availability status, reflected to the room."""
        out = Outcome()
        occ.sessions[frm] = presence_payload(stanza)
        occ.primary = frm
        self._announce(out, occ)
        return out

    def _change_nick(self, stanza: Element, occ: Occupant, frm: JID, nick: str) -> Outcome:
        """§7.6: unavailable from the old nick (303, new nick), then available from the new one."""
        try:
            self._check_nick(nick)
            key = nick_key(nick)
            other = self.occupants.get(key)
            if other is not None and other is not occ:
                raise StanzaError("conflict", "that nickname is in use")
            owner = self._reserved.get(key)
            if owner is not None and owner != occ.bare_str:
                raise StanzaError("conflict", "that nickname is registered by another user")
        except StanzaError as e:
            return self.presence_error(stanza, frm, nick, e)
        out = Outcome()
        self._announce(out, occ, type_="unavailable", codes=("303",), nick=nick, payload=[])
        del self.occupants[occ.key]
        occ.rename(self.jid, nick)
        self.occupants[occ.key] = occ
        occ.sessions[frm] = presence_payload(stanza)
        occ.primary = frm
        self._announce(out, occ)
        return out

    def _leave(self, stanza: Element, occ: Occupant, frm: JID) -> Outcome:
        """§7.14: exit (of one session, or of the occupant when it was the last)."""
        out = Outcome()
        payload = presence_payload(stanza)
        if len(occ.sessions) > 1:
            self._drop_session(out, occ, frm, payload, codes=())
            return out
        destroy = None
        if self.locked:
            # §10.1.3: the creator left before configuring: the room goes, with a <destroy/> note.
            destroy = Element("destroy", MUC_USER)
        self._remove(out, occ, codes=(), payload=payload, destroy=destroy)
        self._maybe_vanish(out)
        return out

    def _drop_session(
        self, out: Outcome, occ: Occupant, session: JID, payload: list[Element], codes: Iterable[str]
    ) -> None:
        """One of several sessions of an occupant leaves: only that session hears about it."""
        p = self._presence(
            occ, type_="unavailable", payload=payload, jid=session, role=Role.NONE, codes=["110", *codes]
        )
        p.attrs["to"] = str(session)
        out.send(p)
        del occ.sessions[session]
        del self.sessions[session]
        self._all = None
        out.left.append(session)
        if occ.primary == session:
            occ.primary = next(reversed(occ.sessions))
            self._announce(out, occ)

    def remove_session(self, session: JID, now: float, *, codes: Iterable[str] = ()) -> Outcome:
        """A session went away without leaving (disconnect, delivery error): remove it (§18.1)."""
        out = Outcome()
        occ = self.sessions.get(session)
        if occ is None:
            return out
        codes = tuple(codes)
        if len(occ.sessions) > 1:
            self._drop_session(out, occ, session, [], codes)
            return out
        self._remove(out, occ, codes=codes, payload=[])
        self._maybe_vanish(out)
        return out

    def _remove(
        self,
        out: Outcome,
        occ: Occupant,
        *,
        codes: Iterable[str],
        payload: list[Element] | None = None,
        actor: str | None = None,
        reason: str | None = None,
        destroy: Element | None = None,
        affiliation: Affiliation | None = None,
    ) -> None:
        """Take an occupant (every session) out of the room and tell everyone (role 'none')."""
        self._announce(
            out,
            occ,
            type_="unavailable",
            codes=codes,
            payload=payload or [],
            role=Role.NONE,
            visible_role=occ.role,
            actor=actor,
            reason=reason,
            destroy=destroy,
            affiliation=affiliation,
        )
        del self.occupants[occ.key]
        for session in occ.sessions:
            self.sessions.pop(session, None)
            out.left.append(session)
        self._all = None

    def _maybe_vanish(self, out: Outcome) -> None:
        """A temporary (or still locked) room is destroyed when its last occupant leaves (§7.14)."""
        if not self.occupants and (self.locked or not self.config.persistent):
            self.destroyed = True
            out.destroyed = True

    # -- building presence --------------------------------------------------------------------------
    def _presence(
        self,
        occ: Occupant,
        *,
        jid: JID | None,
        type_: str | None = None,
        payload: list[Element] | None = None,
        codes: Iterable[str] = (),
        nick: str | None = None,
        role: Role | None = None,
        affiliation: Affiliation | None = None,
        actor: str | None = None,
        reason: str | None = None,
        destroy: Element | None = None,
    ) -> Element:
        attrs = {"from": occ.jid_str}
        if type_ is not None:
            attrs["type"] = type_
        children: list[Element | str] = list(occ.payload if payload is None else payload)
        p = Element("presence", CLIENT, attrs, children)
        x = p.add("x", MUC_USER)
        aff = affiliation if affiliation is not None else self.affiliation_of(occ.bare)
        item_attrs = {"affiliation": aff.label, "role": (occ.role if role is None else role).label}
        if jid is not None:
            item_attrs["jid"] = str(jid)
        if nick is not None:
            item_attrs["nick"] = nick
        item = x.add("item", attrs=item_attrs)
        if actor:
            item.add("actor", attrs={"nick": actor})
        if reason:
            item.add("reason", text=reason)
        if destroy is not None:
            x.append(destroy)
        for code in _status_sort(codes):
            x.add("status", attrs={"code": code})
        p.add("occupant-id", OCCUPANT_ID, {"id": occ.occupant_id})
        return p

    def _announce(
        self,
        out: Outcome,
        occ: Occupant,
        *,
        type_: str | None = None,
        payload: list[Element] | None = None,
        codes: Iterable[str] = (),
        nick: str | None = None,
        role: Role | None = None,
        visible_role: Role | None = None,
        affiliation: Affiliation | None = None,
        actor: str | None = None,
        reason: str | None = None,
        destroy: Element | None = None,
        to_self: bool = True,
    ) -> None:
        """Presence of ``occ`` to every occupant allowed to see it — with the real JID for those who
        may see it (§7.2.4, §7.2.5) — and to its own sessions with status 110."""
        codes = tuple(codes)
        shown_role = occ.role if visible_role is None else visible_role
        kw: dict[str, Any] = {
            "type_": type_,
            "payload": payload,
            "nick": nick,
            "role": role,
            "affiliation": affiliation,
            "actor": actor,
            "reason": reason,
            "destroy": destroy,
        }
        if shown_role in self.config.presence_broadcast:
            with_jid: list[JID] = []
            without: list[JID] = []
            anyone = self.config.non_anonymous
            for other in self.occupants.values():
                if other is occ:
                    continue
                (with_jid if anyone or other.role == Role.MODERATOR else without).extend(other.sessions)
            if with_jid:
                out.broadcast(self._presence(occ, jid=occ.primary, codes=codes, **kw), with_jid, occ.jid)
            if without:
                out.broadcast(self._presence(occ, jid=None, codes=codes, **kw), without, occ.jid)
        if to_self:
            out.broadcast(
                self._presence(occ, jid=occ.primary, codes=(*codes, "110"), **kw), list(occ.sessions), occ.jid
            )

    # -- messages -------------------------------------------------------------------------------------
    def groupchat(self, stanza: Element, frm: JID, now: float) -> Outcome:
        """§7.4 (and §8.1 subject changes): a groupchat message to the room."""
        occ = self.sessions.get(frm)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        self._spend(occ, now)
        body = stanza.find("body")
        subject = stanza.find("subject")
        if subject is not None and body is None and stanza.find("thread") is None:
            return self._set_subject(stanza, occ, subject.text, now)
        if occ.role < Role.PARTICIPANT:
            raise StanzaError("forbidden", "you have no voice in this room")
        if body is not None and len(body.text) > self.policy.max_body_chars:
            raise StanzaError("policy-violation", "the message is too long")
        out = Outcome()
        msg = self._relay(stanza, occ, now)
        sid = msg.attrs.get("id")
        if sid is None:
            msg.attrs["id"] = sid = self.ids.token()  # §7.4: one id for every reflection
        stanza_id = self.ids.stanza_id(now)
        msg.add("stanza-id", STANZA_ID, {"id": stanza_id, "by": self.jid_str})
        msg.add("occupant-id", OCCUPANT_ID, {"id": occ.occupant_id})
        if body is not None and stanza.find("no-store", HINTS) is None:
            entry = HistoryEntry(msg, now, stanza_id, occ.bare_str, occ.nick)
            if self.history.maxlen:
                self.history.append(entry)
            out.archive.append(entry)
        out.broadcast(msg, self.all_sessions(), occ.jid)
        return out

    def _relay(self, stanza: Element, occ: Occupant, now: float) -> Element:
        """A copy of a client's message as the room relays it: from the occupant JID, without anything
        only the room may put there (its stanza ids, occupant ids, muc#user data)."""
        attrs = {k: v for k, v in stanza.attrs.items() if k != "to" and k != "from"}
        attrs["from"] = occ.jid_str
        children: list[Element | str] = []
        room = self.jid_str
        for c in stanza.children:
            if not isinstance(c, Element):
                continue
            el = c
            ns = el.ns
            if ns in (OCCUPANT_ID, MUC_USER):
                continue  # XEP-0421 §4: replace forged ids; §17.3: muc#user is the room's
            if ns == STANZA_ID and el.name == "stanza-id" and el.attrs.get("by") == room:
                continue  # XEP-0359 §5: delete ids claiming to be ours
            children.append(el)
        return Element("message", stanza.ns or CLIENT, attrs, children)

    def _set_subject(self, stanza: Element, occ: Occupant, text: str, now: float) -> Outcome:
        """§8.1: moderators, or participants when the room allows it, change the subject."""
        allowed = occ.role == Role.MODERATOR or (self.config.change_subject and occ.role >= Role.PARTICIPANT)
        if not allowed:
            raise StanzaError("forbidden", "you may not change the subject of this room")
        if len(text) > self.policy.max_text_chars:
            raise StanzaError("policy-violation", "the subject is too long")
        self.subject = Subject(text, occ.nick, now, occ.occupant_id)
        msg = self._relay(stanza, occ, now)
        msg.attrs.setdefault("id", self.ids.token())
        stanza_id = self.ids.stanza_id(now)
        msg.add("stanza-id", STANZA_ID, {"id": stanza_id, "by": self.jid_str})
        msg.add("occupant-id", OCCUPANT_ID, {"id": occ.occupant_id})
        out = Outcome(save=True)
        # XEP-0313 §6.1.2: subject changes belong in the archive (not in the discussion history).
        out.archive.append(HistoryEntry(msg, now, stanza_id, occ.bare_str, occ.nick))
        out.broadcast(msg, self.all_sessions(), occ.jid)
        return out

    def private_message(self, stanza: Element, frm: JID, nick: str, now: float) -> Outcome:
        """§7.5: a message to ``room/nick`` goes to every session of that occupant."""
        type_ = stanza.attrs.get("type", "normal")
        out = Outcome()
        sender = self.sessions.get(frm)
        if type_ == "error":
            if sender is not None and error_condition(stanza) in DELIVERY_ERRORS:
                return self.remove_session(frm, now, codes=("333",))
            return out
        if type_ == "groupchat":
            raise StanzaError("bad-request", "private messages cannot be of type groupchat")
        if sender is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        target = self.occupant(nick)
        if target is None:
            raise StanzaError("item-not-found", "no such occupant")
        if not self.config.pm_allowed(sender.role):
            raise StanzaError("forbidden", "private messages are not allowed in this room")
        self._spend(sender, now)
        body = stanza.find("body")
        if body is not None and len(body.text) > self.policy.max_body_chars:
            raise StanzaError("policy-violation", "the message is too long")
        msg = self._relay(stanza, sender, now)
        # §7.5: add <x xmlns='muc#user'/> so carbons can recognise it (the client's own was dropped).
        msg.add("x", MUC_USER)
        msg.add("occupant-id", OCCUPANT_ID, {"id": sender.occupant_id})
        out.broadcast(msg, list(target.sessions), sender.jid)
        return out

    def room_message(self, stanza: Element, frm: JID, now: float) -> Outcome:
        """A non-groupchat message to the room: invitations, declines, voice requests and approvals."""
        type_ = stanza.attrs.get("type", "normal")
        out = Outcome()
        if type_ == "error":
            if error_condition(stanza) in DELIVERY_ERRORS and frm in self.sessions:
                return self.remove_session(frm, now, codes=("333",))
            return out
        x_user = stanza.find("x", MUC_USER)
        if x_user is not None:
            if x_user.find("invite", MUC_USER) is not None:
                return self._invite(stanza, x_user, frm, now)
            if x_user.find("decline", MUC_USER) is not None:
                return self._decline(stanza, x_user, frm)
        x_data = stanza.find("x", DATA_FORMS)
        if x_data is not None:
            form = forms.read_form(x_data)
            if form.form_type == MUC_REQUEST:
                if "muc#request_allow" in form.values:
                    return self._approve_voice(form, frm)
                if forms.voice_request(form):
                    return self._request_voice(frm, now)
        if stanza.find("body") is not None:
            # §17.2 rule 1: a room message that is not groupchat is refused.
            raise StanzaError("bad-request", "messages to the room must be of type groupchat")
        return out

    def _invite(self, stanza: Element, x_user: Element, frm: JID, now: float) -> Outcome:
        """§7.8.2 mediated invitations: the room passes them on (and, members-only, adds members)."""
        sender = self.sessions.get(frm)
        affiliation = self.affiliation_of(frm)
        if sender is None and affiliation < Affiliation.ADMIN:
            raise StanzaError("not-acceptable", "only occupants may invite others")
        if (
            self.config.members_only
            and affiliation < Affiliation.ADMIN
            and not (self.config.allow_invites and affiliation >= Affiliation.MEMBER)
        ):
            # §9.5: in members-only rooms only those who may edit the member list invite.
            raise StanzaError("forbidden", "only admins may invite others to this room")
        targets: list[tuple[JID, Element]] = []
        for invite in x_user.elements("invite", MUC_USER):
            try:
                targets.append((JID.parse(invite.attrs.get("to", "")), invite))
            except JIDError:
                raise StanzaError("jid-malformed", "the invitee is not a valid JID") from None
        if sender is not None:
            self._spend(sender, now)
        out = Outcome()
        inviter = frm.bare_str
        for jid, invite in targets:
            if self.config.members_only and self.affiliation_of(jid) == Affiliation.NONE:
                self.affiliations[jid.bare_str] = AffiliationRecord(Affiliation.MEMBER)
                self._rebuild_reserved()
                out.save = True
            out.send(
                self._invitation(
                    jid,
                    inviter,
                    invite.find_text("reason", MUC_USER),
                    invite.find("continue", MUC_USER),
                    stanza.attrs.get("id"),
                )
            )
        return out

    def _invitation(
        self, to: JID, inviter: str, reason: str | None, cont: Element | None, sid: str | None
    ) -> Element:
        attrs = {"from": self.jid_str, "to": str(to), "id": sid or self.ids.token()}
        msg = Element("message", CLIENT, attrs)
        x = msg.add("x", MUC_USER)
        inv = x.add("invite", attrs={"from": inviter})
        if reason:
            inv.add("reason", text=reason)
        if cont is not None:
            inv.append(cont.copy())
        if self.config.password_protected:
            x.add("password", text=self.config.password)
        text = f"{inviter} invites you to the room {self.jid_str}"
        msg.add("body", text=f"{text}: {reason}" if reason else text)
        return msg

    def _decline(self, stanza: Element, x_user: Element, frm: JID) -> Outcome:
        """§7.8.2: the invitee's decline goes back to the inviter through the room."""
        out = Outcome()
        for decline in x_user.elements("decline", MUC_USER):
            try:
                to = JID.parse(decline.attrs.get("to", ""))
            except JIDError:
                raise StanzaError("jid-malformed", "the inviter is not a valid JID") from None
            attrs = {"from": self.jid_str, "to": str(to), "id": stanza.attrs.get("id") or self.ids.token()}
            msg = Element("message", CLIENT, attrs)
            d = msg.add("x", MUC_USER).add("decline", attrs={"from": frm.bare_str})
            reason = decline.find_text("reason", MUC_USER)
            if reason:
                d.add("reason", text=reason)
            out.send(msg)
        return out

    def _request_voice(self, frm: JID, now: float) -> Outcome:
        """§7.13: a visitor asks for voice; every moderator gets the approval form (§8.6)."""
        occ = self.sessions.get(frm)
        if occ is None:
            raise StanzaError("not-acceptable", "you are not in this room")
        out = Outcome()
        if occ.role >= Role.PARTICIPANT:
            return out  # already has voice
        self._spend(occ, now)
        moderators = [s for o in self.occupants.values() if o.role == Role.MODERATOR for s in o.sessions]
        if not moderators:
            return out
        msg = Element("message", CLIENT, {"from": self.jid_str, "id": self.ids.token()})
        msg.append(forms.voice_approval_form(occ.nick, str(occ.primary)))
        out.broadcast(msg, moderators, self.jid)
        return out

    def _approve_voice(self, form: forms.SubmittedForm, frm: JID) -> Outcome:
        """§8.6: a moderator submits the approval form."""
        actor = self.sessions.get(frm)
        if actor is None or actor.role != Role.MODERATOR:
            raise StanzaError("forbidden", "only moderators approve voice requests")
        out = Outcome()
        allow = form.first("muc#request_allow") or ""
        if not forms.parse_bool(allow, "muc#request_allow"):
            return out
        nick = form.first("muc#roomnick")
        target = self.occupant(nick) if nick else None
        if target is None or target.role != Role.VISITOR:
            return out
        self._set_role(out, target, Role.PARTICIPANT, actor, None)
        return out

    def _spend(self, occ: Occupant, now: float) -> None:
        """Token bucket per occupant; an empty bucket refuses with resource-constraint."""
        rate = self.policy.message_rate
        if rate <= 0:
            return
        tokens = min(self.policy.message_burst, occ.tokens + max(0.0, now - occ.stamp) * rate)
        occ.stamp = now
        if tokens < 1.0:
            occ.tokens = tokens
            raise StanzaError("resource-constraint", "you are sending too fast; slow down")
        occ.tokens = tokens - 1.0

    # -- IQs to occupants -------------------------------------------------------------------------------
    def occupant_iq(self, stanza: Element, frm: JID, nick: str, now: float) -> Outcome:
        """IQs to ``room/nick``: XEP-0410 self-pings are answered here; others are relayed to the
        occupant's real JID without revealing either side's (§17.4 rule 3)."""
        type_ = stanza.attrs.get("type")
        out = Outcome()
        if type_ in ("result", "error"):
            return self._iq_response(stanza, frm, nick)
        payload = stanza.first()
        sender = self.sessions.get(frm)
        target = self.occupant(nick)
        is_ping = payload is not None and payload.ns == PING and payload.name == "ping"
        if is_ping and sender is not None and target is sender:
            out.send(self._iq_reply(stanza, frm, nick))  # XEP-0410 §3.3 optimisation
            return out
        if sender is None:
            if payload is not None and payload.ns in (DISCO_INFO, DISCO_ITEMS):
                raise StanzaError("bad-request", "you are not in this room")  # §6.6
            raise StanzaError("not-acceptable", "you are not in this room")
        if target is None:
            raise StanzaError("item-not-found", "no such occupant")
        self.expire_pending(now)
        if len(self.pending) >= self.policy.max_pending_iqs:
            self.pending.popitem(last=False)
        # vCards (avatars) live on the account, not on a session.
        to = target.bare if payload is not None and payload.ns == VCARD else target.primary
        new_id = self.ids.token()
        self.pending[new_id] = PendingIq(
            frm, stanza.attrs.get("id", ""), to, target.jid_str, now + self.policy.iq_timeout
        )
        attrs = {k: v for k, v in stanza.attrs.items() if k not in ("to", "from", "id")}
        attrs.update({"from": sender.jid_str, "to": str(to), "id": new_id})
        out.send(Element("iq", stanza.ns or CLIENT, attrs, list(stanza.children)))
        return out

    def _iq_reply(self, stanza: Element, frm: JID, nick: str) -> Element:
        return Element(
            "iq",
            stanza.ns or CLIENT,
            {
                "type": "result",
                "id": stanza.attrs.get("id", ""),
                "from": f"{self.jid_str}/{nick}",
                "to": str(frm),
            },
        )

    def _iq_response(self, stanza: Element, frm: JID, nick: str) -> Outcome:
        out = Outcome()
        pending = self.pending.get(stanza.attrs.get("id", ""))
        if pending is None or pending.target != frm:
            return out  # not ours, or a forgery from someone else
        del self.pending[stanza.attrs["id"]]
        attrs = {k: v for k, v in stanza.attrs.items() if k not in ("to", "from", "id")}
        attrs.update(
            {"from": pending.target_occupant, "to": str(pending.requester), "id": pending.request_id}
        )
        out.send(Element("iq", stanza.ns or CLIENT, attrs, list(stanza.children)))
        return out

    def expire_pending(self, now: float) -> None:
        pending = self.pending
        while pending:
            first = next(iter(pending.values()))
            if first.expires > now:
                break
            pending.popitem(last=False)

    # -- moderator and admin commands (muc#admin, §8, §9) --------------------------------------------------
    def admin_get(self, query: Element, frm: JID) -> Element:
        """§8.5, §9.2, §9.5, §9.8, §10.5, §10.8: lists by role or by affiliation."""
        items = list(query.elements("item", MUC_ADMIN))
        if len(items) != 1:
            raise StanzaError("bad-request", "ask for one role or one affiliation")
        item = items[0]
        result = Element("query", MUC_ADMIN)
        if "role" in item.attrs:
            try:
                role = Role.parse(item.attrs["role"])
            except ValueError:
                raise StanzaError("bad-request", "unknown role") from None
            actor = self._occupant_of(frm)
            if actor is None or actor.role != Role.MODERATOR:
                raise StanzaError("forbidden", "only moderators see role lists")
            for occ in self.occupants.values():
                if occ.role == role:
                    result.add(
                        "item",
                        attrs={
                            "affiliation": self.affiliation_of(occ.bare).label,
                            "jid": str(occ.primary),
                            "nick": occ.nick,
                            "role": role.label,
                        },
                    )
            return result
        try:
            affiliation = Affiliation.parse(item.attrs.get("affiliation"))
        except ValueError:
            raise StanzaError("bad-request", "unknown affiliation") from None
        if affiliation == Affiliation.NONE:
            raise StanzaError("bad-request", "there is no list of unaffiliated users")
        self._check_list_access(affiliation, frm)
        for key in self.list_affiliation(affiliation):
            record = self.affiliations[key]
            attrs = {"affiliation": affiliation.label, "jid": key}
            if record.nick and affiliation != Affiliation.OUTCAST:
                attrs["nick"] = record.nick
            el = result.add("item", attrs=attrs)
            if record.reason:
                el.add("reason", text=record.reason)
        return result

    def _check_list_access(self, affiliation: Affiliation, frm: JID) -> None:
        mine = self.affiliation_of(frm)
        actor = self._occupant_of(frm)
        if affiliation >= Affiliation.ADMIN:
            # §10.5, §10.8: owners; in non-anonymous rooms also those in or affiliated with the room.
            if mine == Affiliation.OWNER:
                return
            if self.config.non_anonymous and (actor is not None or mine >= Affiliation.MEMBER):
                return
            raise StanzaError("forbidden", "only owners see this list")
        if mine >= Affiliation.ADMIN:
            return
        if affiliation == Affiliation.OUTCAST:
            raise StanzaError("forbidden", "only admins see the ban list")
        # §9.5 and muc#roomconfig_getmemberlist; semi-anonymous rooms keep member JIDs from mere
        # occupants (§5.2.1 ***).
        if (
            actor is not None
            and actor.role in self.config.get_member_list
            and (self.config.non_anonymous or actor.role == Role.MODERATOR)
        ):
            return
        if self.config.non_anonymous and mine == Affiliation.MEMBER:
            return
        raise StanzaError("forbidden", "you may not see the member list")

    def _occupant_of(self, frm: JID) -> Occupant | None:
        """The requester's occupant: its own session, else any occupant of the same bare JID."""
        occ = self.sessions.get(frm)
        if occ is not None:
            return occ
        bare = frm.bare
        for candidate in self.occupants.values():
            if candidate.bare == bare:
                return candidate
        return None

    def admin_set(self, query: Element, frm: JID, now: float) -> Outcome:
        """Role and affiliation changes (§8.2-§8.5, §9.1-§9.8, §10.3-§10.8), all or none."""
        items = list(query.elements("item", MUC_ADMIN))
        if not items:
            raise StanzaError("bad-request", "no items")
        roles: list[tuple[Occupant, Role, str | None]] = []
        affs: list[tuple[JID, Affiliation, str | None, str | None]] = []
        for item in items:
            has_role = "role" in item.attrs
            has_aff = "affiliation" in item.attrs
            if has_role == has_aff:
                # §17.4 rule 4: one of the two, never both.
                raise StanzaError("bad-request", "an item changes either a role or an affiliation")
            reason = item.find_text("reason", MUC_ADMIN)
            if has_role:
                try:
                    role = Role.parse(item.attrs["role"])
                except ValueError:
                    raise StanzaError("bad-request", "unknown role") from None
                nick = item.attrs.get("nick")
                if not nick:
                    raise StanzaError("bad-request", "a role change names the occupant by 'nick'")
                target = self.occupant(nick)
                if target is None:
                    raise StanzaError("item-not-found", f"no occupant {nick!r}")
                roles.append((target, role, reason))
            else:
                try:
                    affiliation = Affiliation.parse(item.attrs["affiliation"])
                except ValueError:
                    raise StanzaError("bad-request", "unknown affiliation") from None
                try:
                    jid = JID.parse(item.attrs.get("jid", ""))
                except JIDError:
                    raise StanzaError(
                        "jid-malformed", "an affiliation change names a user by 'jid'"
                    ) from None
                affs.append((jid.bare, affiliation, item.attrs.get("nick"), reason))
        actor_aff = self.affiliation_of(frm)
        actor = self._occupant_of(frm)
        if roles:
            if actor is None or actor.role != Role.MODERATOR:
                raise StanzaError("forbidden", "only moderators change roles")
            for target, role, _ in roles:
                self.check_role_change(actor_aff, target, role)
        for jid, affiliation, nick, _ in affs:
            self.check_affiliation_change(frm.bare, actor_aff, jid, affiliation)
            if nick and affiliation >= Affiliation.MEMBER:
                holder = self._reserved.get(nick_key(nick))
                in_use = self.occupant(nick)
                if (holder is not None and holder != jid.bare_str) or (
                    in_use is not None and in_use.bare != jid
                ):
                    raise StanzaError("conflict", f"the nickname {nick!r} belongs to someone else")
        if affs:
            owners = {k for k, r in self.affiliations.items() if r.affiliation == Affiliation.OWNER}
            for jid, affiliation, _, _ in affs:
                if affiliation == Affiliation.OWNER:
                    owners.add(jid.bare_str)
                else:
                    owners.discard(jid.bare_str)
            if not owners:
                # §10.4: the last owner cannot step down.
                raise StanzaError("conflict", "a room needs at least one owner")
        out = Outcome()
        actor_nick = actor.nick if actor is not None else None
        for jid, affiliation, nick, reason in affs:
            self._set_affiliation(out, jid, affiliation, nick, reason, actor_nick, frm.bare_str)
        for target, role, reason in roles:
            if target.key in self.occupants:  # not removed by an affiliation change above
                self._set_role(out, target, role, actor, reason)
        self._maybe_vanish(out)
        return out

    def check_role_change(self, actor_aff: Affiliation, target: Occupant, new: Role) -> None:
        """The role state chart of §5.1.3 and the rules of §8.2-§8.4, §9.6-§9.7 (actor is a moderator)."""
        target_aff = self.affiliation_of(target.bare)
        if new == target.role:
            return
        if new == Role.NONE:
            # §8.2: nobody is kicked by a moderator of lower affiliation; moderators only by admins/owners.
            if target_aff > actor_aff:
                raise StanzaError("not-allowed", "you cannot kick someone with a higher affiliation")
            if target.role == Role.MODERATOR and actor_aff < Affiliation.ADMIN:
                raise StanzaError("not-allowed", "only admins and owners kick moderators")
            return
        if new == Role.MODERATOR:
            if actor_aff < Affiliation.ADMIN:
                raise StanzaError("forbidden", "only admins and owners grant moderator status")  # §9.6
            return
        if target.role == Role.MODERATOR:
            # §9.7: revoking moderator status: admins and owners, never from an admin or owner.
            if actor_aff < Affiliation.ADMIN:
                raise StanzaError("forbidden", "only admins and owners revoke moderator status")
            if target_aff >= Affiliation.ADMIN:
                raise StanzaError("not-allowed", "admins and owners stay moderators")
            return
        # §8.4: never from an admin or owner, nor from an affiliation at or above the moderator's.
        at_or_above = target_aff >= Affiliation.MEMBER and target_aff >= actor_aff
        if new == Role.VISITOR and (target_aff >= Affiliation.ADMIN or at_or_above):
            raise StanzaError("not-allowed", "you cannot revoke this occupant's voice")
        # visitor → participant (§8.3): any moderator.

    def check_affiliation_change(
        self, actor: JID, actor_aff: Affiliation, target: JID, new: Affiliation
    ) -> None:
        """The affiliation state chart of §5.2.3 and the rules of §9.1, §10.3-§10.8."""
        if actor_aff < Affiliation.ADMIN:
            raise StanzaError("forbidden", "only admins and owners change affiliations")
        current = self._stored_affiliation(target)
        if new == Affiliation.OUTCAST and target == actor.bare:
            raise StanzaError("conflict", "you cannot ban yourself")  # §9.1
        if new == current:
            return
        if actor_aff < Affiliation.OWNER:
            if current >= Affiliation.ADMIN:
                raise StanzaError("not-allowed", "only owners change the affiliation of admins and owners")
            if new >= Affiliation.ADMIN:
                raise StanzaError("forbidden", "only owners grant admin or owner status")

    def _stored_affiliation(self, jid: JID) -> Affiliation:
        if jid.bare_str in self.policy.admins:
            return Affiliation.OWNER
        record = self.affiliations.get(jid.bare_str)
        return record.affiliation if record is not None else Affiliation.NONE

    def _set_affiliation(
        self,
        out: Outcome,
        jid: JID,
        new: Affiliation,
        nick: str | None,
        reason: str | None,
        actor_nick: str | None,
        actor_bare: str,
    ) -> None:
        key = jid.bare_str
        old_record = self.affiliations.get(key)
        old = old_record.affiliation if old_record is not None else Affiliation.NONE
        old_nick = old_record.nick if old_record is not None else None
        if nick == "":
            old_nick = None  # §9.5: an empty nick unsets the reserved nickname
        elif nick is not None:
            old_nick = nick
        if new == Affiliation.NONE:
            self.affiliations.pop(key, None)
        elif new == Affiliation.OUTCAST:
            # §9.1: the ban list holds no reserved nicknames.
            self.affiliations[key] = AffiliationRecord(new, None, reason)
        else:
            self.affiliations[key] = AffiliationRecord(new, old_nick)
        if new == Affiliation.OUTCAST or new >= Affiliation.ADMIN:
            self.roles.pop(key, None)
        self._rebuild_reserved()
        out.save = True
        affected = [
            o
            for o in self.occupants.values()
            if o.bare_str == key or (jid.local is None and o.bare.domain == jid.domain)
        ]
        for occ in affected:
            effective = self.affiliation_of(occ.bare)
            if effective == Affiliation.OUTCAST:
                self._remove(out, occ, codes=("301",), actor=actor_nick, reason=reason)  # §9.1
            elif self.config.members_only and effective < Affiliation.MEMBER:
                self._remove(out, occ, codes=("321",), actor=actor_nick, reason=reason)  # §9.4
            else:
                if effective >= Affiliation.ADMIN:
                    occ.role = Role.MODERATOR
                elif old >= Affiliation.ADMIN:
                    occ.role = self._default_role(effective)
                elif effective >= Affiliation.MEMBER and occ.role == Role.VISITOR:
                    occ.role = Role.PARTICIPANT  # §5.1.3 note: members speak in moderated rooms
                self._announce(out, occ, reason=reason)
        if (
            new == Affiliation.MEMBER
            and old == Affiliation.NONE
            and self.config.members_only
            and not affected
        ):
            # §9.5: a new member of a members-only room is invited.
            out.send(self._invitation(jid, actor_bare, reason, None, None))

    def _set_role(
        self, out: Outcome, target: Occupant, role: Role, actor: Occupant | None, reason: str | None
    ) -> None:
        actor_nick = actor.nick if actor is not None else None
        if role == target.role:
            return
        if role == Role.NONE:
            self._remove(out, target, codes=("307",), actor=actor_nick, reason=reason)  # §8.2
            return
        target.role = role
        affiliation = self.affiliation_of(target.bare)
        if (
            self.config.moderated
            and affiliation < Affiliation.ADMIN
            and role in (Role.VISITOR, Role.PARTICIPANT)
        ):
            if role == self._default_role(affiliation):
                self.roles.pop(target.bare_str, None)
            else:
                self.roles[target.bare_str] = role
            out.save = True
        self._announce(out, target, nick=target.nick, reason=reason)

    def _rebuild_reserved(self) -> None:
        self._reserved = {
            nick_key(r.nick): k
            for k, r in self.affiliations.items()
            if r.nick and r.affiliation >= Affiliation.MEMBER
        }

    # -- owner commands (muc#owner, §10) ---------------------------------------------------------------
    def _require_owner(self, frm: JID) -> None:
        if self.affiliation_of(frm) != Affiliation.OWNER:
            raise StanzaError("forbidden", "only owners may do this")

    def owner_get(self, query: Element, frm: JID) -> Element:
        """§10.1.3, §10.2: the configuration form with the current values."""
        self._require_owner(frm)
        result = Element("query", MUC_OWNER)
        result.append(
            forms.config_form(
                self.name,
                self.config,
                self.list_affiliation(Affiliation.OWNER),
                self.list_affiliation(Affiliation.ADMIN),
                self.policy,
            )
        )
        return result

    def owner_set(self, query: Element, frm: JID, now: float) -> Outcome:
        """Configuration submit or cancel (§10.1.2, §10.1.3, §10.2) and destruction (§10.9)."""
        self._require_owner(frm)
        destroy = query.find("destroy", MUC_OWNER)
        if destroy is not None:
            alt = destroy.attrs.get("jid")
            if alt:
                try:
                    alt = str(JID.parse(alt))
                except JIDError:
                    raise StanzaError("jid-malformed", "the alternate venue is not a valid JID") from None
            return self.destroy(
                destroy.find_text("reason", MUC_OWNER), alt, destroy.find_text("password", MUC_OWNER)
            )
        x = query.find("x", DATA_FORMS)
        if x is None:
            raise StanzaError("bad-request", "expected a data form or <destroy/>")
        form = forms.read_form(x)
        if form.type == "cancel":
            if self.locked:
                return self.destroy(None, None, None)  # §10.1.3: cancelling creation destroys the room
            return Outcome()
        if form.type != "submit":
            raise StanzaError("bad-request", "submit or cancel the form")
        submission = forms.read_config(form, self.config, self.policy)
        out = Outcome(save=True)
        if submission.owners is not None and not submission.owners:
            raise StanzaError("not-acceptable", "a room needs at least one owner")
        self._apply_lists(out, submission, frm)
        old = self.config
        new = submission.config
        self.config = new
        if new.history_length != old.history_length:
            self.history = deque(self.history, maxlen=new.history_length)
        was_locked = self.locked
        self.locked = False  # §10.1.2/§10.1.3: configured, the room opens
        if new.members_only and not old.members_only:
            for occ in list(self.occupants.values()):
                if self.affiliation_of(occ.bare) < Affiliation.MEMBER:
                    self._remove(out, occ, codes=("322",))  # §10.2
        if old.moderated and not new.moderated:
            for occ in list(self.occupants.values()):
                if occ.role == Role.VISITOR:
                    occ.role = Role.PARTICIPANT
                    self._announce(out, occ)
            self.roles.clear()
        if not was_locked:
            self._notify_config(out, old, new)
        self._maybe_vanish(out)
        return out

    def _apply_lists(self, out: Outcome, submission: forms.ConfigSubmission, frm: JID) -> None:
        """muc#roomconfig_roomowners/roomadmins carry full lists (§10.2 footnote): apply the difference."""
        for wanted, affiliation in (
            (submission.owners, Affiliation.OWNER),
            (submission.admins, Affiliation.ADMIN),
        ):
            if wanted is None:
                continue
            current = set(self.list_affiliation(affiliation))
            for key in current - set(wanted):
                self._set_affiliation(out, JID.parse(key), Affiliation.NONE, None, None, None, frm.bare_str)
            for key in wanted:
                if key not in current:
                    self._set_affiliation(out, JID.parse(key), affiliation, None, None, None, frm.bare_str)

    def _notify_config(self, out: Outcome, old: RoomConfig, new: RoomConfig) -> None:
        """§10.2.1: status codes for privacy-relevant changes, 104 for any other."""
        codes: list[str] = []
        if new.enable_logging != old.enable_logging:
            codes.append("170" if new.enable_logging else "171")
        if new.non_anonymous != old.non_anonymous:
            codes.append("172" if new.non_anonymous else "173")
        if not codes and new != old:
            codes.append("104")
        if not codes:
            return
        msg = Element("message", CLIENT, {"type": "groupchat", "from": self.jid_str, "id": self.ids.token()})
        x = msg.add("x", MUC_USER)
        for code in codes:
            x.add("status", attrs={"code": code})
        out.broadcast(msg, self.all_sessions(), self.jid)

    def destroy(self, reason: str | None, alternate: str | None, password: str | None) -> Outcome:
        """§10.9: every occupant gets one unavailable presence with <destroy/>; the room is gone."""
        out = Outcome(destroyed=True, save=True)
        for occ in list(self.occupants.values()):
            d = Element("destroy", MUC_USER, {"jid": alternate} if alternate else None)
            if reason:
                d.add("reason", text=reason)
            if password:
                d.add("password", text=password)
            p = self._presence(
                occ,
                jid=None,
                type_="unavailable",
                payload=[],
                role=Role.NONE,
                affiliation=Affiliation.NONE,
                destroy=d,
                codes=("110",),
            )
            out.broadcast(p, list(occ.sessions), occ.jid)
            out.left.extend(occ.sessions)
        self.occupants.clear()
        self.sessions.clear()
        self._all = None
        self.destroyed = True
        return out

    def shutdown(self) -> Outcome:
        """XEP-0045 §12.2: the service is shutting down (status 332)."""
        out = Outcome()
        for occ in list(self.occupants.values()):
            p = self._presence(
                occ, jid=occ.primary, type_="unavailable", payload=[], role=Role.NONE, codes=("110", "332")
            )
            out.broadcast(p, list(occ.sessions), occ.jid)
            out.left.extend(occ.sessions)
        self.occupants.clear()
        self.sessions.clear()
        self._all = None
        self._maybe_vanish(out)
        return out

    # -- registration (§7.10) --------------------------------------------------------------------------
    def register_get(self, frm: JID) -> Element:
        query = Element("query", REGISTER)
        nick = self.reserved_nick(frm)
        affiliation = self.affiliation_of(frm)
        if affiliation >= Affiliation.MEMBER and nick:
            query.add("registered")
            query.add("username", text=nick)
            return query
        self._check_may_register(affiliation)
        query.append(forms.register_form(self.name))
        return query

    def _check_may_register(self, affiliation: Affiliation) -> None:
        if affiliation == Affiliation.OUTCAST:
            raise StanzaError("forbidden", "you are banned from this room")
        if self.config.members_only and affiliation < Affiliation.MEMBER:
            raise StanzaError("not-allowed", "membership of this room is granted by its admins")

    def register_set(self, query: Element, frm: JID, now: float) -> Outcome:
        """Registration reserves a nickname and makes the user a member (open rooms: at once)."""
        affiliation = self.affiliation_of(frm)
        out = Outcome()
        bare = frm.bare
        if query.find("remove", REGISTER) is not None:
            record = self.affiliations.get(bare.bare_str)
            if record is None or record.affiliation == Affiliation.OUTCAST:
                raise StanzaError("item-not-found", "you are not registered")
            if record.affiliation == Affiliation.OWNER and len(self.list_affiliation(Affiliation.OWNER)) == 1:
                raise StanzaError("conflict", "a room needs at least one owner")
            self._set_affiliation(out, bare, Affiliation.NONE, "", None, None, bare.bare_str)
            self._maybe_vanish(out)
            return out
        x = query.find("x", DATA_FORMS)
        if x is None:
            raise StanzaError("bad-request", "submit the registration form")
        form = forms.read_form(x)
        if form.type == "cancel":
            return out
        nick = (form.first("muc#register_roomnick") or "").strip()
        if form.type != "submit" or not nick:
            raise StanzaError("bad-request", "the form needs muc#register_roomnick")
        self._check_may_register(affiliation)
        try:
            nick = prepare_resource(nick)
        except JIDError:
            raise StanzaError("not-acceptable", "that nickname is not allowed") from None
        self._check_nick(nick)
        key = nick_key(nick)
        holder = self._reserved.get(key)
        in_use = self.occupants.get(key)
        if (holder is not None and holder != bare.bare_str) or (in_use is not None and in_use.bare != bare):
            raise StanzaError("conflict", "that nickname is registered by another user")
        new = max(self._stored_affiliation(bare), Affiliation.MEMBER)
        if bare.bare_str in self.policy.admins:
            record = self.affiliations.get(bare.bare_str)
            new = max(record.affiliation, Affiliation.MEMBER) if record is not None else Affiliation.MEMBER
        self._set_affiliation(out, bare, new, nick, None, None, bare.bare_str)
        return out

    # -- moderation (XEP-0425) --------------------------------------------------------------------------
    def moderate(self, moderate: Element, frm: JID, now: float, *, archived: bool = False) -> Outcome:
        """A moderator retracts a message: it leaves the history and every occupant is told.

        ``archived``: the room's archive holds that message (older than the history kept here); the
        archive then keeps a tombstone of it (XEP-0425 §5)."""
        actor = self._occupant_of(frm)
        if actor is None or actor.role != Role.MODERATOR:
            raise StanzaError("forbidden", "only moderators may moderate messages")
        if moderate.find("retract", RETRACT) is None:
            raise StanzaError("feature-not-implemented", "only retraction is supported")
        target_id = moderate.attrs.get("id")
        if not target_id:
            raise StanzaError("bad-request", "which message? (id)")
        entry = next((e for e in self.history if e.stanza_id == target_id), None)
        if entry is None and not archived:
            raise StanzaError("item-not-found", "no such message in this room")
        if entry is not None:
            self.history.remove(entry)
        reason = moderate.find_text("reason", MODERATE)
        msg = Element("message", CLIENT, {"type": "groupchat", "from": self.jid_str, "id": self.ids.token()})
        retract = msg.add("retract", RETRACT, {"id": target_id})
        moderated = retract.add("moderated", MODERATE, {"by": actor.jid_str})
        moderated.add("occupant-id", OCCUPANT_ID, {"id": actor.occupant_id})
        if reason:
            retract.add("reason", RETRACT, text=reason)
        msg.add("stanza-id", STANZA_ID, {"id": self.ids.stanza_id(now), "by": self.jid_str})
        out = Outcome()
        out.retracted.append(target_id)
        out.broadcast(msg, self.all_sessions(), self.jid)
        return out

    # -- archive access (XEP-0313 §6.1.2) ---------------------------------------------------------------
    def check_archive_access(self, frm: JID) -> None:
        """Who may read the archive: whoever may enter the room now (never outcasts; in members-only
        rooms members and up; in password-protected rooms occupants and members)."""
        if self.locked or self.destroyed:
            raise StanzaError("item-not-found", "no such room")
        if not self.config.archiving:
            raise StanzaError("feature-not-implemented", "this room keeps no archive")
        affiliation = self.affiliation_of(frm)
        if affiliation == Affiliation.OUTCAST:
            raise StanzaError("forbidden", "you are banned from this room")
        if affiliation >= Affiliation.MEMBER:
            return
        if self.config.members_only:
            raise StanzaError("forbidden", "only members may read this room's archive")
        if self.config.password_protected and self._occupant_of(frm) is None:
            raise StanzaError("not-authorized", "enter the room (with its password) to read its archive")

    def sees_real_jids(self, frm: JID) -> bool:
        """Whether ``frm`` may learn occupants' real JIDs (non-anonymous room, moderator, admin, owner)."""
        if self.config.non_anonymous or self.affiliation_of(frm) >= Affiliation.ADMIN:
            return True
        occ = self._occupant_of(frm)
        return occ is not None and occ.role == Role.MODERATOR

    # -- service discovery (§6.4, §6.5, §7.12) --------------------------------------------------------
    def features(self) -> list[str]:
        c = self.config
        return [
            *_ROOM_FEATURES,
            "muc_public" if c.public else "muc_hidden",
            "muc_persistent" if c.persistent else "muc_temporary",
            "muc_membersonly" if c.members_only else "muc_open",
            "muc_moderated" if c.moderated else "muc_unmoderated",
            "muc_nonanonymous" if c.non_anonymous else "muc_semianonymous",
            "muc_passwordprotected" if c.password_protected else "muc_unsecured",
            *((MAM, MAM_EXTENDED, FULLTEXT) if c.archiving else ()),
        ]

    def disco_info(self, node: str | None, frm: JID) -> Element:
        if node == ROOMUSER_NODE:
            query = Element("query", DISCO_INFO, {"node": node})
            nick = self.reserved_nick(frm)
            if nick:
                query.add("identity", attrs={"category": "conference", "type": "text", "name": nick})
            return query
        if node == MUC_TRAFFIC:
            raise StanzaError("service-unavailable", "this room relays every namespace")  # §18.1.1
        if node:
            raise StanzaError("item-not-found", "no such node")
        if self.locked and self.affiliation_of(frm) != Affiliation.OWNER:
            raise StanzaError("item-not-found", "no such room")
        query = Element("query", DISCO_INFO)
        query.add(
            "identity",
            attrs={"category": "conference", "type": "text", "name": self.config.name or self.name},
        )
        for feature in sorted(set(self.features())):
            query.add("feature", attrs={"var": feature})
        contacts = self.list_affiliation(Affiliation.OWNER) if self.config.non_anonymous else []
        subject = self.subject.text if self.subject is not None and self.config.public else None
        query.append(
            forms.info_form(
                config=self.config, occupants=len(self.occupants), subject=subject, contacts=contacts
            )
        )
        return query

    def disco_items(self, node: str | None, frm: JID) -> Element:
        """§6.5: occupants are not listed (the advised default)."""
        if node:
            raise StanzaError("item-not-found", "no such node")
        return Element("query", DISCO_ITEMS)

    # -- persistence ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        subject = None
        if self.subject is not None:
            s = self.subject
            subject = {"text": s.text, "nick": s.nick, "time": s.time, "occupant_id": s.occupant_id}
        return {
            "v": 1,
            "config": self.config.to_json(),
            "affiliations": {
                k: {"affiliation": r.affiliation.label, "nick": r.nick, "reason": r.reason}
                for k, r in sorted(self.affiliations.items())
            },
            "roles": {k: r.label for k, r in sorted(self.roles.items())},
            "subject": subject,
            "secret": self.secret.hex(),
            "created": self.created,
            "creator": self.creator,
        }

    @classmethod
    def from_json(
        cls, jid: JID, policy: ServicePolicy, doc: dict[str, Any], ids: IdGenerator | None = None
    ) -> Room:
        config = RoomConfig.from_json(doc.get("config") or {})
        config = replace(
            config,
            max_users=min(config.max_users, policy.max_occupants),
            history_length=min(config.history_length, policy.max_history),
        )
        room = cls(
            jid,
            policy,
            config=config,
            secret=bytes.fromhex(doc["secret"]),
            created=doc.get("created", 0.0),
            ids=ids,
            creator=doc.get("creator"),
        )
        for key, value in (doc.get("affiliations") or {}).items():
            room.affiliations[key] = AffiliationRecord(
                Affiliation.parse(value["affiliation"]), value.get("nick"), value.get("reason")
            )
        for key, value in (doc.get("roles") or {}).items():
            room.roles[key] = Role.parse(value)
        s = doc.get("subject")
        if s:
            room.subject = Subject(s["text"], s.get("nick"), s.get("time"), s.get("occupant_id"))
        room._rebuild_reserved()
        return room

    def iter_occupants(self) -> Iterator[Occupant]:
        return iter(self.occupants.values())


def _int_attr(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None
