"""Client connections over TCP: STARTTLS on the c2s port, direct TLS (XEP-0368) on c2s_tls.

Thin by design: bytes in → :class:`~roost.stream.c2s.C2SStream` → events; the events that need I/O
(TLS handshake, credential lookup, binding) are carried out here. Outgoing stanzas are serialized
once and written in one batch per event-loop turn.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

from roost.admin.metrics import observe_login
from roost.core import hooks
from roost.core.session import Session, new_session_id
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError, StreamError
from roost.stream.c2s import (
    Authenticated,
    AuthFailed,
    C2SSettings,
    C2SStream,
    Closed,
    NeedBind,
    NeedCredentials,
    NeedTls,
    RegisterRequest,
    StreamEvent,
)
from roost.stream.sasl.plain import verify_password
from roost.stream.sasl.scram import ScramCredentials
from roost.transports import tls as tls_util
from roost.transports.tls_layer import TlsError, TlsLayer
from roost.util.logging import bind_conn_id
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.server import Server

#: Stanzas held while an earlier one awaits storage; past this, reading pauses (back-pressure).
MAX_BACKLOG = 256


class C2SConnection(Session, asyncio.Protocol):
    """One client TCP connection and, once bound, its session."""

    __slots__ = (
        "_backlog",
        "_busy",
        "_closed",
        "_flush_pending",
        "_paused",
        "_wbuf",
        "auth_done",
        "connected_at",
        "direct_tls",
        "ping_sent_at",
        "stream",
        "tls",
        "transport",
    )

    def __init__(self, server: Server, settings: C2SSettings, *, direct_tls: bool) -> None:
        super().__init__(server, new_session_id("c2s"))
        self.direct_tls = direct_tls
        self.stream = C2SStream(settings, secure=direct_tls)
        self.transport: asyncio.Transport | None = None
        self.tls: TlsLayer | None = None
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self._busy = False
        #: Stanzas (and a peer's stream close) waiting behind a stanza that awaits storage.
        self._backlog: deque[Element | Closed] = deque()
        self._paused = False
        self._closed = False
        self.auth_done = False
        self.connected_at = time.monotonic()
        self.ping_sent_at = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.server.connections.add(self)
        if self.direct_tls:
            self.tls = TlsLayer(self.server.tls_context, server_side=True)
        self.log.info("connected from %s%s", _peer(peer), " (direct TLS)" if self.direct_tls else "")

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        self.ping_sent_at = 0.0
        with bind_conn_id(self.id):
            tls = self.tls
            if tls is not None:
                try:
                    data, out, completed = tls.receive(data)
                except TlsError as e:
                    self.log.info("TLS failed: %s", e)
                    self._abort()
                    return
                if out and self.transport is not None:
                    self.transport.write(out)
                if completed:
                    self._tls_completed(tls)
                if not data:
                    return
            events = self.stream.receive_data(data)
            self._flush_stream()
            for event in events:
                if event.__class__ is Element:
                    self._on_stanza(event)
                else:
                    self._on_event(event)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._wbuf.clear()
        self._finish("disconnect" if not self._closed else "")

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # -- output -----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self._wbuf.append(data)
        if not self._flush_pending:
            self._flush_pending = True
            self.server.writes.schedule(self)

    def flush_output(self) -> None:
        self._flush_pending = False
        transport = self.transport
        if not self._wbuf or transport is None or transport.is_closing():
            self._wbuf.clear()
            return
        data = b"".join(self._wbuf) if len(self._wbuf) > 1 else self._wbuf[0]
        self._wbuf.clear()
        if self.tls is not None:
            try:
                data = self.tls.encrypt(data)
            except TlsError as e:
                self.log.info("TLS failed: %s", e)
                self._abort()
                return
        transport.write(data)
        if transport.get_write_buffer_size() > self.server.config.c2s.max_send_queue_bytes:
            # A client that does not read its stream must not make the server hold unbounded data.
            self.log.warning("closing: client is not reading (send queue over limit)")
            self._abort()

    def _abort(self) -> None:
        self._closed = True
        self._wbuf.clear()
        if self.transport is not None:
            self.transport.abort()

    def _flush_stream(self) -> None:
        out = self.stream.data_to_send()
        if out:
            self.write(out)

    # -- stream events ------------------------------------------------------------------------------
    def _handle(self, events: list[StreamEvent]) -> None:
        self._flush_stream()
        for event in events:
            if event.__class__ is Element:
                self._on_stanza(event)
            else:
                self._on_event(event)

    def _on_event(self, event: StreamEvent) -> None:
        if isinstance(event, NeedTls):
            # <proceed/> goes out in the clear; every byte after it, both ways, is TLS.
            self.flush_output()
            self.tls = TlsLayer(self.server.tls_context, server_side=True)
        elif isinstance(event, NeedCredentials):
            self.server.spawn(self._lookup(event), f"{self.id}-auth")
        elif isinstance(event, NeedBind):
            self._bind(event)
        elif isinstance(event, RegisterRequest):
            self.server.spawn(self._register(event), f"{self.id}-register")
        elif isinstance(event, Authenticated):
            self.auth_done = True
            self.log.info("authenticated as %s@%s (%s)", event.username, event.domain, event.mechanism)
            observe_login(self.server, event.mechanism, True)
        elif isinstance(event, AuthFailed):
            self.log.info("authentication failed for %s: %s", event.username or "?", event.condition)
            observe_login(self.server, getattr(self.stream, "_mechanism", ""), False)
        elif isinstance(event, Closed):
            if event.error is None and self._busy:
                # RFC 6120 §4.4: what the client sent before closing is handled first, in order.
                self._backlog.append(event)
                return
            if event.error is not None:
                self.log.info(
                    "stream error sent: %s%s",
                    event.error.condition,
                    f" ({event.error.text})" if event.error.text else "",
                )
            self.write(event.final)
            self._close_transport("logout" if event.error is None else "error")

    def _tls_completed(self, tls: TlsLayer) -> None:
        bindings = tls_util.channel_bindings(tls.obj, self.server.certificate_der)
        self.log.debug("TLS established (%s)", tls.version)
        if self.direct_tls:
            self.stream.channel_bindings = bindings
        else:
            self._handle(self.stream.tls_established(bindings))

    async def _lookup(self, event: NeedCredentials) -> None:
        with bind_conn_id(self.id):
            creds: ScramCredentials | None = None
            ok = False
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
            except Exception:
                self.log.exception("credential lookup failed")
                self.close(StreamError("internal-server-error"), reason="error")
                return
            if self._closed:
                return
            self._handle(self.stream.credentials(creds, ok))

    async def _register(self, event: RegisterRequest) -> None:
        """Hand a pre-authentication registration IQ to the host's modules (XEP-0077 §3.1.1)."""
        with bind_conn_id(self.id):
            host = self.server.hosts.get(event.domain)
            peer = self.transport.get_extra_info("peername") if self.transport is not None else None
            address = str(peer[0]) if isinstance(peer, tuple) else ""
            request = hooks.RegisterEvent(self, event.iq, event.domain, address)
            claimed = host is not None and await host.bus.fire(hooks.C2S_REGISTER, request)
            reply = request.reply
            if not claimed or reply is None:
                reply = error_reply(event.iq, StanzaError("service-unavailable"))
            if self._closed:
                return
            self._handle(self.stream.register_reply(reply))

    def _bind(self, event: NeedBind) -> None:
        stream = self.stream
        assert stream.domain is not None and stream.username is not None
        try:
            jid = self.server.sessions.bind(self, stream.domain, stream.username, event.resource)
        except ValueError:
            self._handle(stream.bind_failed(StanzaError("resource-constraint", "too many resources")))
            return
        self.log.info("bound %s", jid)
        host = self.server.hosts.get(jid.domain)
        if host is not None and host.bus.has_handlers(hooks.SESSION_BOUND):
            # The session's own stanzas wait until the modules have loaded its state (roster,
            # blocklist, privacy settings), so none is routed against half-initialised state.
            self._busy = True
            ready = host.bus.fire(hooks.SESSION_BOUND, hooks.SessionEvent(self))
            self.server.spawn(self._drain(ready), f"{self.id}-bound")
        self._handle(stream.bound(jid))

    # -- stanzas --------------------------------------------------------------------------------------
    def _on_stanza(self, stanza: Element) -> None:
        if self._busy:
            self._backlog.append(stanza)
            if len(self._backlog) >= MAX_BACKLOG and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            return
        pending = self.server.router.process(self, stanza)
        if pending is not None:
            self._busy = True
            self.server.spawn(self._drain(pending), f"{self.id}-stanza")

    async def _drain(self, pending: Awaitable[object]) -> None:
        """Finish async work for one stanza, then process the ones that queued behind it (§10.1)."""
        router = self.server.router
        with bind_conn_id(self.id):
            try:
                await pending
                while self._backlog and not self._closed:
                    item = self._backlog.popleft()
                    if isinstance(item, Closed):
                        self.write(item.final)
                        self._close_transport("logout")
                        break
                    nxt = router.process(self, item)
                    if nxt is not None:
                        await nxt
            except Exception:
                self.log.exception("stanza processing failed")
            finally:
                self._busy = False
                if self._paused and self.transport is not None and not self._closed:
                    self._paused = False
                    self.transport.resume_reading()

    # -- closing --------------------------------------------------------------------------------------
    def close(self, error: StreamError | None = None, reason: str = "logout") -> None:
        if self._closed:
            return
        final = b"".join(e.final for e in self.stream.close(error) if isinstance(e, Closed))
        self._flush_stream()
        if final:
            self.write(final)
        self._close_transport(reason)

    def _close_transport(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            data = b"".join(self._wbuf)
            self._wbuf.clear()
            tls = self.tls
            if tls is not None and tls.handshake_done:
                try:
                    data = tls.encrypt(data) + tls.close() if data else tls.close()
                except TlsError:
                    data = b""
            if data:
                transport.write(data)
            transport.close()  # flushes what is buffered, then closes
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        """Leave the session table and tell the modules (unavailable presence etc.), once."""
        server = self.server
        if self not in server.connections:
            return
        server.connections.discard(self)
        self._closed = True
        if server.sessions.unbind(self):
            self.log.info("session closed (%s)", reason or "disconnect")
            host = server.hosts.get(self.jid.domain)
            if host is not None and host.bus.has_handlers(hooks.SESSION_CLOSED):
                server.spawn(
                    host.bus.fire(hooks.SESSION_CLOSED, hooks.SessionEvent(self, reason or "disconnect")),
                    f"{self.id}-closed",
                )
        else:
            self.log.info("connection closed")

    @property
    def closed(self) -> bool:
        return self._closed


def _peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
