"""External components (XEP-0114): a TCP connection carrying a ``jabber:component:accept`` stream.

The stream and its handshake are sans-IO (:mod:`roost.stream.features.component`); this is the thin
driver around them: bytes in and out, and, once the component proved its secret, a
:class:`~roost.core.routes.Link` in the route table for its domain and every subdomain of it. A
component that connects again replaces its old link, which ends with ``<conflict/>`` (RFC 6120
§4.9.3.3). Stanzas from the component go through ``Router.from_remote`` in order (RFC 6120 §10.1):
while one waits for storage, later ones queue, and past ``MAX_QUEUED`` the socket stops reading.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

from roost.core.session import new_session_id
from roost.stanza.errors import StreamError
from roost.stream.core import Closed, Stream, StreamEvent
from roost.stream.features.component import ComponentAuthenticated, ComponentHandshake
from roost.stream.framing import XmlFraming
from roost.xml.element import Element
from roost.xml.ns import COMPONENT

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.component")

#: Stanzas held behind one that waits for storage before the socket stops reading.
MAX_QUEUED = 1000


class ComponentConnection(asyncio.Protocol):
    """One component's TCP connection: the stream driver and, once authenticated, its link."""

    kind = "component"

    def __init__(self, server: Server) -> None:
        self.server = server
        self.id = new_session_id("comp")
        self.peer = ""
        #: The component's domain, once it completed the handshake.
        self.domain: str | None = None
        secrets = {domain: entry.secret for domain, entry in server.config.components.items()}
        self.stream = Stream(
            XmlFraming(server.config.c2s.max_stanza_bytes),
            [ComponentHandshake(secrets.get)],
            content_ns=COMPONENT,
            domains=frozenset(secrets),
            versionless=True,
        )
        self.transport: asyncio.Transport | None = None
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self._closed = False
        self._inbox: deque[Element] | None = None
        self._paused = False

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
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.server.route_table.links.add(self)
        log.debug("%s: component connection from %s", self.id, self.peer)

    def data_received(self, data: bytes) -> None:
        self._handle(self.stream.receive_data(data))

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wbuf.clear()
        self.transport = None
        self.server.route_table.links.discard(self)
        if self.domain is not None:
            self.server.route_table.detach_component(self.domain, self)
            log.info("component %s disconnected (%s)", self.domain, self.id)

    # -- stream events -----------------------------------------------------------------------------
    def _handle(self, events: list[StreamEvent]) -> None:
        self._flush_stream()
        for event in events:
            if isinstance(event, Element):
                self._stanza(event)
            elif isinstance(event, ComponentAuthenticated):
                self._authenticated(event.domain)
            elif isinstance(event, Closed):
                self._finish(event)
                return

    def _authenticated(self, domain: str) -> None:
        self.domain = domain
        old = self.server.route_table.attach_component(domain, self)
        log.info("component %s connected from %s (%s)", domain, self.peer, self.id)
        if old is not None:
            log.info("component %s: the new connection replaces %s", domain, old.id)
            old.close(StreamError("conflict", "replaced by a new connection"), reason="replaced")

    def _stanza(self, stanza: Element) -> None:
        inbox = self._inbox
        if inbox is not None:
            inbox.append(stanza)
            if len(inbox) >= MAX_QUEUED and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            return
        pending = self.server.router.from_remote(self, stanza)
        if pending is not None:
            self._inbox = deque()
            self.server.spawn(self._in_order(pending), f"{self.id}-in")

    async def _in_order(self, pending: Awaitable[None]) -> None:
        """Finish a stanza that waited, then those queued behind it, in order."""
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
                more = self.server.router.from_remote(self, inbox.popleft())
                if more is not None:
                    pending = more
                    break
            else:
                self._inbox = None
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return

    def _finish(self, event: Closed) -> None:
        if event.peer_error is not None:
            log.info("%s: component ended its stream with <%s/>", self.id, event.peer_error.condition)
        elif event.error is not None:
            log.info(
                "%s: closing component stream: <%s/> %s", self.id, event.error.condition, event.error.text
            )
        if event.final:
            self._write(event.final)
        self._close_transport()

    # -- Link --------------------------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        if self._closed or self.stream.closed:
            return
        self.stream.send(stanza)
        self._flush_stream()

    def close(self, error: StreamError | None = None, reason: str = "") -> None:
        if self._closed:
            return
        self._handle(list(self.stream.close(error)))

    def may_send_from(self, domain: str) -> bool:
        # XEP-0114: the component speaks for its domain and the subdomains routed to it.
        own = self.domain
        return own is not None and (domain == own or domain.endswith("." + own))

    def may_send_to(self, domain: str) -> bool:
        return True

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
        transport.write(data)
        if transport.get_write_buffer_size() > self.server.config.c2s.max_send_queue_bytes:
            log.warning("%s: component %s is not reading; closing", self.id, self.domain)
            self._closed = True
            transport.abort()

    def _close_transport(self) -> None:
        if self._closed:
            return
        self.flush_output()
        self._closed = True
        if self.transport is not None:
            self.transport.close()
