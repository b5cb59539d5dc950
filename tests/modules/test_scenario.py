"""The scenario helper's matching rules (tests/support/scenario.py), which other module tests rely on."""

from __future__ import annotations

import pytest

from tests.support.scenario import Harness, _steps, matches, parse

ACTUAL = parse(
    "<iq type='set' id='x1' to='a@localhost/r'><query xmlns='jabber:iq:roster' ver='v1'>"
    "<item jid='b@localhost' subscription='none'><group>One</group><group>Two</group></item>"
    "<item jid='c@localhost'/></query></iq>"
)


@pytest.mark.parametrize(
    ("expected", "result"),
    [
        ("<iq type='set'/>", True),  # unwritten attributes and children are not checked
        ("<iq type='get'/>", False),
        ("<iq id='*'/>", True),
        ("<iq from='*'/>", False),
        ("<iq from='~'/>", True),
        ("<iq id='~'/>", False),
        ("<message/>", False),
        ("<iq><query xmlns='jabber:iq:roster'><item jid='c@localhost'/></query></iq>", True),
        ("<iq><query xmlns='jabber:iq:other'/></iq>", False),
        # children in order, others may come between
        (
            "<iq><query xmlns='jabber:iq:roster'><item jid='b@localhost'/><item jid='c@localhost'/>"
            "</query></iq>",
            True,
        ),
        (
            "<iq><query xmlns='jabber:iq:roster'><item jid='c@localhost'/><item jid='b@localhost'/>"
            "</query></iq>",
            False,
        ),
        ("<iq><query xmlns='jabber:iq:roster'><item><group>Two</group></item></query></iq>", True),
        ("<iq><query xmlns='jabber:iq:roster'><item><group>Three</group></item></query></iq>", False),
    ],
)
def test_matches(expected: str, result: bool) -> None:
    assert matches(parse(expected), ACTUAL) is result


def test_transcript_steps() -> None:
    steps = _steps("""
        # a comment
        romeo sends:
            <presence/>
        juliet/balcony receives in any order:
            <presence from='romeo@localhost/romeo'/>
            <presence/>
        juliet receives nothing
    """)
    assert steps == [
        ("romeo", "sends", "<presence/>"),
        ("juliet/balcony", "receives in any order", "<presence from='romeo@localhost/romeo'/> <presence/>"),
        ("juliet", "receives nothing", ""),
    ]


async def test_expectations_fail_loudly(h: Harness) -> None:
    romeo = await h.login("romeo")
    await romeo.submit("<presence/>")
    with pytest.raises(AssertionError, match="expected"):
        romeo.expect("<presence type='unavailable'/>")
    with pytest.raises(AssertionError, match="should have received nothing"):
        romeo.expect_nothing()
    romeo.expect("<presence from='romeo@localhost/romeo'/>")
    with pytest.raises(AssertionError, match="nothing more"):
        romeo.expect("<presence/>")
