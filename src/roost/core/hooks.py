"""Hook names, each beside its payload type. Hooking a name not declared here fails at load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from roost.jid import JID
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.session import Session


@dataclass(slots=True)
class StanzaEvent:
    """A stanza being routed. ``origin`` is the local session it came from (None: from the server,
    a module, or a remote peer). ``to``/``frm`` are the parsed addresses (``frm`` is stamped)."""

    stanza: Element
    origin: Session | None
    to: JID
    frm: JID


# -- stanza delivery: fire() chains, first handler returning True claims the stanza ---------------------
#: Stanzas addressed to a local account's bare JID (RFC 6120 §10.5.3, RFC 6121 §8.5.2).
MESSAGE_BARE: Final = "message/bare"
PRESENCE_BARE: Final = "presence/bare"
IQ_BARE: Final = "iq/bare"
#: Stanzas addressed to a full JID of a local account (whether or not that resource is online).
MESSAGE_FULL: Final = "message/full"
PRESENCE_FULL: Final = "presence/full"
IQ_FULL: Final = "iq/full"
#: Stanzas addressed to a served domain itself.
MESSAGE_HOST: Final = "message/host"
PRESENCE_HOST: Final = "presence/host"

# -- filters: fold() over a StanzaEvent; return it (or a replacement) or None to drop -------------------
#: Stanzas sent by a local session, before routing (carbons, blocking, archiving, privacy).
PRE_MESSAGE: Final = "pre/message"
PRE_PRESENCE: Final = "pre/presence"
PRE_IQ: Final = "pre/iq"
#: Stanzas about to be written to a local session (blocking of inbound stanzas, carbons, CSI).
DELIVER_MESSAGE: Final = "deliver/message"
DELIVER_PRESENCE: Final = "deliver/presence"
DELIVER_IQ: Final = "deliver/iq"


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A session was bound (it has a full JID) or closed."""

    session: Session
    #: Why a session ended: "logout", "disconnect", "replaced", "shutdown", "timeout", "error".
    reason: str = ""


SESSION_BOUND: Final = "session/bound"
SESSION_CLOSED: Final = "session/closed"
#: Fired by the presence module when a session becomes available with priority >= 0 and was not
#: before: its initial presence, or a later one raising a negative priority (XEP-0160: offline
#: messages are delivered then). Payload: SessionEvent.
PRESENCE_INITIAL: Final = "presence/initial"


@dataclass(frozen=True, slots=True)
class UserEvent:
    """An account was created or deleted."""

    domain: str
    username: str


USER_CREATED: Final = "user/created"
USER_DELETED: Final = "user/deleted"


@dataclass(slots=True)
class RegisterEvent:
    """An in-band registration IQ on a c2s stream before authentication (XEP-0077 §3.1.1).

    The handler that claims it sets ``reply`` (the IQ result or error to write). ``session`` is the
    connection, not yet bound (no JID); its ``data`` may hold per-connection state. ``peer`` is the
    client's IP address ("" if unknown), for rate limits.
    """

    session: Session
    iq: Element
    domain: str
    peer: str
    reply: Element | None = None


#: Fired on the stream's host; a module handling it makes c2s streams offer registration there.
C2S_REGISTER: Final = "c2s/register"


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """The server started or is stopping."""


SERVER_STARTED: Final = "server/started"
SERVER_STOPPING: Final = "server/stopping"


@dataclass(slots=True)
class DiscoInfoEvent:
    """Building a disco#info answer for ``target`` (node ``node``): handlers add to it."""

    target: JID
    node: str | None
    requester: JID
    identities: list[tuple[str, str, str | None]]
    features: set[str]
    forms: list[Element]


@dataclass(slots=True)
class DiscoItemsEvent:
    """Building a disco#items answer for ``target``: handlers append (jid, node, name) items."""

    target: JID
    node: str | None
    requester: JID
    items: list[tuple[str, str | None, str | None]]


DISCO_INFO_ACCOUNT: Final = "disco/info/account"
DISCO_ITEMS_HOST: Final = "disco/items/host"
DISCO_ITEMS_ACCOUNT: Final = "disco/items/account"

ALL: Final = frozenset(
    {
        MESSAGE_BARE,
        PRESENCE_BARE,
        IQ_BARE,
        MESSAGE_FULL,
        PRESENCE_FULL,
        IQ_FULL,
        MESSAGE_HOST,
        PRESENCE_HOST,
        PRE_MESSAGE,
        PRE_PRESENCE,
        PRE_IQ,
        DELIVER_MESSAGE,
        DELIVER_PRESENCE,
        DELIVER_IQ,
        SESSION_BOUND,
        SESSION_CLOSED,
        PRESENCE_INITIAL,
        USER_CREATED,
        USER_DELETED,
        SERVER_STARTED,
        SERVER_STOPPING,
        DISCO_INFO_ACCOUNT,
        DISCO_ITEMS_HOST,
        DISCO_ITEMS_ACCOUNT,
        C2S_REGISTER,
    }
)
