"""A client session, apart from the connection that carries it.

A :class:`ClientSession` owns what the core and the modules know of a logged-in client — the full
JID, presence fields, per-module data — and the two ordered paths of its stanzas:

* **in**: :meth:`ClientSession.receive` hands each stanza the client sent to the router, in order
  (RFC 6120 §10.1): while one waits for storage, the ones behind it queue (bounded; past the bound
  the connection stops reading), and a failure of one never strands or reorders the others.
* **out**: :meth:`ClientSession.send` is the one exit of every stanza to the client. Stream
  management (XEP-0198) counts and keeps stanzas here (``sm``), client state indication (XEP-0352)
  may hold them here (``csi``), and the connection serializes and writes what passes.

The connection (TCP, WebSocket, BOSH: :class:`~roost.core.connection.Connection`) may go away while
the session stays (``DETACHED``, for stream-management resumption) and a new one may be attached.
Only the :class:`~roost.core.sessions.SessionManager` binds sessions and fires their bound/closed
events.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.util.logging import SessionLogger, bind_conn_id
from roost.xml.element import Element
from roost.xml.serializer import serialize

if TYPE_CHECKING:
    from roost.core.connection import Connection
    from roost.core.server import Server
    from roost.stream.features.sasl2 import UserAgent

_ids = itertools.count(1)


def new_session_id(kind: str) -> str:
    """Short, unique-per-process connection ids for logs (``c2s-1f``)."""
    return f"{kind}-{next(_ids):x}"


class SessionState(enum.Enum):
    """Where a client session is in its life."""

    #: Connected, negotiating the stream (TLS, SASL, bind): not in the session table yet.
    NEGOTIATING = "negotiating"
    #: Bound to a full JID, with a connection.
    BOUND = "bound"
    #: Bound, but its connection is gone; kept for stream-management resumption.
    DETACHED = "detached"
    #: Over: unbound, its closed event fired.
    CLOSED = "closed"


class StanzaExit(Protocol):
    """Something that sees every stanza on its way to the client (XEP-0198, XEP-0352)."""

    def on_send(self, session: ClientSession, stanza: Element) -> bool:
        """Return True if the stanza is taken (held or dropped) and must not be written now."""
        ...


class Closer(Protocol):
    """Ends the stream of a session's connection (the c2s driver)."""

    def close(self, error: StreamError | None = None, reason: str = "logout") -> None: ...


