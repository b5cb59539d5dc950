"""Pure helpers of the account-data modules: vCard photo hashes, private XML keys, settings, forms."""

from __future__ import annotations

import base64
import hashlib

import pytest

from roost.modules.privacy import parse_bool
from roost.modules.private import fragment_key, is_reserved
from roost.modules.registration import form_values
from roost.modules.vcard import photo_hash
from roost.xml.element import Element
from roost.xml.ns import DATA_FORMS, VCARD


def vcard_with(binval: str | None) -> Element:
    vcard = Element("vCard", VCARD)
    vcard.add("FN", text="R")
    if binval is not None:
        photo = vcard.add("PHOTO")
        photo.add("TYPE", text="image/png")
        photo.add("BINVAL", text=binval)
    return vcard


def test_photo_hash_is_sha1_of_the_decoded_image_ignoring_whitespace() -> None:
    image = bytes(range(200))
    encoded = base64.b64encode(image).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))  # RFC 2045 lines
    assert photo_hash(vcard_with(wrapped)) == hashlib.sha1(image).hexdigest()
    assert photo_hash(vcard_with(wrapped)).islower()


@pytest.mark.parametrize("binval", [None, "", "  \n "])
def test_no_photo_is_an_empty_hash(binval: str | None) -> None:
    assert photo_hash(vcard_with(binval)) == ""


def test_invalid_base64_is_refused() -> None:
    with pytest.raises(ValueError):
        photo_hash(vcard_with("not base64!"))


@pytest.mark.parametrize(
    ("ns", "reserved"),
    [
        ("jabber:iq:roster", True),
        ("http://jabber.org/protocol/disco#info", True),
        ("vcard-temp", True),
        ("storage:bookmarks", False),
        ("urn:xmpp:bookmarks:1", False),
        ("exodus:prefs", False),
    ],
)
def test_reserved_namespaces(ns: str, reserved: bool) -> None:
    assert is_reserved(ns) is reserved


def test_fragment_keys_tell_name_and_namespace_apart() -> None:
    assert fragment_key("a", "urn:x") != fragment_key("a", "urn:y") != fragment_key("b", "urn:x")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_xml_booleans(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", [None, "", "yes", "True", "2"])
def test_not_xml_booleans(text: str | None) -> None:
    assert parse_bool(text) is None


def test_form_values_take_the_first_value_of_each_field() -> None:
    form = Element("x", DATA_FORMS, {"type": "submit"})
    form.add("field", attrs={"var": "username"}).add("value", text="romeo")
    password = form.add("field", attrs={"var": "password"})
    password.add("value", text="one")
    password.add("value", text="two")
    form.add("field", attrs={"var": "empty"})
    assert form_values(form) == {"username": "romeo", "password": "one", "empty": ""}
