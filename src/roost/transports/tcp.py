"""Client connections over TCP: STARTTLS on a ``c2s`` listener, direct TLS (XEP-0368) on ``c2s_tls``.

Thin by design: bytes in → (TLS) → the c2s driver; stanzas and stream output out → one write per
event-loop turn for every connection written to in that turn (one TLS record, one syscall).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from roost.core.c2s import C2SDriver
from roost.stream.c2s import C2SSettings, C2SStream
from roost.transports import tls as tls_util
from roost.transports.tls_layer import TlsError, TlsLayer
from roost.util.logging import reading
from roost.xml.ns import CLIENT

if TYPE_CHECKING:
    from roost.core.server import Server

#: How long a connection we closed may stay half-open, waiting for the client to close its side.
LINGER_SECONDS = 5.0


class TcpConnection(asyncio.Protocol):
    """One client TCP connection: a :class:`~roost.core.connection.Connection` for the c2s driver."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "_flush_pending",
        "_linger",
        "_wbuf",
        "driver",
        "kind",
        "peer",
        "server",
        "tls",
        "tls_context",
        "transport",
    )

    stanza_ns: str | None = CLIENT

    def __init__(
        self,
        server: Server,
        settings: C2SSettings,
        *,
        direct_tls: bool,
        tls_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        self.server = server
        self.kind = "tls" if direct_tls else "tcp"
        self.peer = ""
        self.transport: asyncio.Transport | None = None
        self.tls: TlsLayer | None = None
        self.tls_context = tls_context or (lambda: server.tls_context)
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self._closed = False
        self._linger: asyncio.TimerHandle | None = None
        self.driver = C2SDriver(server, self, C2SStream(settings, secure=direct_tls))

    @property
    def secure(self) -> bool:
        return self.tls is not None and self.tls.handshake_done

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
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self.kind == "tls":
            self.tls = TlsLayer(self.tls_context(), server_side=True)
        self.driver.session.log.info(
            "connected from %s%s", _peer(peer), " (direct TLS)" if self.kind == "tls" else ""
        )

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return  # lingering after our close: read and drop until the client closes too
        tls = self.tls
        if tls is None and data[:1] == b"\x16" and data[1:2] == b"\x03" and not self.driver.stream.secure:
            # A TLS ClientHello where an XML stream should start: a client set to direct TLS (XEP-0368)
            # on the STARTTLS port. It cannot read an XMPP stream error; say so in the log and close.
            self.driver.session.log.info(
                "a TLS client connected to the STARTTLS port (it needs the c2s_tls listener); closing"
            )
            self.abort()
            return
        if tls is not None:
            try:
                data, out, completed = tls.receive(data)
            except TlsError as e:
                with reading(self.driver.id):
                    self.driver.session.log.info("TLS failed: %s", e)
                self.abort()
                return
            if out and self.transport is not None:
                self.transport.write(out)
            if completed:
                self.driver.session.log.debug("TLS established (%s)", tls.version)
                own = self.server.certificates.presented_der(tls.obj)
                self.driver.tls_established(tls_util.channel_bindings(tls.obj, own))
            if not data:
                return
        self.driver.receive_data(data)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._wbuf.clear()
        self._closed = True
        self.driver.connection_lost()
        # Break the references a closed connection no longer needs (no cycles left for the GC).
        self.tls = None
        self.transport = None

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    # -- Connection --------------------------------------------------------------------------------
    def start_tls(self) -> None:
        """STARTTLS: <proceed/> goes out in the clear; every byte after it, both ways, is TLS."""
        self.flush_output()
        self.tls = TlsLayer(self.tls_context(), server_side=True)

    def send_stanza(self, data: bytes) -> None:
        self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
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
                self.driver.session.log.info("TLS failed: %s", e)
                self.abort()
                return
        transport.write(data)
        if transport.get_write_buffer_size() > self.server.config.c2s.max_send_queue_bytes:
            # A client that does not read its stream must not make the server hold unbounded data.
            self.driver.session.log.warning("closing: client is not reading (send queue over limit)")
            self.abort()

    def abort(self) -> None:
        self._closed = True
        self._wbuf.clear()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
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
            if self.driver.peer_closed:
                # The client closed its stream first and waits for ours (RFC 6120 §4.4): nothing of
                # its is left to read, so no reset can overtake our closing tag. Close at once (a
                # lingering close would cost a shutdown, a timer and one more wake-up per logout).
                transport.close()
            elif transport.can_write_eof():
                # A lingering close: end our direction (FIN after what is buffered) and read on until
                # the client closes. Closing the socket with its bytes unread would send a TCP reset,
                # and a reset can destroy the stream error still in the client's receive buffer
                # (e.g. <policy-violation/> while it is still sending an oversized stanza).
                transport.write_eof()
                self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)
            else:
                transport.close()  # flushes what is buffered, then closes

    @property
    def closed(self) -> bool:
        return self._closed


def _peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
