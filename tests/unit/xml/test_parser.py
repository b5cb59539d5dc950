"""The hardened incremental parser: events, namespaces, restricted XML, size and depth limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.xml.element import Element
from roost.xml.parser import StreamEnd, StreamOpen, StreamParser, XmlStreamError
from roost.xml.serializer import serialize

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' xml:lang='en'>"
)


def opened(max_stanza_bytes: int = 262144) -> StreamParser:
    parser = StreamParser(max_stanza_bytes)
    events = parser.feed(HEADER)
    assert len(events) == 1 and isinstance(events[0], StreamOpen)
    return parser


def test_header_event_carries_attributes_namespace_and_prefix() -> None:
    event = StreamParser().feed(HEADER)[0]
    assert isinstance(event, StreamOpen)
    assert event.content_ns == "jabber:client"
    assert event.prefix == "stream"
    assert event.header.attrs == {"to": "example.org", "version": "1.0", "xml:lang": "en"}


def test_stanzas_are_yielded_one_by_one_with_namespaces() -> None:
    parser = opened()
    events = parser.feed(
        b"<message to='a@b'><body>hi</body><x:y xmlns:x='urn:x' x:attr='1'/></message><presence/>"
    )
    assert [e.name for e in events if isinstance(e, Element)] == ["message", "presence"]
    message = events[0]
    assert isinstance(message, Element)
    assert message.ns == "jabber:client"
    assert message.find("body", "jabber:client") is not None
    y = message.find("y", "urn:x")
    assert y is not None and y.attrs == {"{urn:x}attr": "1"}


def test_stanza_split_across_feeds_and_byte_by_byte() -> None:
    parser = opened()
    data = "<message><body>héllo &amp; &lt;wörld&gt;</body></message>".encode()
    events: list[object] = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i : i + 1]))
    assert len(events) == 1
    message = events[0]
    assert isinstance(message, Element)
    assert message.find_text("body") == "héllo & <wörld>"


def test_stream_end() -> None:
    parser = opened()
    assert parser.feed(b"</stream:stream>") == [StreamEnd()]


def test_whitespace_between_stanzas_is_ignored() -> None:
    parser = opened()
    assert parser.feed(b"  \n\t ") == []
    assert len(parser.feed(b"<iq/>")) == 1


def test_text_between_stanzas_is_bad_format() -> None:
    parser = opened()
    with pytest.raises(XmlStreamError) as e:
        parser.feed(b"junk")
    assert e.value.condition == "bad-format"


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!DOCTYPE x>", "restricted-xml"),
        (b"<!DOCTYPE x [<!ENTITY e 'boom'>]>", "restricted-xml"),
        (b"<!-- c -->", "restricted-xml"),
        (b"<?target data?>", "restricted-xml"),
    ],
)
def test_restricted_xml_before_the_stream(data: bytes, condition: str) -> None:
    with pytest.raises(XmlStreamError) as e:
        StreamParser().feed(data + HEADER)
    assert e.value.condition == condition


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!-- comment -->", "restricted-xml"),
        (b"<?pi x?>", "restricted-xml"),
        (b"<message><body>&ext;</body></message>", "restricted-xml"),
        (b"<message></iq>", "not-well-formed"),
        (b"<message a='1' a='2'/>", "not-well-formed"),
        (b"<undeclared:message/>", "bad-namespace-prefix"),
        (b"<message>\xff\xfe</message>", "not-well-formed"),
    ],
)
def test_bad_xml_in_the_stream(data: bytes, condition: str) -> None:
    parser = opened()
    with pytest.raises(XmlStreamError) as e:
        parser.feed(data)
    assert e.value.condition == condition


def test_non_utf8_declaration_is_unsupported_encoding() -> None:
    with pytest.raises(XmlStreamError) as e:
        StreamParser().feed(b"<?xml version='1.0' encoding='UTF-16'?><stream:stream/>")
    assert e.value.condition == "unsupported-encoding"


def test_wrong_root_is_refused() -> None:
    with pytest.raises(XmlStreamError) as e:
        StreamParser().feed(b"<html xmlns='http://www.w3.org/1999/xhtml'>")
    assert e.value.condition == "not-well-formed"
    with pytest.raises(XmlStreamError) as e:
        StreamParser().feed(b"<stream xmlns='urn:wrong'>")
    assert e.value.condition == "invalid-namespace"


def test_predefined_and_character_entities_are_allowed() -> None:
    parser = opened()
    message = parser.feed(b"<message><body>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;</body></message>")[0]
    assert isinstance(message, Element)
    assert message.find_text("body") == "<>&'\"AB"


def test_oversized_stanza_is_refused_while_it_streams_in() -> None:
    parser = opened(max_stanza_bytes=1000)
    parser.feed(b"<message><body>")
    with pytest.raises(XmlStreamError) as e:
        for _ in range(100):
            parser.feed(b"x" * 100)
    assert e.value.condition == "policy-violation"


def test_never_ending_start_tag_is_refused() -> None:
    parser = opened(max_stanza_bytes=1000)
    parser.feed(b"<message attr='")
    with pytest.raises(XmlStreamError) as e:
        for _ in range(100):
            parser.feed(b"y" * 100)
    assert e.value.condition == "policy-violation"


def test_many_small_stanzas_do_not_accumulate_towards_the_limit() -> None:
    parser = opened(max_stanza_bytes=200)
    for _ in range(100):
        assert len(parser.feed(b"<message><body>0123456789</body></message>")) == 1


def test_nesting_too_deep_is_refused() -> None:
    parser = StreamParser(max_depth=10)
    parser.feed(HEADER)
    with pytest.raises(XmlStreamError) as e:
        parser.feed(b"<a>" * 20)
    assert e.value.condition == "policy-violation"


def test_reset_starts_a_new_document() -> None:
    parser = opened()
    parser.reset()
    assert isinstance(parser.feed(HEADER)[0], StreamOpen)


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)
)
def test_text_round_trips_through_serializer_and_parser(text: str) -> None:
    text = "".join(c for c in text if c in "\t\n\r" or c >= " ")
    text = "".join(c for c in text if c not in "\ufffe\uffff")
    message = Element("message", "jabber:client", {"a": text})
    message.add("body", text=text)
    parser = opened()
    (parsed,) = parser.feed(serialize(message, "jabber:client").encode())
    assert isinstance(parsed, Element)
    assert parsed.attrs["a"] == text
    assert parsed.find_text("body") == text


def test_release_parser_between_stanzas_and_wake_with_header_declarations() -> None:
    parser = StreamParser(max_stanza_bytes=300)
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        b"xmlns:x='urn:x' to='example.org' version='1.0'>"
    )
    assert len(parser.feed(b"<message><body>one</body></message>  ")) == 1
    assert parser.release_parser()
    events = parser.feed(b"<message><x:tag/><body>two</body></message>")
    assert len(events) == 1
    message = events[0]
    assert isinstance(message, Element) and message.ns == "jabber:client"
    assert message.find("tag", "urn:x") is not None
    # limits still hold after waking, counted from the stanza's own start
    with pytest.raises(XmlStreamError):
        parser.feed(b"<message><body>" + b"z" * 400)


def test_no_release_inside_a_stanza_or_mid_tag() -> None:
    parser = opened()
    parser.feed(b"<message><body>half")
    assert not parser.release_parser()
    parser = opened()
    parser.feed(b"<message/><pres")
    assert not parser.release_parser()
    assert parser.feed(b"ence/>")[0].name == "presence"  # type: ignore[union-attr]


def test_stream_end_after_waking() -> None:
    parser = opened()
    assert parser.release_parser()
    assert parser.feed(b"</stream:stream>") == [StreamEnd()]


def test_oversized_text_arriving_in_one_read_is_refused() -> None:
    parser = opened(max_stanza_bytes=1000)
    with pytest.raises(XmlStreamError) as e:
        parser.feed(b"<message><body>" + b"t" * 50_000 + b"</body></message>")
    assert e.value.condition == "policy-violation"


def test_stanza_just_under_the_limit_passes() -> None:
    parser = opened(max_stanza_bytes=1000)
    stanza = b"<message><body>" + b"t" * 900 + b"</body></message>"
    assert len(stanza) < 1000
    assert len(parser.feed(stanza)) == 1


# -- the lone-empty-element fast path (SM acks, CSI) ------------------------------------------------------
LONE = [
    b"<a xmlns='urn:xmpp:sm:3' h='12'/>",
    b'<a xmlns="urn:xmpp:sm:3" h="4294967295"/>',
    b"<r xmlns='urn:xmpp:sm:3'/>",
    b"<active xmlns='urn:xmpp:csi:0' />",
    b"<message xmlns='jabber:client' to='juliet@example.org/balcony' type='chat' id='a-1'/>",
]


def _via_expat(data: bytes) -> list[object]:
    """What expat makes of ``data`` on a fresh stream: fed with a leading space, which the fast path
    never takes, then the same bytes again through the fast path's stream for comparison."""
    parser = opened()
    return [e for e in parser.feed(b" " + data) if isinstance(e, Element)]


