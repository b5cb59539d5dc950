"""The stream core beyond c2s: jabber:server and jabber:component:accept streams, both roles, in memory.

The features here are stand-ins (the real dialback, SASL EXTERNAL and XEP-0114 handshake come with
federation): they show that such steps plug into the core without changing it.
"""

from __future__ import annotations

import hashlib

from roost.stanza.errors import StreamError
from roost.stream.core import Closed, Established, Feature, Opened, Phase, Role, Stream, StreamEvent
from roost.stream.framing import XmlFraming
from roost.stream.pair import StreamPair
from roost.xml.element import Element
from roost.xml.ns import COMPONENT, SERVER
from roost.xml.parser import StreamOpen, StreamParser

HELLO = "urn:example:hello"


class HelloServer(Feature):
    """Receiving: offers <hello/>; a <hello/> authenticates the peer and restarts the stream."""

    def advertise(self, stream: Stream) -> Element | None:
        return None if stream.authenticated else Element("hello", HELLO)

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != HELLO or stream.authenticated:
            return None
        stream.authenticated = True
        stream.send(Element("welcome", HELLO))
        stream.restart()
        return []


class HelloClient(Feature):
    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        if features.find("hello", HELLO) is None:
            return None
        stream.send(Element("hello", HELLO))
        return []

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != HELLO or el.name != "welcome":
            return None
        stream.authenticated = True
        stream.restart()
        return []


def test_server_to_server_streams_negotiate_a_plugged_feature_then_carry_jabber_server_stanzas() -> None:
    receiving = Stream(XmlFraming(), [HelloServer()], content_ns=SERVER, domains=frozenset({"b.example"}))
    initiating = Stream(XmlFraming(), [HelloClient()], role=Role.INITIATING, content_ns=SERVER)
    initiating.start("b.example", from_="a.example")
    pair = StreamPair(initiating, receiving)
    client_events, server_events = pair.pump()
    assert [type(e) for e in client_events] == [Opened, Opened, Established]
    assert server_events == []
    assert receiving.phase is Phase.ESTABLISHED and initiating.phase is Phase.ESTABLISHED
    header = StreamParser().feed(pair.initiating.wire[0])[0]
    assert isinstance(header, StreamOpen) and header.content_ns == SERVER
    assert header.header.attrs["from"] == "a.example" and header.header.attrs["to"] == "b.example"
    # A stanza built in any stanza namespace travels in the stream's (RFC 6120 §4.8.3).
    initiating.send(Element("message", "jabber:client", {"from": "x@a.example", "to": "y@b.example"}))
    _, server_events = pair.pump()
    (message,) = server_events
    assert isinstance(message, Element) and message.ns == SERVER and message.name == "message"
    # An element that states jabber:client on a jabber:server stream is not a stanza there.
    receiving_events = receiving.receive_data(b"<message xmlns='jabber:client'/>")
    closed = receiving_events[-1]
    assert isinstance(closed, Closed) and closed.error is not None
    assert closed.error.condition == "unsupported-stanza-type"


class HandshakeServer(Feature):
    """XEP-0114 §3 stand-in: <handshake>hex(SHA-1(stream id + secret))</handshake>."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.name != "handshake" or el.ns != COMPONENT:
            return None
        expected = hashlib.sha1((stream.stream_id + self.secret).encode()).hexdigest()
        if el.text.strip().lower() != expected:
            return stream.close(StreamError("not-authorized"))
        stream.authenticated = True
        stream.send(Element("handshake", COMPONENT))
        return stream.establish()


class HandshakeClient(Feature):
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        digest = hashlib.sha1((stream.stream_id + self.secret).encode()).hexdigest()
        handshake = Element("handshake", COMPONENT)
        handshake.text = digest
        stream.send(handshake)
        return []

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.name != "handshake" or el.ns != COMPONENT:
            return None
        stream.authenticated = True
        return stream.establish()


def component_pair(client_secret: str) -> StreamPair:
    receiving = Stream(
        XmlFraming(),
        [HandshakeServer("s3cret")],
        content_ns=COMPONENT,
        domains=frozenset({"muc.example"}),
        versionless=True,
    )
    initiating = Stream(
        XmlFraming(),
        [HandshakeClient(client_secret)],
        role=Role.INITIATING,
        content_ns=COMPONENT,
        versionless=True,
    )
    initiating.start("muc.example")
    return StreamPair(initiating, receiving)


def test_component_stream_without_version_or_features_handshakes_then_carries_stanzas() -> None:
    pair = component_pair("s3cret")
    client_events, server_events = pair.pump()
    assert [type(e) for e in client_events] == [Opened, Established]
    for side in (pair.initiating, pair.receiving):
        header = StreamParser().feed(side.wire[0])[0]
        assert isinstance(header, StreamOpen) and "version" not in header.header.attrs
    assert not any(b"features" in item for item in pair.receiving.wire)
    pair.initiating.stream.send(Element("presence", COMPONENT, {"from": "room@muc.example"}))
    _, server_events = pair.pump()
    assert [e.name for e in server_events if isinstance(e, Element)] == ["presence"]


def test_component_with_the_wrong_secret_is_refused() -> None:
    client_events, server_events = component_pair("guess").pump()
    closed = server_events[-1]
    assert (
        isinstance(closed, Closed) and closed.error is not None and closed.error.condition == "not-authorized"
    )
    client_closed = client_events[-1]
    assert isinstance(client_closed, Closed) and client_closed.peer_error is not None
