"""How a stream's items travel: bytes ⇄ (open, element, close).

The stream core (:mod:`roost.stream.core`) works on parsed items — :class:`StreamOpen`, one
:class:`Element` per top-level element, :class:`StreamEnd` — and hands out one ``bytes`` item per
element it writes. A framing does the rest:

- :class:`XmlFraming`: the classic ``<stream:stream>`` over a byte stream (TCP, RFC 6120 §4), with the
  incremental expat parser; restarts reset it.
- :class:`WebSocketFraming`: RFC 7395; every message is one complete element, ``<open/>`` and
  ``<close/>`` in ``urn:ietf:params:xml:ns:xmpp-framing`` stand for the stream header and closing tag.
- :class:`BoshFraming`: XEP-0124/XEP-0206; the transport owns the ``<body/>`` wrapper. It feeds the
  wrapper's children (or a whole ``<body/>``), signals the session request and ``xmpp:restart`` as
  an open and ``type='terminate'`` as the end, and sends each element the stream writes inside a
  ``<body/>`` of its own choosing.

Framings are sans-IO too: no sockets, no timers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Final

from roost.xml.element import Element
from roost.xml.ns import STREAM
from roost.xml.parser import ParseEvent, StreamEnd, StreamOpen, StreamParser, XmlStreamError
from roost.xml.serializer import escape_attr, serialize

#: RFC 7395 §3.3.1
FRAMING: Final = "urn:ietf:params:xml:ns:xmpp-framing"
#: XEP-0124 / XEP-0206
HTTPBIND: Final = "http://jabber.org/protocol/httpbind"
XBOSH: Final = "urn:xmpp:xbosh"


def _header_attrs(attrs: Mapping[str, str]) -> str:
    """The header attributes as written (the stream builds them in :data:`_HEADER_ATTRS` order)."""
    out = ""
    for key, value in attrs.items():
        if key == "id" or key == "version":  # ours, URL-safe base64 and "1.0"
            out += f' {key}="{value}"'
        else:
            out += f' {key}="{escape_attr(value)}"'
    return out


def _self_declaring(el: Element, content_ns: str) -> bytes:
    """``el`` as a document of its own: stanzas state their namespace, stream-level elements
    (``<stream:features/>``, ``<stream:error/>``) declare the ``stream`` prefix and the content
    namespace their children are in."""
    text = serialize(el)
    if el.ns == STREAM:
        name_end = len(el.name) + 8  # "<stream:" + name
        text = f'{text[:name_end]} xmlns:stream="{STREAM}" xmlns="{content_ns}"{text[name_end:]}'
    return text.encode()


class Framing:
    """Turns bytes into stream items and stream output into bytes (one object per stream)."""

    #: Short name (also part of the stream features cache key: the bytes differ per framing).
    name: ClassVar[str] = ""
    #: The prefix the peer's header must use for the streams namespace (None: no such header).
    stream_prefix: ClassVar[str | None] = None
    parser: StreamParser

    def __init__(self, max_stanza_bytes: int = 262144) -> None:
        self.parser = StreamParser(max_stanza_bytes)

    def feed(self, data: bytes) -> list[ParseEvent]:
        """Items completed by ``data``. Raises :class:`XmlStreamError`."""
        raise NotImplementedError

    def feeder(self) -> Callable[[bytes], list[ParseEvent]]:
        """:meth:`feed`, or something equivalent and cheaper to call (the stream keeps it)."""
        return self.feed

    def reset(self) -> None:
        """A stream restart (after STARTTLS or SASL): forget the old stream's parse state."""
        self.parser.reset()

    def header(self, attrs: Mapping[str, str], content_ns: str) -> bytes:
        """Our stream header (``from``, ``to``, ``id``, ``version``, ``xml:lang``)."""
        raise NotImplementedError

    def encode(self, el: Element, content_ns: str) -> bytes:
        """One element as it goes on the wire in this framing."""
        return serialize(el, content_ns).encode()

    def closing(self, see_other_uri: str | None = None) -> bytes:
        """Our stream's end (after a stream error, if any)."""
        raise NotImplementedError


