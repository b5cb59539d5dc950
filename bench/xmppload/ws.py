"""XMPP over WebSocket (RFC 7395) for the load generator: the client side of RFC 6455, by hand.

:class:`WsConn` has the same API as :class:`~.conn.XmppConn` — ``write`` (here: one element = one
text message), ``expect`` (a regex over the received messages, concatenated), ``set_sink`` (every
further message, as it arrives) — so the scenarios' pattern waits and body scanners work unchanged.
Like the TCP generator it has no XML parser, and it builds frames without a masking pass: the masking
key is all zeros (RFC 6455 §5.3 wants it unpredictable, which guards browsers against cache poisoning
by script; on loopback it only costs generator CPU). Text messages arrive unfragmented from every
server here; continuation frames are joined anyway.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import ssl
import time

from roost.stream.sasl.scram import ScramClient

from .client import (
    RE_BIND,
    RE_CHALLENGE,
    RE_FEATURES,
    RE_MECHANISM,
    RE_PRESENCE,
    RE_SUCCESS,
    Account,
    CredentialCache,
    Endpoint,
    LoginOptions,
    Session,
    _auth,
    _response,
)
from .conn import XmppConn, XmppError

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
WS_PATH = "/xmpp-websocket"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
RE_CLOSE = re.compile(rb"<close\b[^>]*/>")
CLOSE = f"<close xmlns='{FRAMING}'/>".encode()
_ZERO_MASK = b"\x00\x00\x00\x00"


# RFC 7395 §3.3.3: every message is a document of its own, so stanzas state their namespace.
INITIAL_PRESENCE = b"<presence xmlns='jabber:client'/>"


def bind_iq(resource: str) -> bytes:
    return (
        "<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        f"<resource>{resource}</resource></bind></iq>"
    ).encode()


def open_element(domain: str) -> bytes:
    return f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>".encode()


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """One final client frame (masked with the zero key)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


class WsConn(XmppConn):
    """One WebSocket connection speaking the ``xmpp`` subprotocol."""

    def __init__(self) -> None:
        super().__init__()
        self._raw = bytearray()
        self._parts: list[bytes] = []
        self._upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._key = base64.b64encode(os.urandom(16))
        self.server_closed = False
        self._close_sent = False

    # -- handshake ------------------------------------------------------------------------------
    async def upgrade(self, host: str, port: int, time_limit: float) -> None:
        assert self.transport is not None
        self.transport.write(
            b"GET " + WS_PATH.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + self._key
            + b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
        )  # fmt: skip
        await asyncio.wait_for(asyncio.shield(self._upgraded), time_limit)

    def _handshake(self) -> None:
        end = self._raw.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._raw[:end]).decode("latin-1")
        del self._raw[: end + 4]
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()
        if " 101 " not in lines[0] + " ":
            self._upgraded.set_exception(XmppError(f"WebSocket upgrade refused: {lines[0]}"))
        elif headers.get("sec-websocket-accept") != accept:
            self._upgraded.set_exception(XmppError("bad Sec-WebSocket-Accept"))
        elif headers.get("sec-websocket-protocol", "").lower() != "xmpp":
            self._upgraded.set_exception(XmppError("the server did not agree to the xmpp subprotocol"))
        else:
            self._upgraded.set_result(None)

    # -- frames ---------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        raw = self._raw
        raw += data
        if not self._upgraded.done():
            self._handshake()
            if not self._upgraded.done() or self._upgraded.exception() is not None:
                return
        while len(raw) >= 2:
            b1 = raw[1]
            n = b1 & 0x7F
            offset = 2
            if n == 126:
                if len(raw) < 4:
                    return
                n = int.from_bytes(raw[2:4], "big")
                offset = 4
            elif n == 127:
                if len(raw) < 10:
                    return
                n = int.from_bytes(raw[2:10], "big")
                offset = 10
            if b1 & 0x80:
                offset += 4  # a masked server frame is a protocol error; tolerate it in a benchmark
            if len(raw) < offset + n:
                return
            b0 = raw[0]
            payload = bytes(raw[offset : offset + n])
            del raw[: offset + n]
            opcode = b0 & 0x0F
            if opcode in (0, 1, 2):
                self._parts.append(payload)
                if b0 & 0x80:
                    message = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                    self._parts = []
                    super().data_received(message)
            elif opcode == 8:
                self.server_closed = True
                if self.transport is not None and not self.transport.is_closing():
                    if not self._close_sent:
                        self.transport.write(frame(payload[:2], 8))  # echo the server's close
                    self.transport.close()
            elif opcode == 9 and self.transport is not None:
                self.transport.write(frame(payload, 10))

    def write(self, data: bytes) -> None:
        """Send one element as one text message (RFC 7395 §3.3.3)."""
        assert self.transport is not None
        self.transport.write(frame(data))

    def write_many(self, data: bytes, count: int) -> None:
        """The same element ``count`` times, one message each, in one write."""
        assert self.transport is not None
        self.transport.write(frame(data) * count)

    def send_close_frame(self) -> None:
        self._close_sent = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame((1000).to_bytes(2, "big"), 8))


