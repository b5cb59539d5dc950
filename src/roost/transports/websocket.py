"""XMPP over WebSocket (RFC 7395) at ``/xmpp-websocket``: a thin :class:`Connection` under the c2s driver.

The handshake must agree on the ``xmpp`` subprotocol (§3.1); each text message is one element
(§3.3.3), parsed by the stream core's WebSocket framing, so the same SASL, binding and limits as on
TCP apply. What the stream writes goes out one element per message, in order, from one writer task
per connection; a client that stops reading is dropped once its queue passes
``c2s.max_send_queue_bytes``, as on TCP.

A client that comes over plain HTTP while ``c2s.require_encryption`` is on is sent to the secure
endpoint with ``<close see-other-uri=…/>`` (§3.6.1) when ``[http] public_url`` names one, else its
stream is refused with ``<policy-violation/>``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from roost.core.c2s import C2SDriver
from roost.stanza.errors import StreamError
from roost.stream.c2s import C2SSettings, C2SStream
from roost.stream.framing import FRAMING, WebSocketFraming
from roost.transports import tls as tls_util
from roost.transports.http import WEBSOCKET_PATH, client_of

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.transports.http import ClientInfo

log = logging.getLogger("roost.websocket")

SUBPROTOCOL = "xmpp"
#: The framing's closing element, which the stream core may hand over joined to a stream error.
_CLOSE_MARK = f'<close xmlns="{FRAMING}"'.encode()


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2; a server never masks)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class WebSocketConnection:
    """One WebSocket carrying one c2s stream (the :class:`~roost.core.connection.Connection` of it).

    Output is framed here and written like TCP output: every message of one event-loop turn in one
    ``transport.write`` (one TLS record, one syscall), through the server's write batcher. Only the
    closing handshake goes through aiohttp's WebSocket object, which owns the input side.
    """

    kind = "websocket"
    stanza_ns: str | None = None  # RFC 7395 §3.3.3: every message declares its namespaces

    def __init__(self, server: Server, request: web.Request, ws: web.WebSocketResponse, info: ClientInfo):
        self.server = server
        self.request = request
        self.ws = ws
        self.peer = info.address
        self._secure = info.confidential
        self._wbuf: list[bytes] = []
        self._flush_pending = False
        self._closed = False
        self._limit = server.config.c2s.max_send_queue_bytes
        self.readable = asyncio.Event()
        self.readable.set()
        #: The closing handshake, once started (the handler waits for it before it returns).
        self.closing: asyncio.Task[object] | None = None

    @property
    def secure(self) -> bool:
        return self._secure

    # -- Connection ---------------------------------------------------------------------------------------
    def send_stanza(self, data: bytes) -> None:
        self._write(text_frame(data))

    def send_raw(self, data: bytes) -> None:
        # The stream core joins a stream error and the closing <close/> into one unit; on WebSocket each
        # is a message of its own (RFC 7395 §3.5).
        cut = data.rfind(_CLOSE_MARK)
        if cut > 0:
            self._write(text_frame(data[:cut]))
            data = data[cut:]
        if data:
            self._write(text_frame(data))

    def close(self) -> None:
        """Send what is queued, then close the WebSocket (RFC 7395 §3.6)."""
        if self._closed:
            return
        self.flush_output()
        self._closed = True
        if not self.ws.closed:
            self.closing = self.server.spawn(self._close_handshake(), "ws-close")

    def abort(self) -> None:
        self._closed = True
        self._wbuf.clear()
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # -- flow control (the session pauses reading while its backlog is full) ---------------------------
    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    # -- output -----------------------------------------------------------------------------------------
    def _write(self, frame: bytes) -> None:
        if self._closed:
            return
        self._wbuf.append(frame)
        if not self._flush_pending:
            self._flush_pending = True
            self.server.writes.schedule(self)

    def flush_output(self) -> None:
        """Write every frame queued this loop turn at once (called by the server's write batcher)."""
        self._flush_pending = False
        transport = self.request.transport
        if not self._wbuf or transport is None or transport.is_closing():
            self._wbuf.clear()
            return
        data = b"".join(self._wbuf) if len(self._wbuf) > 1 else self._wbuf[0]
        self._wbuf.clear()
        transport.write(data)
        if transport.get_write_buffer_size() > self._limit:
            # A client that does not read must not make the server hold unbounded data.
            log.warning("closing WebSocket from %s: client is not reading (send queue over limit)", self.peer)
            self.abort()

    async def _close_handshake(self) -> None:
        try:
            await self.ws.close()
        except (ConnectionError, RuntimeError):
            pass  # the peer is gone already


async def handle_websocket(server: Server, settings: C2SSettings, request: web.Request) -> web.StreamResponse:
    """The ``/xmpp-websocket`` endpoint (``settings``: the c2s settings shared by its streams)."""
    info = client_of(request)
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return web.Response(
            status=426,
            headers={"Upgrade": "websocket"},
            text="XMPP over WebSocket (RFC 7395): connect with a WebSocket client, subprotocol 'xmpp'.\n",
        )
    if SUBPROTOCOL not in offered:
        # RFC 7395 §3.1: without 'xmpp' agreed, no XMPP WebSocket connection exists.
        return web.Response(status=400, text="the WebSocket subprotocol 'xmpp' is required (RFC 7395 §3.1)\n")
    config = server.config
    max_stanza = config.c2s.max_stanza_bytes
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        max_msg_size=config.http.websocket_max_message_bytes or max_stanza + 4096,
        autoping=True,
        compress=False,  # compression over TLS leaks secrets (CRIME-like); RFC 7590 §3.5 spirit
        decode_text=False,  # expat checks the UTF-8 itself; no decode/encode round trip
    )
    await ws.prepare(request)
    connection = WebSocketConnection(server, request, ws, info)
    driver: C2SDriver | None = None
    try:
        first = await _first_message(ws, server)
        if first is None:
            return ws
        redirect = _insecure(server, info)
        if redirect is not None and redirect.startswith("wss://"):
            # RFC 7395 §3.4, §3.6.1: answer the <open/> with a <close/> naming the secure endpoint.
            connection.send_raw(WebSocketFraming().closing(redirect))
            connection.close()
            return ws
        driver = _new_driver(server, settings, connection, request, info)
        driver.session.log.info("connected from %s (WebSocket%s)", info.address or "?", _how(info))
        _feed(driver, first)
        if redirect is not None and not driver.stream.closed:
            driver.close(StreamError("policy-violation", redirect), reason="error")
        while True:
            await connection.readable.wait()
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                _feed(driver, msg.data)
            elif msg.type is WSMsgType.BINARY:
                # RFC 7395 §3.2: text messages only.
                driver.close(StreamError("bad-format", "XMPP over WebSocket uses text messages"), "error")
            elif msg.type is WSMsgType.ERROR:
                log.info("WebSocket from %s failed: %s", info.address, ws.exception())
                break
            else:  # CLOSE, CLOSING, CLOSED
                break
    finally:
        if driver is not None:
            driver.connection_lost()
        connection.close()
        closing = connection.closing
        if closing is not None and not closing.done():
            try:
                await asyncio.wait_for(asyncio.shield(closing), 5)
            except (TimeoutError, asyncio.CancelledError):
                closing.cancel()
    return ws