class XmlFraming(Framing):
    """``<stream:stream>`` over bytes, RFC 6120 §4."""

    name = "xml"
    stream_prefix = "stream"  # RFC 6120 §4.8.5

    def feed(self, data: bytes) -> list[ParseEvent]:
        return self.parser.feed(data)

    def feeder(self) -> Callable[[bytes], list[ParseEvent]]:
        return self.parser.feed  # one call less per read (the parser object lives as long as we do)

    def header(self, attrs: Mapping[str, str], content_ns: str) -> bytes:
        out = f'<?xml version="1.0"?><stream:stream xmlns="{content_ns}" xmlns:stream="{STREAM}"'
        for key, value in attrs.items():
            if key == "id" or key == "version":  # ours: URL-safe base64 and "1.0"
                out += f' {key}="{value}"'
            else:
                out += f' {key}="{escape_attr(value)}"'
        return (out + ">").encode()

    def closing(self, see_other_uri: str | None = None) -> bytes:
        return b"</stream:stream>"


class _OneElementFraming(Framing):
    """Framings where input arrives as complete elements, one message (or body) at a time.

    One expat parser serves the whole connection (a new one per message would cost more than the
    parse): it is opened once inside a private wrapper element, and each message must leave it back
    between top-level elements, else the message was not complete elements.
    """

    _WRAPPER: ClassVar[bytes] = b"<w xmlns='urn:roost:frame' xmlns:stream='" + STREAM.encode() + b"'>"

    def __init__(self, max_stanza_bytes: int = 262144) -> None:
        super().__init__(max_stanza_bytes)
        self.parser = StreamParser(max_stanza_bytes, root=("urn:roost:frame", "w"))
        self.max_stanza_bytes = max_stanza_bytes
        self._opened = False

    def _parse(self, data: bytes) -> list[Element]:
        if len(data) > self.max_stanza_bytes:
            raise XmlStreamError("policy-violation", "stanza too large")
        if data[:5] == b"<?xml":
            # An XML declaration may only start a document: take it off (checking its encoding).
            end = data.find(b"?>")
            if end < 0:
                raise XmlStreamError("not-well-formed", "unterminated XML declaration")
            decl = data[: end + 2].lower()
            if b"encoding" in decl and b"utf-8" not in decl and b"utf8" not in decl:
                raise XmlStreamError("unsupported-encoding", "UTF-8 only")
            data = data[end + 2 :]
        parser = self.parser
        if not self._opened:
            parser.reset()
            parser.feed(self._WRAPPER)
            self._opened = True
        try:
            items = parser.feed(data)
            if not parser.between_elements or not data.rstrip().endswith(b">"):
                raise XmlStreamError("not-well-formed", "a frame is complete elements")
        except XmlStreamError:
            self._opened = False  # the next message starts on a fresh parser
            raise
        return items  # type: ignore[return-value]  # only Elements inside the wrapper

    def reset(self) -> None:
        pass  # nothing carries over from one message to the next


class WebSocketFraming(_OneElementFraming):
    """RFC 7395: one element per WebSocket text message; ``<open/>``/``<close/>`` frame the stream.

    Stanzas carry their namespace themselves (§3.3.3: ``xmlns='jabber:client'`` on each), and
    stream-level elements declare the ``stream`` prefix on themselves.
    """

    name = "websocket"

    def __init__(self, max_stanza_bytes: int = 262144) -> None:
        super().__init__(max_stanza_bytes)
        #: The peer's ``see-other-uri`` from its ``<close/>``, if it redirected us.
        self.see_other_uri: str | None = None

    def feed(self, data: bytes) -> list[ParseEvent]:
        elements = self._parse(data)
        if len(elements) != 1:
            # RFC 7395 §3.3.3: every message is one complete XML element.
            self._opened = False
            raise XmlStreamError("not-well-formed", "one element per WebSocket message")
        el = elements[0]
        if el.ns == FRAMING:
            if el.name == "open":
                return [StreamOpen(el, None, None)]
            if el.name == "close":
                # §3.6.1: a redirect; the client's driver reconnects there.
                self.see_other_uri = el.attrs.get("see-other-uri")
                return [StreamEnd()]
        return elements  # type: ignore[return-value]

    def header(self, attrs: Mapping[str, str], content_ns: str) -> bytes:
        return f'<open xmlns="{FRAMING}"{_header_attrs(attrs)}/>'.encode()

    def encode(self, el: Element, content_ns: str) -> bytes:
        return _self_declaring(el, content_ns)

    def closing(self, see_other_uri: str | None = None) -> bytes:
        if see_other_uri:
            # RFC 7395 §3.6.1: redirection with see-other-uri on <close/>.
            return f'<close xmlns="{FRAMING}" see-other-uri="{escape_attr(see_other_uri)}"/>'.encode()
        return f'<close xmlns="{FRAMING}"/>'.encode()


