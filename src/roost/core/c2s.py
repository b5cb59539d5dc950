"""The c2s driver: answers a client stream's events for every transport.

A transport (TCP, WebSocket, BOSH) owns the socket and implements
:class:`~roost.core.connection.Connection`; it feeds what it reads to :meth:`C2SDriver.receive_data`
and reports the end with :meth:`C2SDriver.connection_lost`. The driver runs the sans-IO stream
(:class:`~roost.stream.c2s.C2SStream`) and carries out what it asks for — TLS, credential lookup,
in-band registration, binding — and hands stanzas to the :class:`ClientSession` it created, which
keeps them in order and routes them. The session manager binds the session and announces it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from roost.admin.locks import lock_reason
from roost.admin.metrics import observe_login
from roost.core import hooks, sasl2, sm
from roost.core.session import ClientSession, SessionState, new_session_id
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError, StreamError
from roost.stream.c2s import (
    Authenticated,
    AuthFailed,
    C2SStream,
    Closed,
    NeedBind,
    NeedCredentials,
    NeedTls,
    NeedToken,
    NeedUpgrades,
    RegisterRequest,
    Sasl2Login,
    StoreUpgrade,
    StreamEvent,
)
from roost.stream.csi import ClientState
from roost.stream.sasl.plain import verify_password
from roost.stream.sasl.scram import ScramCredentials
from roost.stream.sm import MASK, SMALL, AckNonza, EnableRequested, ResumeRequested, StreamManagement
from roost.util.logging import READING, bind_conn_id, reading
from roost.xml.element import Element

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from roost.core.connection import Connection
    from roost.core.server import Server
    from roost.xml.parser import ParseEvent


class _Gone:
    """The connection of a driver whose transport has gone: writes go nowhere."""

    kind = "gone"
    peer = ""
    stanza_ns: str | None = None
    secure = False

    def send_stanza(self, data: bytes) -> None:
        pass

    def send_raw(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def start_tls(self) -> None:
        pass


GONE = _Gone()


class TlsStarter(Protocol):
    """A connection that can switch to TLS in place (STARTTLS on TCP)."""

    def start_tls(self) -> None: ...


class C2SDriver:
    """One client connection's stream, from the first byte to the close."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "auth_done",
        "connection",
        "peer_closed",
        "ping_sent_at",
        "server",
        "session",
        "sm",
        "stream",
    )

    def __init__(self, server: Server, connection: Connection, stream: C2SStream) -> None:
        self.server = server
        self.connection: Connection = connection
        self.stream = stream
        self.session = ClientSession(server, new_session_id("c2s"), connection)
        self.session.closer = self
        self.auth_done = False
        self.ping_sent_at = 0.0
        self._closed = False
        #: The client closed its stream first, cleanly (RFC 6120 §4.4): it sends nothing more, so the
        #: transport need not linger for its input after our closing tag (see TcpConnection.close).
        self.peer_closed = False
        #: XEP-0198 state while stream management is enabled: counts the client's stanzas.
        self.sm: StreamManagement | None = None
        server.connections.add(self)

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def closed(self) -> bool:
        """The stream has ended (answers to its events arrive too late)."""
        return self._closed

    def handle_events(self, events: list[StreamEvent]) -> None:
        """Write the stream's output and act on its events (answers from helpers like core.sasl2)."""
        self._handle(events)

    def release_parser(self) -> bool:
        """Give back an idle established stream's parser memory (rebuilt on the next byte)."""
        if self.stream.parser.released:
            return False
        return self.stream.release_parser()

    # -- from the transport ------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes (or one WebSocket message) from the client."""
        session = self.session
        session.last_received = time.monotonic()
        self.ping_sent_at = 0.0
        # `with reading(session.id)`, spelled out: this runs once per read of every connection.
        previous = READING.conn_id
        READING.conn_id = session.id
        try:
            self._handle(self.stream.receive_data(data))
        finally:
            READING.conn_id = previous

    def receive_items(self, items: Sequence[ParseEvent]) -> None:
        """Input the transport parsed itself (BOSH: a ``<body/>``'s payloads, a restart's open)."""
        session = self.session
        session.last_received = time.monotonic()
        self.ping_sent_at = 0.0
        with reading(session.id):
            self._handle(self.stream.receive_items(items))

    def tls_established(self, channel_bindings: Mapping[str, bytes]) -> None:
        """The TLS handshake of a STARTTLS (or direct TLS) connection finished."""
        with reading(self.session.id):
            if self.connection.kind == "tls":
                self.stream.channel_bindings = channel_bindings
            else:
                self._handle(self.stream.tls_established(channel_bindings))

    def connection_lost(self) -> None:
        """The transport is gone (the client left, the network dropped, or we closed it)."""
        if self._closed:
            self._finish("")
            return
        self._closed = True
        self._finish("disconnect")

    # -- stream events -----------------------------------------------------------------------------------
    def _flush_stream(self) -> None:
        # One send_raw per unit of stream output (see Connection.send_raw): a WebSocket sends each
        # element as a message of its own (RFC 7395 §3.3.3).
        for item in self.stream.items_to_send():
            self.connection.send_raw(item)

    def _handle(self, events: list[StreamEvent]) -> None:
        connection = self.connection
        for item in self.stream.items_to_send():  # _flush_stream, inline: once per read
            connection.send_raw(item)
        session = self.session
        for event in events:
            if event.__class__ is Element:
                managed = self.sm  # read per stanza: an <enable/> earlier in this batch sets it
                if managed is not None:
                    inbound = managed.inbound + 1  # managed.handled(), inline
                    managed.inbound = inbound if inbound <= SMALL else inbound & MASK
                session.receive(event)
            else:
                self._on_event(event)

    def _on_event(self, event: StreamEvent) -> None:
        session = self.session
        if event.__class__ is AckNonza:
            # The most frequent nonza by far (XEP-0198 <r/>/<a/>): straight to the session's state.
            managed = session.sm
            if isinstance(managed, sm.SmSession):
                managed.ack_nonza(self, event.element)
            else:
                sm.stream_event(self, event)  # §6: not enabled here; the service says so
            return
        if isinstance(event, NeedTls):
            starter: TlsStarter = self.connection  # type: ignore[assignment]
            starter.start_tls()
        elif isinstance(event, NeedCredentials):
            self.server.spawn(self._lookup(event), f"{session.id}-auth")
        elif isinstance(event, NeedBind):
            self._bind(event)
        elif isinstance(event, NeedToken):
            self.server.spawn(sasl2.lookup_tokens(self, event), f"{session.id}-fast")
        elif isinstance(event, NeedUpgrades):
            self.server.spawn(sasl2.upgrades_needed(self, event), f"{session.id}-upgrade")
        elif isinstance(event, StoreUpgrade):
            self.server.spawn(sasl2.store_upgrade(self, event), f"{session.id}-upgrade")
        elif isinstance(event, Sasl2Login):
            self.server.spawn(sasl2.complete_login(self, event), f"{session.id}-sasl2")
        elif isinstance(event, RegisterRequest):
            self.server.spawn(self._register(event), f"{session.id}-register")
        elif isinstance(event, Authenticated):
            self.auth_done = True
            session.log.info("authenticated as %s@%s (%s)", event.username, event.domain, event.mechanism)
            observe_login(self.server, event.mechanism, True)
        elif isinstance(event, AuthFailed):
            session.log.info("authentication failed for %s: %s", event.username or "?", event.condition)
            observe_login(self.server, event.mechanism, False)
        elif isinstance(event, (AckNonza, EnableRequested, ResumeRequested, ClientState)):
            sm.stream_event(self, event)
        elif isinstance(event, Closed):
            if event.error is None:
                # RFC 6120 §4.4: what the client sent before closing is handled first, in order.
                session.after_pending(lambda: self._closed_by_peer(event))
                return
            session.log.info(
                "stream error sent: %s%s",
                event.error.condition,
                f" ({event.error.text})" if event.error.text else "",
            )
            self._end_stream(event.final, "error")

    def _closed_by_peer(self, event: Closed) -> None:
        self.peer_closed = True
        self._end_stream(event.final, "logout")

    async def _lookup(self, event: NeedCredentials) -> None:
        session = self.session
        with bind_conn_id(session.id):
            creds: ScramCredentials | None = None
            ok = False
            disabled: str | None = None
            try:
                stored = await self.server.storage.accounts.get_credentials(
                    event.domain, event.username, event.hash_name
                )
                if stored is not None:
                    creds = ScramCredentials(
                        stored.hash_name, stored.salt, stored.iterations, stored.stored_key, stored.server_key
                    )
                if creds is not None and event.password is not None:
                    ok = await asyncio.get_running_loop().run_in_executor(
                        None, verify_password, event.password, creds
                    )
                if creds is not None:
                    disabled = await lock_reason(self.server.storage, event.domain, event.username)
            except Exception:
                session.log.exception("credential lookup failed")
                self.close(StreamError("internal-server-error"), reason="error")
                return
            if self._closed:
                return
            self._handle(self.stream.credentials(creds, ok, disabled))

    async def _register(self, event: RegisterRequest) -> None:
        """Hand a pre-authentication registration IQ to the host's modules (XEP-0077 §3.1.1)."""
        session = self.session
        with bind_conn_id(session.id):
            host = self.server.hosts.get(event.domain)
            request = hooks.RegisterEvent(session, event.iq, event.domain, self.connection.peer)
            claimed = host is not None and await host.bus.fire(hooks.C2S_REGISTER, request)
            reply = request.reply
            if not claimed or reply is None:
                reply = error_reply(event.iq, StanzaError("service-unavailable"))
            if self._closed:
                return
            self._handle(self.stream.register_reply(reply))

    def _bind(self, event: NeedBind) -> None:
        stream = self.stream
        session = self.session
        assert stream.domain is not None and stream.username is not None
        manager = self.server.sessions
        try:
            jid = manager.bind(session, stream.domain, stream.username, event.resource)
        except ValueError:
            self._handle(stream.bind_failed(StanzaError("resource-constraint", "too many resources")))
            return
        session.log.info("bound %s (%s from %s)", jid, self.connection.kind, self.connection.peer or "?")
        ready = manager.announce(session)
        if ready is not None:
            # The session's own stanzas wait until the modules have loaded its state (roster,
            # blocklist, privacy settings), so none is routed against half-initialised state.
            session.hold(ready)
        self._handle(stream.bound(jid))

    # -- closing -----------------------------------------------------------------------------------------
    def close(self, error: StreamError | None = None, reason: str = "logout") -> None:
        """End the stream from our side (with a stream error if given) and the session."""
        if self._closed:
            return
        final = b"".join(e.final for e in self.stream.close(error) if isinstance(e, Closed))
        self._flush_stream()
        self._end_stream(final, reason)

    def _end_stream(self, final: bytes, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if final:
            self.connection.send_raw(final)
        self.connection.close()
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        """Leave the server's connections and end the session (unless it detaches), once."""
        server = self.server
        if self not in server.connections:
            return
        server.connections.discard(self)
        session = self.session
        if session.closer is self:
            session.closer = None
        try:
            if session.connection is not self.connection:
                return  # the session has moved to another connection (stream-management resumption)
            if session.state is SessionState.NEGOTIATING:
                session.state = SessionState.CLOSED
                session.connection = None
                session.log.info("connection closed")
                return
            if session.sm is not None and sm.detach(session, reason or "disconnect"):
                return  # kept for stream-management resumption (XEP-0198 §5)
            if not server.sessions.end(session, reason or "disconnect"):
                session.log.info("connection closed")
        finally:
            # A closed connection leaves no reference cycle behind: the transport holds this driver,
            # which now holds nothing of the transport.
            self.connection = GONE

    def __repr__(self) -> str:
        return f"<C2SDriver {self.session.id} {self.connection.kind}>"
