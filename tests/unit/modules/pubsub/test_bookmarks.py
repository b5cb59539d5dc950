"""Bookmark conversion between XEP-0048 <storage/> and XEP-0402 items keeps every field."""

from __future__ import annotations

from roost.modules.pubsub.bookmarks import BOOKMARKS2, LEGACY, from_bookmarks2, from_legacy, to_legacy
from roost.xml.fragment import parse_element

STORAGE = (
    f"<storage xmlns='{LEGACY}'>"
    "<conference jid='Balcony@Conference.Example.org' name='The Balcony' autojoin='1'>"
    "<nick>J</nick><password>s3cret</password><x xmlns='urn:example:ext'>kept</x></conference>"
    "<conference jid='crypt@conference.example.org'/>"
    "<conference jid='not a jid@@'/>"
    "<url name='Home' url='https://example.org'/>"
    "</storage>"
)


def test_legacy_to_bookmarks2_and_back() -> None:
    marks, others = from_legacy(parse_element(STORAGE))
    assert list(marks) == ["balcony@conference.example.org", "crypt@conference.example.org"]
    balcony = marks["balcony@conference.example.org"]
    assert (balcony.name, balcony.autojoin, balcony.nick, balcony.password) == (
        "The Balcony",
        True,
        "J",
        "s3cret",
    )
    item = balcony.bookmarks2()
    assert item.ns == BOOKMARKS2 and item.get("autojoin") == "true"
    assert item.find("extensions", BOOKMARKS2).find("x", "urn:example:ext").text == "kept"  # type: ignore[union-attr]
    again = from_bookmarks2("balcony@conference.example.org", item)
    assert again.bookmarks2() == item
    crypt = marks["crypt@conference.example.org"].bookmarks2()
    assert crypt.get("autojoin") == "false" and crypt.first() is None
    storage = to_legacy(marks, others)
    assert [c.get("jid") for c in storage.elements("conference", LEGACY)] == list(marks)
    assert storage.find("url", LEGACY) is not None  # URLs survive a round trip


def test_empty_storage() -> None:
    assert from_legacy(None) == ({}, [])
    assert to_legacy({}, []).first() is None
