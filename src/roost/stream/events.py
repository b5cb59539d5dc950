"""Events a stream hands its driver where negotiation needs I/O (a handshake, storage, the session
table). The driver answers through the stream (for c2s: :class:`roost.stream.c2s.C2SStream`)."""

from __future__ import annotations

from dataclasses import dataclass

from roost.jid import JID
from roost.stream.core import Closed, Established, Event, Opened, StreamEvent
from roost.xml.element import Element

__all__ = [
    "AuthFailed",
    "Authenticated",
    "Bound",
    "Closed",
    "Established",
    "Event",
    "NeedBind",
    "NeedCredentials",
    "NeedTls",
    "Opened",
    "RegisterRequest",
    "StreamEvent",
]


@dataclass(frozen=True, slots=True)
class NeedTls(Event):
    """Start the TLS handshake on the transport now, then call ``tls_established`` on the stream.

    Receiving role: we said ``<proceed/>``; initiating role: the peer did.
    """


@dataclass(frozen=True, slots=True)
class NeedCredentials(Event):
    """Look up the account's keys for ``hash_name`` and call ``credentials`` on the stream.

    ``password`` is set for PLAIN: the driver verifies it against the keys off the event loop and
    passes the result as ``password_ok``.
    """

    domain: str
    username: str
    hash_name: str
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Authenticated(Event):
    """SASL succeeded for ``username``@``domain`` with ``mechanism``."""

    domain: str
    username: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFailed(Event):
    """A SASL attempt failed (for logging and metrics; the stream already answered)."""

    username: str | None
    condition: str
    #: The mechanism tried ("" if none was chosen yet).
    mechanism: str = ""


@dataclass(frozen=True, slots=True)
class NeedBind(Event):
    """Bind a resource (``None``: server-generated) and call ``bound`` or ``bind_failed``."""

    resource: str | None


@dataclass(frozen=True, slots=True)
class Bound(Event):
    """Initiating role: the server bound our resource; ``jid`` is the full JID."""

    jid: JID


@dataclass(frozen=True, slots=True)
class RegisterRequest(Event):
    """A ``jabber:iq:register`` IQ before authentication (XEP-0077 §3.1.1) for ``domain``.

    Further input is held until the driver answers with ``register_reply``.
    """

    iq: Element
    domain: str