@pytest.mark.parametrize("data", LONE)
def test_lone_empty_element_is_parsed_as_expat_would(data: bytes) -> None:
    parser = opened()
    fast = parser.feed(data)
    assert fast == _via_expat(data)
    assert parser._parser is not None and parser._parser.CurrentByteIndex == parser._b._fed  # skipped
    # The stream goes on exactly: positions and limits are intact for what follows.
    events = parser.feed(b"<message to='a@b'><body>hi</body></message>")
    assert [e.name for e in events if isinstance(e, Element)] == ["message"]


@pytest.mark.parametrize(
    "data",
    [
        b"<a xmlns='urn:xmpp:sm:3' h='1' h='2'/>",  # duplicate attribute: expat's error
        b"<a xmlns='urn:xmpp:sm:3' h='&amp;'/>",  # an entity: expat's business
        b"<sm:a xmlns:sm='urn:xmpp:sm:3' h='1'/>",  # a prefix
    ],
)
def test_lone_empty_fast_path_leaves_other_shapes_to_expat(data: bytes) -> None:
    parser = opened()
    if b"h='1' h='2'" in data:
        with pytest.raises(XmlStreamError):
            parser.feed(data)
        return
    events = parser.feed(data)
    assert events == _via_expat(data)


def test_lone_empty_fast_path_never_cuts_into_a_partial_tag() -> None:
    # The previous chunk ends in '>' inside an attribute value: expat still holds a partial tag, so a
    # lone <a/> after it is not a nonza but a '<' inside that attribute value, which XML forbids.
    parser = opened()
    assert parser.feed(b"<message to='a@b' id='x>") == []
    with pytest.raises(XmlStreamError):
        parser.feed(b"<a xmlns='urn:xmpp:sm:3' h='1'/>")


