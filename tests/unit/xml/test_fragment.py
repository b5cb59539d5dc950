"""Reading stored XML back: one element, through the hardened parser."""

from __future__ import annotations

import pytest

from roost.xml.element import Element
from roost.xml.fragment import FragmentError, parse_element
from roost.xml.serializer import serialize


def test_round_trip_of_a_serialized_element() -> None:
    vcard = Element("vCard", "vcard-temp", {"version": "3.0"})
    vcard.add("FN", text="Romeo & <Juliet>")
    vcard.add("PHOTO").add("BINVAL", text="AAEC")
    vcard.add("x", "urn:other").add("y")
    assert parse_element(serialize(vcard)) == vcard


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing
        "<a xmlns='urn:a'/><b xmlns='urn:b'/>",  # two elements
        "just text",
        "<a xmlns='urn:a'>",  # unclosed
        "<!DOCTYPE a><a/>",  # DTDs are refused like on the wire
        "<a xmlns='urn:a'><!-- comment --></a>",
        "<a xmlns='urn:a'/></fragment><b/>",  # cannot escape the wrapper
    ],
)
def test_anything_but_one_element_is_refused(text: str) -> None:
    with pytest.raises(FragmentError):
        parse_element(text)


def test_size_limit() -> None:
    big = "<a xmlns='urn:a'>" + "x" * 5000 + "</a>"
    assert parse_element(big, max_bytes=10_000).text == "x" * 5000
    with pytest.raises(FragmentError):
        parse_element(big, max_bytes=1000)
