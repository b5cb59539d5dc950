"""XEP-0280 §6.1 eligibility, as a pure function."""

from __future__ import annotations

import pytest

from roost.modules.carbons import is_eligible
from tests.support.im import parse


@pytest.mark.parametrize(
    ("xml", "inbound", "eligible"),
    [
        ("<message type='chat'/>", True, True),
        ("<message type='normal'><body>b</body></message>", True, True),
        ("<message><body>b</body></message>", True, True),
        ("<message type='normal'/>", True, False),
        ("<message><received xmlns='urn:xmpp:receipts' id='1'/></message>", True, True),
        ("<message><gone xmlns='http://jabber.org/protocol/chatstates'/></message>", True, True),
        ("<message><acknowledged xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", True, True),
        ("<message type='headline'><body>b</body></message>", True, False),
        ("<message type='groupchat'><body>b</body></message>", True, False),
        ("<message type='chat'><body>b</body><private xmlns='urn:xmpp:carbons:2'/></message>", False, False),
        ("<message type='chat'><body>b</body><no-copy xmlns='urn:xmpp:hints'/></message>", False, False),
        ("<message type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>", True, False),
        ("<message><x xmlns='jabber:x:conference' jid='r@c'/></message>", True, True),
        ("<message><x xmlns='http://jabber.org/protocol/muc#user'><invite/></x></message>", True, True),
        (
            "<message type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
            True,
            False,
        ),
        (
            "<message type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
            False,
            True,
        ),
    ],
)
def test_eligibility(xml: str, inbound: bool, eligible: bool) -> None:
    assert is_eligible(parse(xml), inbound=inbound) is eligible