def test_lone_empty_inside_a_stanza_is_a_child_not_a_nonza() -> None:
    parser = opened()
    assert parser.feed(b"<message to='a@b'>") == []
    assert parser.feed(b"<a xmlns='urn:xmpp:sm:3' h='1'/>") == []
    events = parser.feed(b"</message>")
    assert len(events) == 1 and events[0].children[0].name == "a"


def test_lone_empty_on_a_released_parser() -> None:
    parser = opened()
    assert parser.release_parser()
    assert parser.feed(b"<r xmlns='urn:xmpp:sm:3'/>") == [Element("r", "urn:xmpp:sm:3")]
    assert parser.released  # nothing woke it
    events = parser.feed(b"<message to='a@b'/><presence/>")
    assert [e.name for e in events if isinstance(e, Element)] == ["message", "presence"]


def test_a_stanzas_own_namespace_declarations_do_not_outlive_it_across_a_release() -> None:
    # Only the stream header's declarations are replayed when a released parser wakes; a prefix a
    # stanza declared for itself is unknown to the next stanza, as in one continuous expat parse.
    parser = opened()
    events = parser.feed(b"<message xmlns:y='urn:y'><y:tag/></message>")
    assert events[0].find("tag", "urn:y") is not None  # type: ignore[union-attr]
    assert parser.release_parser()
    with pytest.raises(XmlStreamError):
        parser.feed(b"<message><y:tag/></message>")
