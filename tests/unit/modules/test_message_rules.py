"""The pure message rules: what is archivable or transient, stanza-id assignment, bare-JID targets."""

from __future__ import annotations

import pytest

from roost.modules.message import assign_stanza_id, bare_targets, is_archivable, is_transient, stanza_id
from roost.xml.element import Element
from roost.xml.ns import STANZA_ID
from tests.support.im import parse


def message(inner: str, type_: str | None = "chat") -> Element:
    attr = f" type='{type_}'" if type_ else ""
    return parse(f"<message to='juliet@localhost'{attr}>{inner}</message>")


@pytest.mark.parametrize(
    ("inner", "type_", "archivable", "transient"),
    [
        ("<body>hi</body>", "chat", True, False),
        ("<body>hi</body>", None, True, False),
        ("<subject>topic</subject>", "normal", True, False),
        ("<body>news</body>", "headline", True, False),
        ("<event xmlns='http://jabber.org/protocol/pubsub#event'/>", "headline", False, False),
        ("<body>room</body>", "groupchat", False, False),
        ("<body>oops</body>", "error", False, False),
        ("<composing xmlns='http://jabber.org/protocol/chatstates'/>", "chat", False, True),
        ("<thread>t</thread><active xmlns='http://jabber.org/protocol/chatstates'/>", "chat", False, True),
        ("", "chat", False, True),
        ("<encrypted xmlns='eu.siacs.conversations.axolotl'/>", "chat", True, False),
        ("<received xmlns='urn:xmpp:receipts' id='x'/>", "chat", True, False),
        ("<request xmlns='urn:xmpp:receipts'/>", "chat", False, False),
        ("<markable xmlns='urn:xmpp:chat-markers:0'/>", "chat", False, False),
        ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", "chat", True, False),
        ("<x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x>", "normal", True, False),
        ("<x xmlns='http://jabber.org/protocol/muc#user'/>", "chat", False, False),
        ("<x xmlns='urn:example'/><store xmlns='urn:xmpp:hints'/>", "normal", True, False),
        ("<received xmlns='urn:xmpp:carbons:2'/>", "chat", False, False),
    ],
)
def test_archivable_and_transient(inner: str, type_: str | None, archivable: bool, transient: bool) -> None:
    stanza = message(inner, type_)
    assert is_archivable(stanza) is archivable
    if type_ in ("chat", "normal", None):
        assert is_transient(stanza) is transient


def test_assign_strips_forged_ids_keeps_others_and_adds_one() -> None:
    stanza = message(
        "<body>x</body>"
        f"<stanza-id xmlns='{STANZA_ID}' id='f1' by='juliet@localhost'/>"
        f"<stanza-id xmlns='{STANZA_ID}' id='f2' by='Juliet@LocalHost'/>"
        f"<stanza-id xmlns='{STANZA_ID}' id='r1' by='room@muc.example'/>"
        f"<origin-id xmlns='{STANZA_ID}' id='o1'/>"
    )
    new_id = assign_stanza_id(stanza, "juliet@localhost")
    assert new_id is not None and stanza_id(stanza, "juliet@localhost") == new_id
    ids = [(el.name, el.attrs.get("id")) for el in stanza.elements(ns=STANZA_ID)]
    assert ids == [("stanza-id", "r1"), ("origin-id", "o1"), ("stanza-id", new_id)]


def test_assign_strips_without_adding_for_unarchivable_messages() -> None:
    stanza = message(
        f"<gone xmlns='http://jabber.org/protocol/chatstates'/>"
        f"<stanza-id xmlns='{STANZA_ID}' id='f1' by='juliet@localhost'/>"
    )
    assert assign_stanza_id(stanza, "juliet@localhost") is None
    assert list(stanza.elements("stanza-id", STANZA_ID)) == []


class FakeSession:
    def __init__(self, available: bool, priority: int) -> None:
        self.available = available
        self.priority = priority


def test_bare_targets_follow_rfc_6121_8_5_2() -> None:
    top1, top2, low, negative, away = (
        FakeSession(True, 5),
        FakeSession(True, 5),
        FakeSession(True, 0),
        FakeSession(True, -1),
        FakeSession(False, 9),
    )
    sessions = [top1, top2, low, negative, away]
    assert bare_targets(sessions, "chat") == [top1, top2]  # type: ignore[arg-type]
    assert bare_targets(sessions, "normal") == [top1, top2]  # type: ignore[arg-type]
    assert bare_targets(sessions, "headline") == [top1, top2, low]  # type: ignore[arg-type]
    assert bare_targets([negative, away], "chat") == []  # type: ignore[list-item]
