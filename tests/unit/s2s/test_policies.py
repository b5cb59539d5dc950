"""Federation policies that need no network: the blocklist and the per-domain token bucket."""

from __future__ import annotations

from typing import cast

from roost.config.schema import S2SSection
from roost.core.server import Server
from roost.s2s.manager import Federation


def federation(**settings: object) -> Federation:
    return Federation(cast(Server, None), S2SSection.model_validate(settings), b"secret" * 6)


def test_blocklist_covers_the_domain_and_its_subdomains_only() -> None:
    f = federation(blocklist=["spam.example"])
    assert f.blocked("spam.example") and f.blocked("muc.spam.example") and f.blocked("SPAM.example")
    assert not f.blocked("notspam.example") and not f.blocked("example")
    assert not f.accepts("muc.spam.example") and f.accepts("friends.example")


def test_rate_limit_allows_a_burst_of_twice_the_rate_then_asks_to_wait() -> None:
    f = federation(rate_limit=10.0)
    assert all(f.take_token("peer.example") for _ in range(20))
    assert not f.take_token("peer.example")
    assert 0 < f.wait_for_token("peer.example") <= 0.2
    assert f.take_token("other.example")  # per remote domain
