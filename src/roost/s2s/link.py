"""s2s connections: the thin drivers around the sans-IO s2s streams (:mod:`roost.stream.s2s`).

:class:`IncomingS2S` is a stream another server opened to us: it authenticates the peer (SASL
EXTERNAL when its certificate validates, else dialback verified through :class:`Federation`) and
hands the peer's stanzas to ``Router.from_remote``, in order, rate limited per remote domain.
:class:`OutgoingS2S` is one we opened for one (local domain, remote domain) pair: it authenticates us
(EXTERNAL first, then dialback), then carries our stanzas, and the ``<db:verify/>`` requests of our
incoming streams. Both write through one batched buffer per event-loop turn, TLS over memory BIOs.
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
from roost.s2s.certs import chain_of, valid_for
from roost.stanza.errors import StreamError
from roost.stream.core import Closed, Established, Stream, StreamEvent
from roost.stream.events import NeedTls
from roost.stream.features.tls import StartTls
from roost.stream.s2s import (
    DIALBACK,
    DialbackServer,
    ExternalRefused,
    NeedDialbackVerify,
    PeerAuthenticated,
    S2SAuthClient,
    S2SPolicy,
    VerifyAnswer,
    initiating_stream,
    receiving_stream,
    send_dialback,
)
from roost.transports.tls_layer import TlsError, TlsLayer
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.s2s.manager import Federation, OutgoingLink

log = logging.getLogger("roost.s2s")

#: Stanzas held behind one that waits for storage before the socket stops reading.
MAX_QUEUED = 1000


class _S2SConnection(asyncio.Protocol):
    """What both directions share: TLS, batched writes, the stream's events, in-order input."""

    kind = "s2s"
    direction = ""
    stream: Stream

    def __init__(self, server: Server, federation: Federation) -> None:
        self.server = server
        self.federation = federation
        self.id = new_session_id("s2s")
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


class IncomingS2S(_S2SConnection):
    """A stream another server opened to us."""

    direction = "in"

    def __init__(self, server: Server, federation: Federation) -> None:
        super().__init__(server, federation)
        self.policy = S2SPolicy(
            federation.secret,
            secure_auth=federation.settings.secure_auth,
            require_encryption=federation.settings.require_encryption,
        )
        self.stream, self.starttls, self.external, self.dialback = receiving_stream(
            self.policy,
            frozenset(server.hosts),
            tls_available=True,
            max_stanza_bytes=server.config.c2s.max_stanza_bytes,
        )
        #: (remote, local) pairs the peer authenticated on this stream.
        self.pairs: set[tuple[str, str]] = set()
        self._remotes: set[str] = set()
        self._locals: set[str] = set()

    def describe(self) -> str:
        remotes = ", ".join(sorted(self._remotes)) or self.stream.peer_header.get("from", "?")
        return f"{remotes} ({self.peer}, incoming)"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        log.debug("%s: s2s connection from %s", self.id, self.peer)
        # A peer that never authenticates does not keep a connection (dialback itself may take a
        # round trip to its authoritative server: twice the connect timeout).
        limit = 2 * self.federation.settings.connect_timeout_seconds
        asyncio.get_running_loop().call_later(limit, self._auth_deadline)

    def _auth_deadline(self) -> None:
        if not self._closed and not self.pairs:
            self.close(StreamError("connection-timeout", "authenticate sooner"))

    def _event(self, event: StreamEvent) -> None:
        if isinstance(event, NeedTls):
            self._start_tls(True, self.federation.server_tls_context())
        elif isinstance(event, NeedDialbackVerify):
            if self.federation.blocked(event.remote):
                self.close(StreamError("policy-violation", "your domain is blocked here"))
                return
            self.server.spawn(self._verify(event), f"{self.id}-verify")
        elif isinstance(event, PeerAuthenticated):
            if self.federation.blocked(event.remote):
                self.close(StreamError("policy-violation", "your domain is blocked here"))
                return
            self.pairs.add((event.remote, event.local))
            self._remotes.add(event.remote)
            self._locals.add(event.local)
            log.info(
                "s2s in: %s → %s authenticated by %s (%s, %s)",
                event.remote,
                event.local,
                event.method,
                self.peer,
                self.id,
            )

    def _tls_done(self) -> None:
        tls = self.tls
        assert tls is not None
        claimed = self.stream.peer_header.get("from")
        if self.federation.settings.secure_auth and claimed:
            why = valid_for(chain_of(tls.obj), claimed, self.federation.store)
            if why is None:
                self.policy.cert_domains = frozenset((claimed,))
            else:
                log.info("%s: certificate of %s not accepted: %s", self.id, claimed, why)
        self._handle(self.starttls.established(self.stream, {}))

    async def _verify(self, event: NeedDialbackVerify) -> None:
        valid = await self.federation.verify(event.remote, event.local, event.key, event.stream_id)
        if not self._closed:
            self._handle(self.dialback.verified(self.stream, event.remote, event.local, valid))

    def _route(self, stanza: Element) -> Awaitable[None] | None:
        frm = stanza.attrs.get("from", "")
        domain = frm.rpartition("@")[2].partition("/")[0] if frm else ""
        if domain and not self.federation.take_token(domain) and not self._paused:
            # Over the domain's rate: stop reading until the bucket refills (nothing is dropped).
            self._pause()
            self.server.spawn(self._slow_down(domain), f"{self.id}-rate")
        return self.server.router.from_remote(self, stanza)

    async def _slow_down(self, domain: str) -> None:
        await asyncio.sleep(self.federation.wait_for_token(domain))
        if self._inbox is None:
            self._resume()

    # -- Link --------------------------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        """Incoming streams carry the peer's stanzas only (no XEP-0288 bidirectional s2s yet)."""

    def may_send_from(self, domain: str) -> bool:
        return domain in self._remotes

    def may_send_to(self, domain: str) -> bool:
        return domain in self._locals

    def _lost(self) -> None:
        if self._remotes:
            log.info("s2s in: stream from %s closed (%s)", ", ".join(sorted(self._remotes)), self.id)


