"""Framings: RFC 7395 WebSocket messages and XEP-0124/0206 BOSH bodies, alone and under a c2s stream."""

from __future__ import annotations

import pytest

from roost.stream.c2s import C2SSettings, C2SStream, Closed
from roost.stream.framing import FRAMING, BoshFraming, WebSocketFraming
from roost.xml.element import Element
from roost.xml.fragment import parse_element
from roost.xml.parser import StreamEnd, StreamOpen, XmlStreamError

WS_OPEN = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>"


def test_websocket_open_element_close() -> None:
    framing = WebSocketFraming()
    (opened,) = framing.feed(WS_OPEN)
    assert isinstance(opened, StreamOpen) and opened.header.attrs["to"] == "example.org"
    (message,) = framing.feed(b"<message xmlns='jabber:client' to='a@example.org'><body>x</body></message>")
    assert isinstance(message, Element) and message.ns == "jabber:client" and message.find_text("body") == "x"
    assert framing.feed(b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>") == [StreamEnd()]


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<message xmlns='jabber:client'/><message xmlns='jabber:client'/>", "not-well-formed"),
        (b"<message xmlns='jabber:client'>", "not-well-formed"),
        (b"", "not-well-formed"),
        (
            b"<?xml version='1.0' encoding='UTF-16'?><open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            "unsupported-encoding",
        ),
        (b"<!-- c --><message xmlns='jabber:client'/>", "restricted-xml"),
        (b"<message xmlns='jabber:client'><body>" + b"x" * 2000 + b"</body></message>", "policy-violation"),
    ],
)
def test_websocket_message_must_be_one_clean_element(data: bytes, condition: str) -> None:
    with pytest.raises(XmlStreamError) as e:
        WebSocketFraming(max_stanza_bytes=1000).feed(data)
    assert e.value.condition == condition


def test_websocket_stream_writes_open_and_self_declaring_elements() -> None:
    stream = C2SStream(
        C2SSettings(domains=frozenset({"example.org"}), tls_available=False),
        secure=True,
        framing=WebSocketFraming(),
    )
    assert stream.receive_data(WS_OPEN) == []
    opened, features = (parse_element(item.decode()) for item in stream.items_to_send())
    assert opened.name == "open" and opened.ns == FRAMING and opened.attrs["from"] == "example.org"
    assert opened.attrs["id"] == stream.stream_id and opened.attrs["version"] == "1.0"
    assert features.name == "features" and features.ns == "http://etherx.jabber.org/streams"
    assert features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is not None


def test_websocket_stream_error_and_see_other_uri_are_separate_messages() -> None:
    stream = C2SStream(C2SSettings(domains=frozenset({"example.org"})), framing=WebSocketFraming())
    events = stream.receive_data(WS_OPEN.replace(b"example.org", b"elsewhere.example"))
    assert isinstance(events[-1], Closed)
    error, close = (parse_element(item.decode()) for item in events[-1].final_items)
    assert error.name == "error" and error.find("host-unknown") is not None
    assert close.name == "close" and close.ns == FRAMING
    stream = C2SStream(C2SSettings(domains=frozenset({"example.org"})), framing=WebSocketFraming())
    stream.receive_data(WS_OPEN)
    (closed,) = stream.close(see_other_uri="wss://other.example/xmpp")
    assert isinstance(closed, Closed)
    (close,) = (parse_element(item.decode()) for item in closed.final_items)
    assert close.attrs["see-other-uri"] == "wss://other.example/xmpp"


def test_bosh_body_session_request_restart_and_terminate() -> None:
    framing = BoshFraming()
    request = (
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='example.org' xml:lang='en' "
        b"xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0' wait='60' hold='1'/>"
    )
    (opened,) = framing.feed(request)
    assert isinstance(opened, StreamOpen)
    assert opened.header.attrs == {"to": "example.org", "xml:lang": "en", "version": "1.0"}
    restart = (
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='3' sid='s' xmlns:xmpp='urn:xmpp:xbosh' "
        b"xmpp:restart='true'/>"
    )
    assert isinstance(framing.feed(restart)[0], StreamOpen)
    items = framing.feed(
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='4' sid='s' type='terminate'>"
        b"<presence xmlns='jabber:client' type='unavailable'/></body>"
    )
    assert [type(i).__name__ for i in items] == ["Element", "StreamEnd"]
    with pytest.raises(XmlStreamError):
        framing.feed(b"<message xmlns='jabber:client'/>")


def test_bosh_stream_takes_parsed_items_and_writes_no_header_bytes() -> None:
    framing = BoshFraming()
    stream = C2SStream(
        C2SSettings(domains=frozenset({"example.org"}), tls_available=False), secure=True, framing=framing
    )
    opened = BoshFraming.open_item({"to": "example.org", "{urn:xmpp:xbosh}version": "1.0"})
    assert stream.receive_items([opened]) == []
    header = framing.take_header()
    assert header is not None and header["from"] == "example.org" and header["id"] == stream.stream_id
    assert framing.take_header() is None
    (features,) = stream.items_to_send()
    assert parse_element(features.decode()).name == "features"


def test_bosh_restart_without_to_uses_the_session_requests() -> None:
    framing = BoshFraming()
    framing.feed(
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='example.org' xml:lang='de'/>"
    )
    (opened,) = framing.feed(
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='2' sid='s' xmlns:xmpp='urn:xmpp:xbosh' "
        b"xmpp:restart='true' xmpp:version='1.0'/>"
    )
    assert isinstance(opened, StreamOpen)
    assert opened.header.attrs == {"to": "example.org", "xml:lang": "de", "version": "1.0"}


@pytest.mark.parametrize("framing", [WebSocketFraming, BoshFraming])
def test_no_starttls_over_http_framings(framing: type[WebSocketFraming] | type[BoshFraming]) -> None:
    settings = C2SSettings(domains=frozenset({"example.org"}), require_encryption=False)
    stream = C2SStream(settings, framing=framing())
    if framing is WebSocketFraming:
        stream.receive_data(WS_OPEN)
    else:
        stream.receive_items([BoshFraming.open_item({"to": "example.org", "version": "1.0"})])
    features = parse_element(stream.items_to_send()[-1].decode())
    assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is None
    assert features.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") is not None
    starttls = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    if framing is BoshFraming:
        starttls = b"<body xmlns='http://jabber.org/protocol/httpbind'>" + starttls + b"</body>"
    events = stream.receive_data(starttls)
    closed = events[-1]
    assert isinstance(closed, Closed) and closed.error is not None
    assert closed.error.condition == "unsupported-feature"


def test_websocket_parser_outlives_messages_but_never_joins_them() -> None:
    framing = WebSocketFraming()
    framing.feed(WS_OPEN)
    with pytest.raises(XmlStreamError):
        framing.feed(b"<message xmlns='jabber:client'><body>half")  # the rest must not complete it
    with pytest.raises(XmlStreamError):
        framing.feed(b"</w>")  # closing our private wrapper is not a way out
    (message,) = framing.feed(b"<message xmlns='jabber:client'><body>whole</body></message>")
    assert isinstance(message, Element) and message.find_text("body") == "whole"
    with pytest.raises(XmlStreamError):
        framing.feed(b"<message xmlns='jabber:client'/><presence xmlns='jabber:client'")
    with pytest.raises(XmlStreamError):
        framing.feed(b"   ")  # no whitespace keepalives (RFC 7395 §3.8)
