"""Value types of the MUC engine: roles, affiliations, room configuration and service policy (pure).

Kept apart from ``room.py`` so that ``forms.py`` (data forms) and ``room.py`` (the engine) can both
use them without importing each other.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

# -- namespaces (XEP-0045 §17, XEP-0421, XEP-0425, XEP-0424, XEP-0410, XEP-0077) ------------------------
MUC: Final = "http://jabber.org/protocol/muc"
MUC_USER: Final = "http://jabber.org/protocol/muc#user"
MUC_ADMIN: Final = "http://jabber.org/protocol/muc#admin"
MUC_OWNER: Final = "http://jabber.org/protocol/muc#owner"
MUC_ROOMCONFIG: Final = "http://jabber.org/protocol/muc#roomconfig"
MUC_ROOMINFO: Final = "http://jabber.org/protocol/muc#roominfo"
MUC_REQUEST: Final = "http://jabber.org/protocol/muc#request"
MUC_REGISTER: Final = "http://jabber.org/protocol/muc#register"
MUC_STABLE_ID: Final = "http://jabber.org/protocol/muc#stable_id"
MUC_SELF_PING: Final = "http://jabber.org/protocol/muc#self-ping-optimization"
MUC_TRAFFIC: Final = "http://jabber.org/protocol/muc#traffic"
ROOMUSER_NODE: Final = "x-roomuser-item"
OCCUPANT_ID: Final = "urn:xmpp:occupant-id:0"
MODERATE: Final = "urn:xmpp:message-moderate:1"
RETRACT: Final = "urn:xmpp:message-retract:1"
REGISTER: Final = "jabber:iq:register"
VCARD: Final = "vcard-temp"
HINTS: Final = "urn:xmpp:hints"
CONFERENCE: Final = "jabber:x:conference"
MAM: Final = "urn:xmpp:mam:2"  # XEP-0313 room archives
MAM_EXTENDED: Final = "urn:xmpp:mam:2#extended"
FULLTEXT: Final = "urn:xmpp:fulltext:0"  # XEP-0431


class Role(enum.IntEnum):
    """XEP-0045 §5.1 roles, ordered by privilege (a role has every privilege of the ones below)."""

    NONE = 0
    VISITOR = 1
    PARTICIPANT = 2
    MODERATOR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str | None) -> Role:
        """The role named ``text``; ValueError for anything else."""
        try:
            return cls[(text or "").upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}") from None


class Affiliation(enum.IntEnum):
    """XEP-0045 §5.2 affiliations, ordered by privilege (outcast lowest)."""

    OUTCAST = 0
    NONE = 1
    MEMBER = 2
    ADMIN = 3
    OWNER = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str | None) -> Affiliation:
        try:
            return cls[(text or "").upper()]
        except KeyError:
            raise ValueError(f"unknown affiliation {text!r}") from None


ALL_ROLES: Final = frozenset((Role.MODERATOR, Role.PARTICIPANT, Role.VISITOR))
ALLOW_PM_VALUES: Final = ("anyone", "participants", "moderators", "none")
WHOIS_VALUES: Final = ("moderators", "anyone")


def nick_key(nick: str) -> str:
    """The form under which two nicknames clash (XEP-0045 §7.2.9 leaves the rule to us).

    NFKC plus case folding: "Romeo", "ROMEO" and "Ｒｏｍｅｏ" are one nickname, so nobody can
    impersonate an occupant with a look-alike spelling of the same letters (§20.6 item 7).
    """
    return unicodedata.normalize("NFKC", nick).casefold()


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """A room's configuration (the muc#roomconfig form, §10.2 and §15.5.3)."""

    name: str = ""
    description: str = ""
    lang: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password_protected: bool = False
    password: str = ""
    #: "moderators" (semi-anonymous) or "anyone" (non-anonymous).
    whois: str = "moderators"
    #: Who may send private messages: "anyone", "participants", "moderators" or "none".
    allow_pm: str = "anyone"
    #: Members-only rooms: whether members (not only admins) may invite, adding the invitee as member.
    allow_invites: bool = False
    #: Whether participants (not only moderators) may change the subject.
    change_subject: bool = False
    max_users: int = 200
    presence_broadcast: frozenset[Role] = field(default=ALL_ROLES)
    get_member_list: frozenset[Role] = field(default=ALL_ROLES)
    #: Public logging (XEP-0045 §7.2.12, status 170); the archive (MAM) uses it.
    enable_logging: bool = False
    #: Messages kept for discussion history on join (§7.2.13).
    history_length: int = 20
    #: Message archive (XEP-0313) on the room's JID, on by default; only persistent rooms keep one
    #: (a temporary room's archive would go with the room).
    mam: bool = True

    @property
    def archiving(self) -> bool:
        return self.persistent and self.mam

    @property
    def non_anonymous(self) -> bool:
        return self.whois == "anyone"

    def pm_allowed(self, role: Role) -> bool:
        """Whether an occupant with ``role`` may send private messages (muc#roomconfig_allowpm)."""
        allow = self.allow_pm
        if allow == "anyone":
            return role >= Role.VISITOR
        if allow == "participants":
            return role >= Role.PARTICIPANT
        if allow == "moderators":
            return role >= Role.MODERATOR
        return False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, frozenset):
                value = sorted(r.label for r in value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RoomConfig:
        """Rebuild from :meth:`to_json`; unknown keys are ignored, missing ones take defaults."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key not in known:
                continue
            if key in ("presence_broadcast", "get_member_list"):
                value = frozenset(Role.parse(v) for v in value)
            values[key] = value
        return replace(cls(), **values)


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """Service-wide limits and rules every room of one MUC service shares."""

    #: Bare JIDs of server administrators: they have owner privileges in every room.
    admins: frozenset[str] = frozenset()
    #: Hard cap on a room's muc#roomconfig_maxusers.
    max_occupants: int = 1000
    #: muc#roomconfig_maxusers of new rooms.
    default_max_occupants: int = 200
    #: Extra places beyond maxusers kept for admins and owners (§7.2.10).
    admin_headroom: int = 10
    #: Token bucket per occupant: stanzas per second refilled, and the bucket size.
    message_rate: float = 2.0
    message_burst: float = 10.0
    #: Longest <body/> (in characters) a room relays.
    max_body_chars: int = 10_000
    #: Longest room nickname (characters).
    max_nick_chars: int = 128
    default_history: int = 20
    max_history: int = 100
    #: IQs relayed between occupants and awaiting their response, per room.
    max_pending_iqs: int = 256
    #: Seconds a relayed IQ may wait for its response.
    iq_timeout: float = 120.0
    #: Longest subject, room name and description (characters).
    max_text_chars: int = 1000