async def _first_message(ws: web.WebSocketResponse, server: Server) -> bytes | None:
    """The client's first message (its ``<open/>``), within the authentication timeout."""
    try:
        msg = await ws.receive(timeout=server.config.c2s.auth_timeout_seconds)
    except TimeoutError:
        await ws.close()
        return None
    if msg.type is WSMsgType.TEXT:
        data = msg.data
        return data if isinstance(data, bytes) else str(data).encode()
    if not ws.closed:
        await ws.close()
    return None


def _how(info: ClientInfo) -> str:
    if info.direct_tls:
        return ", TLS"
    return ", TLS at the proxy" if info.secure else ""


def _feed(driver: C2SDriver, data: bytes | str) -> None:
    driver.receive_data(data if isinstance(data, bytes) else data.encode())


def _insecure(server: Server, info: ClientInfo) -> str | None:
    """For a plain-HTTP client where encryption is required: the secure URL to send it to (wss://…),
    or the reason it is refused; None when the client may go on."""
    if info.confidential or not server.config.c2s.require_encryption:
        return None
    public = server.config.http.public_url
    if public is not None and public.lower().startswith("https://"):
        return "wss://" + public.split("://", 1)[1] + WEBSOCKET_PATH
    return "this server requires TLS: connect with wss://"


def _new_driver(
    server: Server,
    settings: C2SSettings,
    connection: WebSocketConnection,
    request: web.Request,
    info: ClientInfo,
) -> C2SDriver:
    # No STARTTLS here (RFC 7395 §3.9): the stream core offers it on XML streams only.
    framing = WebSocketFraming(settings.max_stanza_bytes)
    stream = C2SStream(settings, secure=info.confidential, framing=framing)
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if info.direct_tls and ssl_object is not None:
        # TLS ends here, on this very connection: SCRAM-*-PLUS can bind to it.
        own = server.certificates.presented_der(ssl_object)
        stream.channel_bindings = tls_util.channel_bindings(ssl_object, own)
    return C2SDriver(server, connection, stream)
