"""The client side of stream management (XEP-0198) on a raw connection: exact stanza counts.

The generator has no XML tree, but acknowledging needs an exact count of the stanzas received
(XEP-0198 §4: ``h`` is the number of stanzas *handled*), and regexes cannot tell a top-level
``<message/>`` from one nested in a carbon or an error. So each tracked connection feeds what it
receives to an expat parser that only keeps the element depth: every top-level ``message``,
``presence`` or ``iq`` that ends is one stanza. ``<r/>`` is answered at once with the count so far;
``<enabled/>``, ``<failed/>`` and ``<resumed/>`` are noted. Outbound stanzas are counted too, and the
most recent ones kept, so that after a resumption whatever the server says it did not get (§5) can be
sent again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from xml.parsers import expat

NS_SM = b"urn:xmpp:sm:3"
STANZAS = frozenset(("message", "presence", "iq"))
#: The parser starts inside a stream: what arrives after login is the stream's content.
_STREAM_OPEN = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>"
H_MOD = 1 << 32  # h wraps at 2^32 (§4)


class SmTracker:
    """One account's stream-management session, across the connections it is resumed on."""

    __slots__ = (
        "_depth",
        "_parser",
        "_top",
        "_top_attrs",
        "closing",
        "enabled",
        "error",
        "handled",
        "outcome",
        "recent",
        "resume_id",
        "sent",
        "write",
    )

    def __init__(self, keep_sent: int = 512) -> None:
        self.write: Callable[[bytes], None] | None = None
        self.handled = 0  # inbound stanzas counted since <enabled/>
        self.sent = 0  # outbound stanzas written since <enable/>
        self.recent: deque[bytes] = deque(maxlen=keep_sent)
        self.enabled = False  # counting (between <enabled/> or <resumed/> and the end)
        self.resume_id: str | None = None
        self.closing = False  # after our final <a/>: answer nothing more
        self.error: str | None = None  # what the parser could not read
        #: set once the server answers <enable/> or <resume/>: (element name, its attributes)
        self.outcome: asyncio.Future[tuple[str, dict[str, str]]] | None = None
        self._parser: expat.XMLParserType | None = None
        self._depth = 0
        self._top = ""
        self._top_attrs: dict[str, str] = {}

    # -- the connection -----------------------------------------------------------------------
    def attach(self, write: Callable[[bytes], None], resumed: bool) -> None:
        """A new connection: a fresh parser. Unless it resumes this session, counting starts over."""
        if not resumed:
            self.handled = self.sent = 0
            self.recent.clear()
            self.enabled = False
            self.resume_id = None
        self.closing = False
        self.write = write
        parser = expat.ParserCreate()
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.Parse(_STREAM_OPEN, False)
        self._parser = parser
        self._depth = 1

    def detach(self) -> None:
        """The connection is gone (dropped or closed): break the parser's cycle through us."""
        parser = self._parser
        if parser is not None:
            parser.StartElementHandler = None
            parser.EndElementHandler = None
        self._parser = None
        self.write = None

    def feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is not None:
            try:
                parser.Parse(data, False)
            except expat.ExpatError as exc:
                # Counting is over on this connection (acks stop, the server will notice).
                self.error = f"{exc}: {data[:200]!r}"
                self.detach()

    # -- requests ------------------------------------------------------------------------------
    def request_enable(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[tuple[str, dict[str, str]]]:
        """Write ``<enable resume='true'/>``; the future resolves with ``enabled`` or ``failed``."""
        assert self.write is not None
        self.outcome = loop.create_future()
        self.write(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        return self.outcome

    def on_sent(self, data: bytes) -> None:
        """One stanza written (call only for stanzas: nonzas are not counted)."""
        if self.enabled:
            self.sent += 1
            self.recent.append(data)

    def resend_after(self, server_h: int) -> list[bytes]:
        """What the server did not handle of ours, by its ``h`` (§5): to be written again."""
        missing = (self.sent - server_h) % H_MOD
        if missing == 0:
            return []
        # Re-sent stanzas are counted again from the server's h.
        self.sent = server_h
        tail = list(self.recent)[-missing:] if missing <= len(self.recent) else list(self.recent)
        return tail

    def final_ack(self) -> None:
        """Before ``</stream:stream>``: acknowledge everything handled, then answer nothing more.
        What arrives after this was not acknowledged, so the server must treat it as undelivered."""
        if self.enabled and self.write is not None:
            self.write(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (self.handled % H_MOD))
        self.closing = True

    # -- expat handlers -------------------------------------------------------------------------
    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if self._depth == 1:
            self._top = name
            self._top_attrs = attrs
        self._depth += 1

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth != 1:
            return
        if name in STANZAS:
            if self.enabled and not self.closing:
                self.handled += 1
            return
        attrs = self._top_attrs
        if name == "r":
            if self.enabled and not self.closing and self.write is not None:
                self.write(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (self.handled % H_MOD))
        elif name in ("enabled", "resumed"):
            self.enabled = True
            if name == "enabled" and attrs.get("resume") in ("true", "1"):
                self.resume_id = attrs.get("id")
            self._settle(name, attrs)
        elif name == "failed":
            self.enabled = False
            self._settle(name, attrs)

    def _settle(self, name: str, attrs: dict[str, str]) -> None:
        outcome = self.outcome
        if outcome is not None and not outcome.done():
            outcome.set_result((name, attrs))
