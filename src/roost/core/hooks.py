"""Hooks: typed event names, each beside its payload type.

Two kinds, told apart by type so a handler cannot be attached to the wrong one:

* :class:`FireHook` — handlers run by priority until one claims the event (returns True).
* :class:`FoldHook` — filters pass a value along; each returns it (or a replacement) or None to drop.

Either kind of handler may return an awaitable when, this time, it has to wait (storage): the chain
then continues after it, in order. Core hooks are declared here; a module declares its own the same
way, in its own file (``NOTIFY = FireHook[Notification]("pubsub/notify")``): declaring registers the
name, and hooking a name nobody declared fails at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Generic, TypeVar

from roost.jid import JID
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.session import ClientSession as Session

T = TypeVar("T")


class Hook(Generic[T]):
    """A declared event name carrying payloads of type ``T``."""

    __slots__ = ("name",)
    name: str
    registry: ClassVar[dict[str, Hook[object]]] = {}
    kind: ClassVar[str] = ""

    def __new__(cls, name: str) -> Hook[T]:
        # One object per name (declaring it again gives the same one), so the bus can key by identity.
        existing = Hook.registry.get(name)
        if existing is not None:
            if type(existing) is not cls:
                raise ValueError(f"hook {name!r} is already declared as a {existing.kind} hook")
            return existing
        hook = super().__new__(cls)
        hook.name = name
        Hook.registry[name] = hook  # type: ignore[assignment]
        return hook

    # Compared and hashed by identity (one object per name): the bus looks hooks up on the hot path.

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FireHook(Hook[T]):
    """Handlers by priority; the first returning True claims the event."""

    __slots__ = ()
    kind = "fire"


class FoldHook(Hook[T]):
    """Filters by priority; each returns the value (or a replacement) or None to drop it."""

    __slots__ = ()
    kind = "fold"


def lookup(name: str | Hook[object]) -> Hook[object]:
    """The declared hook of this name; KeyError for a name nobody declared."""
    if isinstance(name, Hook):
        return name
    found = Hook.registry.get(name)
    if found is None:
        raise KeyError(f"unknown hook {name!r}; declare it with FireHook/FoldHook (see roost.core.hooks)")
    return found


class Origin:
    """Where a routed stanza came from (``StanzaEvent.origin_kind``)."""

    CLIENT: Final = "client"  #: a local client session (``origin`` is it)
    REMOTE: Final = "remote"  #: a remote link: s2s or component (``from`` checked, not stamped)
    INTERNAL: Final = "internal"  #: the server or a module


@dataclass(slots=True)
class StanzaEvent:
    """A stanza being routed. ``origin`` is the local session it came from (None: from the server,
    a module, or a remote peer — ``origin_kind`` tells which). ``to``/``frm`` are the parsed
    addresses (``frm`` is stamped for local clients)."""

    stanza: Element
    origin: Session | None
    to: JID
    frm: JID
    #: :class:`Origin`: CLIENT (``origin`` is the session), REMOTE or INTERNAL.
    origin_kind: str = Origin.INTERNAL


# -- stanza delivery: fire() chains, first handler returning True claims the stanza ---------------------
#: Stanzas addressed to a local account's bare JID (RFC 6120 §10.5.3, RFC 6121 §8.5.2).
MESSAGE_BARE: Final = FireHook[StanzaEvent]("message/bare")
PRESENCE_BARE: Final = FireHook[StanzaEvent]("presence/bare")
IQ_BARE: Final = FireHook[StanzaEvent]("iq/bare")
#: Stanzas addressed to a full JID of a local account (whether or not that resource is online).
MESSAGE_FULL: Final = FireHook[StanzaEvent]("message/full")
PRESENCE_FULL: Final = FireHook[StanzaEvent]("presence/full")
IQ_FULL: Final = FireHook[StanzaEvent]("iq/full")
#: Stanzas addressed to a served domain itself.
MESSAGE_HOST: Final = FireHook[StanzaEvent]("message/host")
PRESENCE_HOST: Final = FireHook[StanzaEvent]("presence/host")

#: What the ``deliver/*`` filters pass along: the session a stanza is about to be written to, and it.
Delivery = tuple["Session", StanzaEvent]

# -- filters: fold() over a StanzaEvent; return it (or a replacement) or None to drop -------------------
#: Stanzas sent by a local session, before routing (carbons, blocking, archiving, privacy).
PRE_MESSAGE: Final = FoldHook[StanzaEvent]("pre/message")
PRE_PRESENCE: Final = FoldHook[StanzaEvent]("pre/presence")
PRE_IQ: Final = FoldHook[StanzaEvent]("pre/iq")
#: Stanzas about to be written to a local session (blocking of inbound stanzas, carbons, CSI).
DELIVER_MESSAGE: Final = FoldHook[Delivery]("deliver/message")
DELIVER_PRESENCE: Final = FoldHook[Delivery]("deliver/presence")
DELIVER_IQ: Final = FoldHook[Delivery]("deliver/iq")


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A session was bound (it has a full JID) or closed."""

    session: Session
    #: Why a session ended: "logout", "disconnect", "replaced", "shutdown", "timeout", "error".
    reason: str = ""


SESSION_BOUND: Final = FireHook[SessionEvent]("session/bound")
SESSION_CLOSED: Final = FireHook[SessionEvent]("session/closed")
#: Fired by the presence module when a session becomes available with priority >= 0 and was not
#: before: its initial presence, or a later one raising a negative priority (XEP-0160: offline
#: messages are delivered then). Payload: SessionEvent.
PRESENCE_INITIAL: Final = FireHook[SessionEvent]("presence/initial")


@dataclass(frozen=True, slots=True)
class UserEvent:
    """An account was created or deleted."""

    domain: str
    username: str


USER_CREATED: Final = FireHook[UserEvent]("user/created")
USER_DELETED: Final = FireHook[UserEvent]("user/deleted")


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
C2S_REGISTER: Final = FireHook[RegisterEvent]("c2s/register")


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """The server started or is stopping."""


SERVER_STARTED: Final = FireHook[ServerEvent]("server/started")
SERVER_STOPPING: Final = FireHook[ServerEvent]("server/stopping")


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


DISCO_INFO_ACCOUNT: Final = FireHook[DiscoInfoEvent]("disco/info/account")
DISCO_ITEMS_HOST: Final = FireHook[DiscoItemsEvent]("disco/items/host")
DISCO_ITEMS_ACCOUNT: Final = FireHook[DiscoItemsEvent]("disco/items/account")
