"""XEP-0191 §6 JID matching."""

from __future__ import annotations

import pytest

from roost.jid import JID
from roost.modules.blocking import blocks

LIST = frozenset(
    {"tybalt@capulet.example/sword", "nurse@capulet.example", "montague.example", "capulet.example/gate"}
)


@pytest.mark.parametrize(
    ("jid", "blocked"),
    [
        ("tybalt@capulet.example/sword", True),  # user@domain/resource: only that resource
        ("tybalt@capulet.example/dagger", False),
        ("tybalt@capulet.example", False),
        ("nurse@capulet.example", True),  # user@domain: any resource
        ("nurse@capulet.example/kitchen", True),
        ("romeo@montague.example/garden", True),  # domain: everything at it
        ("montague.example", True),
        ("montague.example/service", True),
        ("capulet.example/gate", True),  # domain/resource: only that
        ("capulet.example", False),
        ("juliet@capulet.example", False),
    ],
)
def test_matching(jid: str, blocked: bool) -> None:
    assert blocks(LIST, JID.parse(jid)) is blocked
