"""What the core knows of a connected, bound client session, whatever its transport.

Transports (TCP, later WebSocket and BOSH) subclass :class:`Session` and implement :meth:`write`
and :meth:`close`. Everything routing needs — the full JID, availability, priority, the last
presence — lives here, so modules never depend on a transport.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.util.logging import SessionLogger
from roost.xml.element import Element
from roost.xml.ns import CLIENT
from roost.xml.serializer import serialize

if TYPE_CHECKING:
    from roost.core.server import Server

_ids = itertools.count(1)


def new_session_id(kind: str) -> str:
    """Short, unique-per-process connection ids for logs (``c2s-1f``)."""
    return f"{kind}-{next(_ids):x}"


class Session:
    """A bound client session (one full JID)."""

    #: Sessions are compared by identity; they are dictionary keys in several places.
    __slots__ = (
        "__weakref__",
        "available",
        "bound_at",
        "data",
        "id",
        "interested",
        "jid",
        "jid_str",
        "last_received",
        "log",
        "presence",
        "priority",
        "server",
    )

    def __init__(self, server: Server, session_id: str) -> None:
        self.server = server
        self.id = session_id
        self.log = SessionLogger(logging.getLogger("roost.session"), session_id)
        self.jid: JID = JID(None, "invalid", prepared=True)
        self.jid_str = ""
        #: Sent available presence (RFC 6121 §4.2) and not since unavailable.
        self.available = False
        #: Has requested the roster (RFC 6121 §2.1.3 "interested resource").
        self.interested = False
        #: Priority of the last available presence (RFC 6121 §4.7.2.3), 0 by default.
        self.priority = 0
        #: Last available presence broadcast by this session (answers probes).
        self.presence: Element | None = None
        self.bound_at = 0.0
        self.last_received = time.monotonic()
        #: Per-session state of modules (keyed by module name), e.g. carbons enabled.
        self.data: dict[str, Any] = {}

    def bind(self, jid: JID) -> None:
        self.jid = jid
        self.jid_str = str(jid)
        self.bound_at = time.time()

    def send(self, stanza: Element) -> None:
        """Serialize once and queue for writing (batched per event-loop turn)."""
        self.write(serialize(stanza, CLIENT).encode())

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self, error: StreamError | None = None, reason: str = "logout") -> None:
        """End the session's stream (with a stream error if given)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.id} {self.jid_str}>"