class ClientSession:
    """One client session (one full JID once bound), whatever carries it."""

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_busy",
        "_paused",
        "available",
        "bound_at",
        "closer",
        "connected_at",
        "connection",
        "csi",
        "data",
        "delivery_queue",
        "id",
        "interested",
        "jid",
        "jid_str",
        "last_received",
        "log",
        "max_backlog",
        "presence",
        "priority",
        "server",
        "sm",
        "state",
        "user_agent",
    )

    def __init__(self, server: Server, session_id: str, connection: Connection | None = None) -> None:
        self.server = server
        self.id = session_id
        self.log = SessionLogger(logging.getLogger("roost.session"), session_id)
        self.state = SessionState.NEGOTIATING
        self.connection = connection
        #: Ends the stream of the current connection (set by the c2s driver; None when detached).
        self.closer: Closer | None = None
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
        self.connected_at = time.monotonic()
        self.bound_at = 0.0
        self.last_received = time.monotonic()
        #: Per-session state of modules (keyed by module name), e.g. carbons enabled.
        self.data: dict[str, Any] = {}
        #: Stream management (XEP-0198) of this session, when the client enabled it.
        self.sm: StanzaExit | None = None
        #: The SASL2 <user-agent/> (XEP-0388 §2.3) the client logged in with, if any.
        self.user_agent: UserAgent | None = None
        #: Client state indication (XEP-0352) while the client is inactive.
        self.csi: StanzaExit | None = None
        self.max_backlog = server.config.c2s.max_backlog
        self._busy = False
        self._paused = False
        #: Stanzas from the client waiting behind one that awaits storage (RFC 6120 §10.1).
        self._backlog: deque[Element | Callable[[], None] | Awaitable[object]] = deque()
        #: Stanzas to the client waiting behind one whose delivery filters await storage (the
        #: router keeps them in order; None while nothing waits).
        self.delivery_queue: deque[Any] | None = None

    # -- identity -------------------------------------------------------------------------------------
    def bind(self, jid: JID) -> None:
        """Called by the session manager."""
        self.jid = jid
        self.jid_str = str(jid)
        self.bound_at = time.time()
        self.state = SessionState.BOUND

    @property
    def bound(self) -> bool:
        return self.state is SessionState.BOUND or self.state is SessionState.DETACHED

    @property
    def peer(self) -> str:
        """The client's address ("" when detached or unknown)."""
        connection = self.connection
        return connection.peer if connection is not None else ""

    @property
    def transport(self) -> str:
        """What carries the session now: "tcp", "tls", "websocket", "bosh" or "detached"."""
        connection = self.connection
        return connection.kind if connection is not None else "detached"

    # -- out: the one exit ---------------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        """Write one stanza to the client (serialized once, batched per event-loop turn)."""
        if self.state is SessionState.CLOSED:
            self.server.sessions.undeliverable(self, stanza)
            return
        csi = self.csi
        if csi is not None and csi.on_send(self, stanza):
            return
        sm = self.sm
        if sm is not None and sm.on_send(self, stanza):
            return
        connection = self.connection
        if connection is not None:
            connection.send_stanza(serialize(stanza, connection.stanza_ns).encode())

    def raw_exit(self) -> Connection | None:
        """The connection, when a pre-serialized stanza may go straight to it: nothing at the exit
        needs the element (no stream management, no held CSI state). Fan-out uses it to serialize a
        stanza once for many recipients."""
        if self.sm is None and self.csi is None and self.state is SessionState.BOUND:
            return self.connection
        return None

    # -- in: the ordered queue -------------------------------------------------------------------------
    def receive(self, stanza: Element) -> None:
        """A stanza from the client: routed now, or queued behind one that is still being handled.

        (Liveness, ``last_received``, is the connection's business: the driver stamps it once per read.)
        """
        if self._busy:
            self._queue(stanza)
            return
        stats = self.server.route_stats
        try:
            if stats is None:
                pending = self.server.router.process(self, stanza)
            else:  # metrics on: how long routing takes (the synchronous part; the rest in _drain)
                started = time.perf_counter()
                pending = self.server.router.process(self, stanza)
                stats.observe(time.perf_counter() - started)
        except Exception:
            self.log.exception("stanza processing failed")
            return
        if pending is not None:
            self._busy = True
            self.server.spawn(self._drain(pending), f"{self.id}-stanza")

    def after_pending(self, action: Callable[[], None]) -> None:
        """Run ``action`` once every stanza received so far is handled (a stream close, RFC 6120 §4.4)."""
        if self._busy:
            self._queue(action)
        else:
            action()

    def hold(self, pending: Awaitable[object]) -> None:
        """Hold the client's stanzas until ``pending`` is done (e.g. the bound event's handlers)."""
        if self._busy:
            self._queue(pending)
            return
        self._busy = True
        self.server.spawn(self._drain(pending), f"{self.id}-hold")

    @property
    def busy(self) -> bool:
        return self._busy

    def _queue(self, item: Element | Callable[[], None] | Awaitable[object]) -> None:
        self._backlog.append(item)
        if len(self._backlog) >= self.max_backlog and not self._paused:
            connection = self.connection
            if connection is not None:
                self._paused = True
                pause = getattr(connection, "pause_reading", None)
                if pause is not None:
                    pause()

    async def _drain(self, pending: Awaitable[object]) -> None:
        """Finish one stanza's async work, then handle the ones that queued behind it, in order.

        Each stanza's failure is its own: it is logged and the next one goes on (the router has
        already answered it with an error where one was due).
        """
        router = self.server.router
        with bind_conn_id(self.id):
            try:
                await pending
            except Exception:
                self.log.exception("stanza processing failed")
            try:
                while self._backlog and self.state is not SessionState.CLOSED:
                    item = self._backlog.popleft()
                    try:
                        if isinstance(item, Element):
                            nxt = router.process(self, item)
                            if nxt is not None:
                                await nxt
                        elif callable(item):
                            item()
                        else:
                            await item
                    except Exception:
                        self.log.exception("stanza processing failed")
            finally:
                self._busy = False
                if self.state is SessionState.CLOSED:
                    self._backlog.clear()
                if self._paused:
                    self._paused = False
                    connection = self.connection
                    resume = getattr(connection, "resume_reading", None) if connection is not None else None
                    if resume is not None:
                        resume()

    # -- the end ----------------------------------------------------------------------------------------
    def close(self, error: StreamError | None = None, reason: str = "logout") -> None:
        """End the session: its stream (with ``error`` if given) and the session itself."""
        if self.state is SessionState.CLOSED:
            return
        closer = self.closer
        if closer is not None:
            closer.close(error, reason)
        else:
            self.server.sessions.end(self, reason)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.id} {self.jid_str} {self.state.value}>"


#: The name modules have always used.
Session = ClientSession
