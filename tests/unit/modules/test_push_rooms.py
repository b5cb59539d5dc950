"""XEP-0492 settings in a XEP-0402 bookmark, as push reads them for a phone."""

from __future__ import annotations

from roost.modules.push import BOOKMARKS2, NOTIFY, room_setting
from roost.xml.element import Element


def conference(*settings: tuple[str, dict[str, str]]) -> Element:
    el = Element("conference", BOOKMARKS2, {"autojoin": "true"})
    notify = el.add("extensions").add("notify", NOTIFY)
    for name, attrs in settings:
        notify.add(name, attrs=attrs)
    return el


def test_no_setting() -> None:
    assert room_setting(None) is None
    assert room_setting(Element("conference", BOOKMARKS2)) is None
    assert room_setting(conference()) is None


def test_the_most_specific_setting_wins() -> None:
    phone = {"identity-category": "client", "identity-type": "phone"}
    client = {"identity-category": "client"}
    pc = {"identity-category": "client", "identity-type": "pc"}
    assert room_setting(conference(("never", {}))) == "never"
    assert room_setting(conference(("never", {}), ("always", client))) == "always"
    assert room_setting(conference(("always", phone), ("on-mention", client), ("never", {}))) == "always"
    # Another device's setting does not apply to the phone; nor does a type without a category.
    assert room_setting(conference(("never", pc), ("on-mention", {}))) == "on-mention"
    assert room_setting(conference(("always", {"identity-type": "phone"}))) is None
    assert room_setting(conference(("never", pc)), ("client", "pc")) == "never"


def test_unknown_elements_are_ignored() -> None:
    el = conference(("sometimes", {}), ("on-mention", {}))
    assert room_setting(el) == "on-mention"