class BoshFraming(_OneElementFraming):
    """XEP-0124/XEP-0206: the HTTP transport owns the ``<body/>`` wrapper.

    Input: :meth:`feed` takes one whole ``<body/>`` (its children become items; the session
    creation request and ``xmpp:restart='true'`` become an open; ``type='terminate'`` the end), or
    the transport parses the body itself and passes items to ``Stream.receive_items``
    (:meth:`open_item` builds the open). Output: one element per item, no header bytes: the
    transport puts the stream attributes (:attr:`header_attrs`) on its response ``<body/>``.
    """

    name = "bosh"

    def __init__(self, max_stanza_bytes: int = 262144) -> None:
        super().__init__(max_stanza_bytes)
        #: The attributes of our last stream header (from, id, version, xml:lang), for the transport.
        self.header_attrs: dict[str, str] = {}
        self._header_out = False
        self._session_attrs: dict[str, str] = {}

    def restart_item(self, attrs: Mapping[str, str]) -> StreamOpen:
        """The open an ``xmpp:restart`` body stands for; 'to' and 'xml:lang' default to the session
        request's if the restart body leaves them out."""
        merged = dict(self._session_attrs)
        merged.update(attrs)
        return self.open_item(merged)

    @staticmethod
    def open_item(attrs: Mapping[str, str]) -> StreamOpen:
        """The open a session creation request or an ``xmpp:restart`` stands for (XEP-0206 §3, §5)."""
        header = Element("stream", STREAM)
        for key in ("to", "from", "xml:lang", "id"):
            value = attrs.get(key)
            if value is not None:
                header.attrs[key] = value
        if "authid" in attrs:  # XEP-0206 §3: the session creation response's stream id
            header.attrs["id"] = attrs["authid"]
        version = attrs.get("{" + XBOSH + "}version") or attrs.get("xmpp:version") or attrs.get("version")
        if version is not None:
            header.attrs["version"] = version
        return StreamOpen(header, None, None)

    def feed(self, data: bytes) -> list[ParseEvent]:
        body = self._parse_body(data)
        items: list[ParseEvent] = []
        restart = body.attrs.get("{" + XBOSH + "}restart") in ("true", "1")
        if restart:
            items.append(self.restart_item(body.attrs))
        elif "to" in body.attrs:  # the session creation request (XEP-0124 §7.1)
            self._session_attrs = {k: v for k, v in body.attrs.items() if k in ("to", "xml:lang")}
            items.append(self.open_item(body.attrs))
        items.extend(body.elements())
        if body.attrs.get("type") == "terminate":
            items.append(StreamEnd())
        return items

    def _parse_body(self, data: bytes) -> Element:
        elements = self._parse(data)
        if len(elements) != 1 or elements[0].ns != HTTPBIND or elements[0].name != "body":
            raise XmlStreamError("bad-format", "expected one <body/>")
        return elements[0]

    def header(self, attrs: Mapping[str, str], content_ns: str) -> bytes:
        self.header_attrs = dict(attrs)
        self._header_out = True
        return b""

    def take_header(self) -> dict[str, str] | None:
        """The attributes of a stream header written since the last call (for the transport's
        ``<body/>``: the session creation request or response, or ``xmpp:restart``), or None."""
        if not self._header_out:
            return None
        self._header_out = False
        return self.header_attrs

    def encode(self, el: Element, content_ns: str) -> bytes:
        # XEP-0206 §4: stanzas carry xmlns='jabber:client'; stream elements declare their prefix.
        return _self_declaring(el, content_ns)

    def closing(self, see_other_uri: str | None = None) -> bytes:
        return b""  # the transport answers with <body type='terminate'/>


def framing_for(name: str, max_stanza_bytes: int = 262144) -> Framing:
    """A new framing object by name ("xml", "websocket", "bosh")."""
    kinds: dict[str, type[Framing]] = {"xml": XmlFraming, "websocket": WebSocketFraming, "bosh": BoshFraming}
    return kinds[name](max_stanza_bytes)
