"""Serialization: escaping, namespace declarations, stanza namespaces, stream prefix."""

from __future__ import annotations

from roost.xml.element import Element
from roost.xml.ns import CLIENT, STREAM
from roost.xml.serializer import serialize, serialize_open_tag, serialize_with_children


def test_escaping_of_text_and_attributes() -> None:
    el = Element("message", "jabber:client", {"id": "a\"b<c>&'\n"})
    el.add("body", text="<b>&amp;</b>\r")
    out = serialize(el, "jabber:client")
    assert out == (
        '<message id="a&quot;b&lt;c&gt;&amp;\'&#10;"><body>&lt;b&gt;&amp;amp;&lt;/b&gt;&#13;</body></message>'
    )


def test_child_namespaces_are_declared_only_where_they_change() -> None:
    el = Element("iq", "jabber:client", {"type": "result"})
    query = el.add("query", "jabber:iq:version")
    query.add("name", text="Roost")
    assert serialize(el, "jabber:client") == (
        '<iq type="result"><query xmlns="jabber:iq:version"><name>Roost</name></query></iq>'
    )


def test_stanza_namespaces_are_interchangeable_at_top_level() -> None:
    received_on_s2s = Element("message", "jabber:server", {"to": "a@b"})
    received_on_s2s.add("body", text="x")
    assert serialize(received_on_s2s, "jabber:client") == '<message to="a@b"><body>x</body></message>'


def test_forwarded_stanza_keeps_its_namespace() -> None:
    wrapper = Element("forwarded", "urn:xmpp:forward:0")
    wrapper.append(Element("message", "jabber:client"))
    out = serialize(wrapper, "jabber:client")
    assert out == '<forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client"/></forwarded>'


def test_stream_prefixed_elements() -> None:
    features = Element("features", STREAM)
    features.add("bind", "urn:ietf:params:xml:ns:xmpp-bind")
    assert serialize(features, "jabber:client") == (
        '<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></stream:features>'
    )


def test_open_tag_declares_prefixes() -> None:
    header = Element("stream", STREAM, {"from": "example.org", "version": "1.0"})
    out = serialize_open_tag(header, {"": "jabber:client", "stream": STREAM})
    assert out == (
        '<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams"'
        ' from="example.org" version="1.0">'
    )


def test_xml_lang_and_foreign_attributes() -> None:
    el = Element("body", "jabber:client", {"xml:lang": "en", "{urn:x}flag": "1"})
    out = serialize(el, "jabber:client")
    assert out == '<body xml:lang="en" xmlns:a0="urn:x" a0:flag="1"/>'


def test_serialize_with_children_matches_a_copy_without_them() -> None:
    """What the archive stores: the stanza without its stanza-ids, with nothing copied to get it."""
    msg = Element("message", CLIENT, {"to": "a@b", "type": "chat", "x": 'q"<&'})
    msg.add("body", text="hi <there> & you")
    sid = msg.add("stanza-id", "urn:xmpp:sid:0", {"id": "1", "by": "a@b"})
    msg.children.append("tail")
    kept = [c for c in msg.children if c is not sid]
    expected = serialize(Element(msg.name, msg.ns, dict(msg.attrs), kept), CLIENT)
    assert serialize_with_children(msg, kept, CLIENT) == expected
    assert "stanza-id" not in expected and "tail" in expected
    assert serialize_with_children(msg, (), CLIENT) == serialize(Element(msg.name, msg.ns, msg.attrs), CLIENT)
    assert serialize_with_children(msg, kept) == serialize(Element(msg.name, msg.ns, msg.attrs, kept))
