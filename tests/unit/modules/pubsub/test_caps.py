"""XEP-0115 verification strings (the XEP's own examples), ill-formed answers, the cache."""

from __future__ import annotations

import pytest

from roost.modules.pubsub.caps import (
    CAPS,
    CapsCache,
    IllFormed,
    caps_element,
    notify_nodes,
    read_caps,
    ver_of,
    verification_string,
    verify,
)
from roost.xml.fragment import parse_element

SIMPLE = (
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "</query>"
)
COMPLEX = (
    "<query xmlns='http://jabber.org/protocol/disco#info'>"
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
    "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field>"
    "<field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field>"
    "<field var='software_version'><value>0.11</value></field>"
    "</x></query>"
)


def test_simple_example_of_section_5_2() -> None:
    assert ver_of(parse_element(SIMPLE), "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_complex_example_of_section_5_3() -> None:
    query = parse_element(COMPLEX)
    assert verify(query, "sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=")
    assert not verify(query, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=")
    assert not verify(query, "md5", "whatever")


def test_ill_formed_answers() -> None:
    dup = SIMPLE.replace("</query>", "<feature var='http://jabber.org/protocol/muc'/></query>")
    with pytest.raises(IllFormed):
        verification_string(parse_element(dup))
    assert not verify(parse_element(dup), "sha-1", "x")
    two_forms = COMPLEX.replace(
        "</query>", COMPLEX[COMPLEX.index("<x ") : COMPLEX.index("</query>")] + "</query>"
    )
    with pytest.raises(IllFormed):
        verification_string(parse_element(two_forms))


def test_form_without_hidden_form_type_is_ignored() -> None:
    extra = SIMPLE.replace(
        "</query>",
        "<x xmlns='jabber:x:data' type='result'><field var='os'><value>Mac</value></field></x></query>",
    )
    assert ver_of(parse_element(extra), "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_read_caps_and_notify_nodes() -> None:
    presence = parse_element(
        f"<presence xmlns='jabber:client'><c xmlns='{CAPS}' hash='sha-1' node='n' ver='v'/></presence>"
    )
    assert read_caps(presence) == ("sha-1", "v", "n")
    legacy = parse_element(f"<presence xmlns='jabber:client'><c xmlns='{CAPS}' node='n' ver='v'/></presence>")
    assert read_caps(legacy) is None
    assert notify_nodes({"urn:xmpp:avatar:metadata+notify", "urn:xmpp:ping"}) == {"urn:xmpp:avatar:metadata"}


def test_cache_is_bounded() -> None:
    cache = CapsCache(2)
    cache.put("sha-1", "a", {"x"})
    cache.put("sha-1", "b", {"y"})
    cache.put("sha-1", "c", {"z"})
    assert cache.get("sha-1", "a") is None and cache.get("sha-1", "c") == {"z"} and len(cache) == 2


def test_caps_element_of_own_disco() -> None:
    c = caps_element(parse_element(SIMPLE), node="https://example")
    assert c.attrs == {"hash": "sha-1", "node": "https://example", "ver": "QgayPKawpkPSDYmwT/WM94uAlu0="}
