"""One raw XMPP client connection: an asyncio Protocol with a byte buffer and pattern waits.

The generator must never be the bottleneck, so there is no XML parser here. During login a coroutine
waits for a regex to appear in the received bytes (``expect``); everything before the match is
dropped. Once a session is up a scenario may install a *sink*: a callback that gets every received
chunk as it arrives and scans it itself (e.g. for timestamps embedded in message bodies).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable
from typing import cast

# Any of these during a pattern wait means the exchange failed; report it instead of timing out.
_FAILURE = re.compile(rb"<(?:[\w-]+:)?error\b|<failure\b|type=['\"]error['\"]")


class XmppError(Exception):
    """The server answered with an error, closed the stream, or did not answer in time."""


class XmppConn(asyncio.Protocol):
    """Buffered client protocol. Not thread-safe; one coroutine drives it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pattern: re.Pattern[bytes] | None = None
        self._waiter: asyncio.Future[re.Match[bytes]] | None = None
        self._sink: Callable[[bytes], None] | None = None
        self.eof = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)
            return
        self._buf += data
        if self._waiter is not None:
            self._check()

    def eof_received(self) -> bool:
        self.eof = True
        self._fail(XmppError("server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._fail(XmppError(f"connection lost: {exc}" if exc else "connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    # API ----------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def expect(self, pattern: re.Pattern[bytes], time_limit: float) -> re.Match[bytes]:
        """Wait until ``pattern`` occurs in the received bytes; consume everything up to its end.

        ``match.string[:match.end()]`` is the consumed text (e.g. the whole feature list).
        """
        if self._waiter is not None:
            raise RuntimeError("only one expect() at a time")
        m = pattern.search(self._buf)
        if m is not None:
            return self._consume(m)
        if self.eof:
            raise XmppError(f"connection closed while waiting for {pattern.pattern!r}")
        self._pattern = pattern
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(self._waiter, time_limit)
        except TimeoutError:
            tail = bytes(self._buf[-300:])
            raise XmppError(f"timeout waiting for {pattern.pattern!r}; last bytes {tail!r}") from None
        finally:
            self._waiter = None
            self._pattern = None

    def set_sink(self, sink: Callable[[bytes], None] | None) -> None:
        """Hand every further chunk to ``sink`` (what is still buffered goes to it first)."""
        self._sink = sink
        if sink is not None and self._buf:
            pending = bytes(self._buf)
            self._buf.clear()
            sink(pending)

    def clear(self) -> None:
        self._buf.clear()

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str, time_limit: float) -> None:
        assert self.transport is not None
        self._buf.clear()
        loop = asyncio.get_running_loop()
        new = await asyncio.wait_for(
            loop.start_tls(self.transport, self, context, server_hostname=server_hostname), time_limit
        )
        if new is None:
            raise XmppError("TLS handshake did not complete")
        self.transport = new

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # internals ----------------------------------------------------------------------------------

    def _check(self) -> None:
        assert self._pattern is not None and self._waiter is not None
        m = self._pattern.search(self._buf)
        if m is not None:
            if not self._waiter.done():
                self._waiter.set_result(self._consume(m))
            return
        f = _FAILURE.search(self._buf)
        if f is not None and not self._waiter.done():
            start = max(0, f.start() - 200)
            snippet = bytes(self._buf[start : f.start() + 300])
            self._waiter.set_exception(XmppError(f"server error: {snippet!r}"))

    def _consume(self, m: re.Match[bytes]) -> re.Match[bytes]:
        # Re-match on an immutable copy so the caller's match survives the buffer being trimmed.
        text = bytes(self._buf[: m.end()])
        del self._buf[: m.end()]
        m2 = m.re.match(text, m.start())
        assert m2 is not None
        return m2

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            # A pattern may already be complete in what arrived before the close.
            assert self._pattern is not None
            m = self._pattern.search(self._buf)
            if m is not None:
                self._waiter.set_result(self._consume(m))
            else:
                self._waiter.set_exception(exc)