class OutgoingS2S(_S2SConnection):
    """A stream we opened from ``local`` to ``remote`` (owned by an :class:`OutgoingLink`)."""

    direction = "out"

    def __init__(
        self,
        server: Server,
        federation: Federation,
        link: OutgoingLink,
        direct_tls: bool,
        *,
        external: bool = True,
    ) -> None:
        super().__init__(server, federation)
        self.link = link
        self.direct_tls = direct_tls
        self.policy = S2SPolicy(
            federation.secret,
            secure_auth=federation.settings.secure_auth,
            require_encryption=federation.settings.require_encryption,
            have_certificate=external,
        )
        self.stream, self.starttls, self.auth = initiating_stream(
            link.local,
            link.remote,
            self.policy,
            tls_available=True,
            max_stanza_bytes=server.config.c2s.max_stanza_bytes,
        )
        self.established = False
        self.method = ""
        self._verifies_sent: set[tuple[str, str, str]] = set()

    def describe(self) -> str:
        return f"{self.link.remote} ({self.peer}, outgoing from {self.link.local})"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.direct_tls:
            self.stream.secure = True
            self._start_tls(False, self.federation.client_tls_context(), self.link.remote)
        else:
            self.stream.start(self.link.remote, from_=self.link.local)
            self._flush_stream()

    def _tls_done(self) -> None:
        tls = self.tls
        assert tls is not None
        why = valid_for(chain_of(tls.obj), self.link.remote, self.federation.store)
        if why is not None:
            if self.federation.settings.secure_auth:
                log.info("%s: refusing %s: %s", self.id, self.link.remote, why)
                self.link.failed(self, "remote-server-not-found")
                self.close(StreamError("policy-violation", "your certificate does not validate"))
                return
            log.info(
                "%s: certificate of %s not validated (%s); dialback decides", self.id, self.link.remote, why
            )
        if self.direct_tls:
            self.stream.start(self.link.remote, from_=self.link.local)
            self._flush_stream()
            return
        self._handle(self.starttls.established(self.stream, {}))

    def _event(self, event: StreamEvent) -> None:
        if isinstance(event, NeedTls):
            self._start_tls(False, self.federation.client_tls_context(), self.link.remote)
        elif isinstance(event, PeerAuthenticated):
            self.method = event.method
        elif isinstance(event, ExternalRefused):
            log.info(
                "%s: %s refused our certificate (SASL EXTERNAL); trying dialback", self.id, self.link.remote
            )
            self.link.skip_external = True
        elif isinstance(event, Established):
            self.established = True
            log.info(
                "s2s out: %s → %s authenticated by %s (%s, %s)",
                self.link.local,
                self.link.remote,
                self.method or "?",
                self.peer,
                self.id,
            )
            self.link.ready(self)
        elif isinstance(event, VerifyAnswer):
            self.federation.verify_answer(event.remote, event.local, event.stream_id, event.valid)

    def _handle(self, events: list[StreamEvent]) -> None:
        super()._handle(events)
        self.send_verifies()

    def send_verifies(self) -> None:
        """Send the ``<db:verify/>`` requests waiting for this stream, once it can carry them."""
        if self._closed or not (self.auth.ready_for_verify or self.established):
            return
        for key, (remote_key, sid) in list(self.link.verify_requests.items()):
            if key in self._verifies_sent:
                continue
            self._verifies_sent.add(key)
            verify = Element("verify", DIALBACK, {"from": self.link.local, "to": self.link.remote, "id": sid})
            verify.children.append(remote_key)
            send_dialback(self.stream, verify)
        self._flush_stream()

    def send(self, stanza: Element) -> None:
        if self._closed or self.stream.closed:
            return
        self.last_active = time.monotonic()
        self.stream.send(stanza)
        self._flush_stream()

    def _route(self, stanza: Element) -> Awaitable[None] | None:
        # No XEP-0288: the peer's stanzas belong on its own stream to us.
        log.debug("%s: ignoring a stanza on our outgoing stream", self.id)
        return None

    def may_send_from(self, domain: str) -> bool:
        return False

    def may_send_to(self, domain: str) -> bool:
        return False

    def _lost(self) -> None:
        self.link.lost(self)


#: Features the receiving stream answers through (re-exported for tests).
__all__ = ["DialbackServer", "IncomingS2S", "OutgoingS2S", "S2SAuthClient", "StartTls"]
