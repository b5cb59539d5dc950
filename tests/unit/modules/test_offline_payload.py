"""Offline messages are stored serialized and read back intact."""

from __future__ import annotations

from roost.modules.offline import parse_stored
from roost.xml.ns import CLIENT
from roost.xml.serializer import serialize
from tests.support.im import parse


def test_stored_message_round_trips() -> None:
    original = parse(
        "<message from='romeo@localhost/r' to='juliet@localhost' type='chat' id='m1' xml:lang='en'>"
        "<body>a &lt; b &amp; 'c'</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='x'/>"
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><payload>AAAA</payload></encrypted></message>"
    )
    assert parse_stored(serialize(original, CLIENT)) == original
