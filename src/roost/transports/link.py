"""What s2s and component connections share: a thin TCP driver around a sans-IO stream.

TLS over memory BIOs (as for c2s, :mod:`roost.transports.tls_layer`), writes batched per event-loop
turn, the stream's events, and the remote entity's stanzas routed one after another: while one waits
for storage, later ones queue (RFC 6120 §10.1), and past ``MAX_QUEUED`` the socket stops being read.
Subclasses handle their stream's own events and say where stanzas go (:meth:`_route`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

from roost.core.session import new_session_id
from roost.stanza.errors import StreamError
from roost.stream.core import Closed, Stream, StreamEvent
from roost.transports.tls_layer import TlsError, TlsLayer
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.links")

#: Stanzas held behind one that waits for storage before the socket stops reading.
MAX_QUEUED = 1000


class StreamConnection(asyncio.Protocol):
    """A TCP connection carrying one stream to a remote entity (s2s, component): TLS over memory
    BIOs, writes batched per event-loop turn, the stream's events, stanzas routed in order."""

    kind = ""
    stream: Stream

    def __init__(self, server: Server, id_prefix: str) -> None:
        self.server = server
        self.id = new_session_id(id_prefix)
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self.tls: TlsLayer | None = None
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self._closed = False
        self._inbox: deque[Element] | None = None
        self._paused = False
        self.last_active = time.monotonic()

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        self.server.route_table.links.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        tls = self.tls
        if tls is not None:
            try:
                data, out, completed = tls.receive(data)
            except TlsError as e:
                log.info("%s: TLS with %s failed: %s", self.id, self.peer, e)
                self.abort()
                return
            if out and self.transport is not None:
                self.transport.write(out)
            if completed:
                self._tls_done()
            if not data:
                return
        self._handle(self.stream.receive_data(data))

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wbuf.clear()
        self.transport = None
        self.tls = None
        self.server.route_table.links.discard(self)
        self._lost()

    # -- for subclasses ----------------------------------------------------------------------------
    def _lost(self) -> None:
        pass

    def _tls_done(self) -> None:
        raise NotImplementedError

    def _event(self, event: StreamEvent) -> None:
        raise NotImplementedError

    def _start_tls(self, server_side: bool, context: ssl.SSLContext, hostname: str | None = None) -> None:
        self.flush_output()
        self.tls = TlsLayer(context, server_side=server_side, server_hostname=hostname)
        if not server_side and self.transport is not None:
            try:
                self.transport.write(self.tls.start())
            except TlsError as e:
                log.info("%s: TLS with %s failed: %s", self.id, self.peer, e)
                self.abort()

    # -- stream events -----------------------------------------------------------------------------
    def _handle(self, events: list[StreamEvent]) -> None:
        self._flush_stream()
        for event in events:
            if isinstance(event, Element):
                self._stanza(event)
            elif isinstance(event, Closed):
                self._finish(event)
                return
            else:
                self._event(event)
        self._flush_stream()

    def _stanza(self, stanza: Element) -> None:
        inbox = self._inbox
        if inbox is not None:
            inbox.append(stanza)
            if len(inbox) >= MAX_QUEUED:
                self._pause()
            return
        pending = self._route(stanza)
        if pending is not None:
            self._inbox = deque()
            self.server.spawn(self._in_order(pending), f"{self.id}-in")

    def _route(self, stanza: Element) -> Awaitable[None] | None:
        return None

    async def _in_order(self, pending: Awaitable[None]) -> None:
        inbox = self._inbox
        assert inbox is not None
        while True:
            try:
                await pending
            except Exception:
                log.exception("%s: routing failed", self.id)
            while inbox:
                if self._closed:
                    inbox.clear()
                    break
                more = self._route(inbox.popleft())
                if more is not None:
                    pending = more
                    break
            else:
                self._inbox = None
                self._resume()
                return

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _finish(self, event: Closed) -> None:
        if event.peer_error is not None:
            log.info(
                "%s: %s ended the stream with <%s/> %s",
                self.id,
                self.describe(),
                event.peer_error.condition,
                event.peer_error.text or "",
            )
        elif event.error is not None:
            log.info(
                "%s: closing stream with %s: <%s/> %s",
                self.id,
                self.describe(),
                event.error.condition,
                event.error.text or "",
            )
        if event.final:
            self._write(event.final)
        self._close_transport()

    def describe(self) -> str:
        return self.peer

    # -- Link --------------------------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        raise NotImplementedError

    def may_send_from(self, domain: str) -> bool:
        return False

    def may_send_to(self, domain: str) -> bool:
        return False

    def close(self, error: StreamError | None = None, reason: str = "") -> None:
        if self._closed:
            return
        self._handle(list(self.stream.close(error)))

    # -- output ------------------------------------------------------------------------------------
    def _flush_stream(self) -> None:
        data = self.stream.data_to_send()
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
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
        data = b"".join(self._wbuf)
        self._wbuf.clear()
        if self.tls is not None and self.tls.handshake_done:
            try:
                data = self.tls.encrypt(data)
            except TlsError as e:
                log.info("%s: TLS failed: %s", self.id, e)
                self.abort()
                return
        transport.write(data)
        if transport.get_write_buffer_size() > self.server.config.c2s.max_send_queue_bytes:
            log.warning("%s: %s is not reading; closing", self.id, self.describe())
            self.abort()

    def abort(self) -> None:
        self._closed = True
        self._wbuf.clear()
        if self.transport is not None:
            self.transport.abort()

    def _close_transport(self) -> None:
        if self._closed:
            return
        self.flush_output()
        self._closed = True
        transport = self.transport
        if transport is not None:
            tls = self.tls
            if tls is not None and tls.handshake_done:
                try:
                    transport.write(tls.close())
                except TlsError:
                    pass
            transport.close()

    @property
    def closed(self) -> bool:
        return self._closed