async def ws_login(
    endpoint: Endpoint,
    port: int,
    account: Account,
    resource: str,
    creds: CredentialCache,
    opts: LoginOptions,
) -> Session:
    """One login over ``wss://host:port/xmpp-websocket``: TLS, upgrade, open, SCRAM, open, bind,
    presence. Timings: connect (TCP + TLS + upgrade + first features), auth, bind, presence."""
    loop = asyncio.get_running_loop()
    timeout = opts.timeout
    t0 = time.perf_counter()
    tls: ssl.SSLContext = opts.tls
    _, conn = await asyncio.wait_for(
        loop.create_connection(
            WsConn, endpoint.host, port, ssl=tls, server_hostname=endpoint.domain, local_addr=opts.local_addr
        ),
        timeout,
    )
    try:
        await conn.upgrade(endpoint.domain, port, timeout)
        opener = open_element(endpoint.domain)
        conn.write(opener)
        m = await conn.expect(RE_FEATURES, timeout)
        mechanism = f"SCRAM-{opts.hash_name}".encode()
        if mechanism not in RE_MECHANISM.findall(m.string):
            raise XmppError(f"server does not offer {mechanism.decode()}: {m.string[-400:]!r}")
        t1 = time.perf_counter()

        cached = creds.get(account.user, opts.hash_name)
        scram = ScramClient(opts.hash_name, account.user, account.password, salted_password=cached)
        conn.write(_auth(opts.hash_name, scram.first()))
        m = await conn.expect(RE_CHALLENGE, timeout)
        conn.write(_response(scram.respond(base64.b64decode(m.group(1)))))
        m = await conn.expect(RE_SUCCESS, timeout)
        if m.group(1):
            scram.verify(base64.b64decode(m.group(1)))
        if cached is None and scram.salted_password is not None:
            creds.put(account.user, opts.hash_name, scram.salted_password)
        t2 = time.perf_counter()

        conn.write(opener)  # RFC 7395 §3.7: a new <open/> restarts the stream
        await conn.expect(RE_FEATURES, timeout)
        conn.write(bind_iq(resource))
        m = await conn.expect(RE_BIND, timeout)
        jid = m.group(1).decode()
        t3 = time.perf_counter()

        t4 = t3
        if opts.presence != "none":
            conn.write(INITIAL_PRESENCE)
            if opts.presence == "echo":
                await conn.expect(RE_PRESENCE, timeout)
            t4 = time.perf_counter()
    except BaseException:
        conn.abort()
        raise
    timings = {"connect": t1 - t0, "tls": 0.0, "auth": t2 - t1, "bind": t3 - t2, "presence": t4 - t3}
    return Session(conn, account, jid, timings)


async def ws_close(session: Session, time_limit: float = 10.0) -> None:
    """RFC 7395 §3.6: ``<close/>`` both ways, then the WebSocket closing handshake, then TCP."""
    conn = session.conn
    assert isinstance(conn, WsConn)
    t0 = time.perf_counter()
    conn.set_sink(None)
    conn.clear()
    try:
        conn.write(CLOSE)
        await conn.expect(RE_CLOSE, time_limit)
        conn.send_close_frame()
    except XmppError:
        pass
    try:
        await asyncio.wait_for(asyncio.shield(conn.lost), time_limit)
    except TimeoutError:
        conn.abort()
    session.timings["close"] = time.perf_counter() - t0
