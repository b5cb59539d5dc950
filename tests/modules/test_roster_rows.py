"""``roster_rows``: rosters written straight into storage (bench provisioning, imports) read back right."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.jid import JID
from roost.modules.roster import NS_ROSTER, Roster, RosterItem, roster_rows
from roost.storage.api import JSON
from tests.support.scenario import Harness

Q = f"xmlns='{NS_ROSTER}'"


def items(*names: str, subscription: str = "both") -> list[RosterItem]:
    return [RosterItem(JID.parse(f"{n}@localhost"), name=n, subscription=subscription) for n in names]


async def write(h: Harness, user: str, rows: dict[str, JSON]) -> None:
    await h.add_user(user)
    await h.server.storage.map("roster").set_many("localhost", user, rows)


async def test_written_rows_are_the_roster_at_login(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'roster.db'}"
    async with Harness.running(tmp_path, storage=storage) as h:
        rows = roster_rows(
            [
                RosterItem(
                    JID.parse("romeo@localhost"), name="Romeo", subscription="both", groups=["Lovers"]
                ),
                RosterItem(JID.parse("nurse@localhost"), subscription="to", ask=False),
                RosterItem(JID.parse("tybalt@localhost"), subscription="none", ask=True),
            ],
            epoch="e1",
        )
        await write(h, "juliet", rows)
        juliet = await h.login("juliet")
        result = await juliet.iq(f"<query {Q}/>")
        query = result.find("query", NS_ROSTER)
        assert query is not None
        assert query.attrs["ver"] == "e1-3"  # one modification per item, as if added one by one
        got = {item.attrs["jid"]: dict(item.attrs) for item in query.elements("item", NS_ROSTER)}
        assert got == {
            "romeo@localhost": {"jid": "romeo@localhost", "name": "Romeo", "subscription": "both"},
            "nurse@localhost": {"jid": "nurse@localhost", "subscription": "to"},
            "tybalt@localhost": {"jid": "tybalt@localhost", "subscription": "none", "ask": "subscribe"},
        }
        romeo = query.find("item", NS_ROSTER)
        assert romeo is not None and [g.text for g in romeo.elements("group")] == ["Lovers"]


async def test_versions_continue_from_the_written_counter(h: Harness) -> None:
    await write(h, "juliet", roster_rows(items("a", "b"), epoch="x"))
    juliet = await h.login("juliet")
    await juliet.iq(f"<query {Q}><item jid='c@localhost'/></query>", "set", iq_id="s")
    roster = h.module(Roster).cached(JID.parse("juliet@localhost"))
    assert roster is not None and roster.version_string() == "x-3"
    # A client holding the provisioned version gets just the one change as a push (RFC 6121 §2.6.3).
    assert [v for v, _ in roster.changes_since("x-2") or []] == [3]


async def test_mutual_contacts_see_each_others_presence(h: Harness) -> None:
    await write(h, "romeo", roster_rows(items("juliet")))
    await write(h, "juliet", roster_rows(items("romeo")))
    juliet = await h.login("juliet")
    await juliet.submit("<presence/>")
    romeo = await h.login("romeo")
    await h.settle()
    juliet.clear()
    await romeo.submit("<presence/>")
    await h.settle()
    # RFC 6121 §4.2.2: a "both" contact gets the initial presence, and romeo is told juliet is online.
    juliet.expect("<presence from='romeo@localhost/romeo' to='juliet@localhost'/>")
    assert any(
        s.name == "presence" and s.attrs.get("from") == "juliet@localhost/juliet" for s in romeo.received
    )


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ([RosterItem(JID.parse("a@localhost/r"))], "bare"),
        ([RosterItem(JID.parse("a@localhost"), subscription="remove")], "subscription"),
        (items("a", "a"), "twice"),
    ],
)
def test_bad_items_are_refused(given: list[RosterItem], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        roster_rows(given)


def test_an_empty_roster_is_just_the_counter() -> None:
    assert roster_rows([], epoch="z") == {"": {"epoch": "z", "ver": 0, "floor": 0}}
