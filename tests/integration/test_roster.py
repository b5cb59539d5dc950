"""RFC 6121 §2 roster management over real connections, with slixmpp clients and several resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.stanza import error_condition
from tests.support.im import add_users, close_all
from tests.support.roster_client import NS_ROSTER, login, push_item, settle
from tests.support.server import RunningServer, running_server

Q = f"xmlns='{NS_ROSTER}'"


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    await add_users(server, "romeo", "juliet", "nurse")


async def test_versioning_and_pre_approval_are_stream_features(server: RunningServer) -> None:
    # RFC 6121 §2.6.1 and §3.4: slixmpp records both when it sees them after authentication.
    juliet = await login(server, "juliet@localhost/balcony")
    assert "rosterver" in juliet.client.features
    assert "preapproval" in juliet.client.features
    await close_all([juliet])


async def test_add_update_remove_with_two_interested_resources(server: RunningServer) -> None:
    balcony = await login(server, "juliet@localhost/balcony")
    chamber = await login(server, "juliet@localhost/chamber")
    garden = await login(server, "juliet@localhost/garden", roster=False)  # not interested
    everyone = [balcony, chamber, garden]

    await balcony.client.update_roster("nurse@localhost", name="Nurse", groups=["Servants"], timeout=5)
    await settle(everyone)
    for resource in (balcony, chamber):
        assert resource.item("nurse@localhost") == {
            "subscription": "none",
            "pending_out": False,
            "name": "Nurse",
            "groups": ["Servants"],
            "resources": [],
        }
        push = await resource.roster_pushes.get()
        assert push_item(push) == {"jid": "nurse@localhost", "name": "Nurse", "subscription": "none"}
    assert garden.roster_pushes.empty()

    # §2.4: the item is replaced as sent (groups changed, then none).
    await chamber.client.update_roster(
        "nurse@localhost", name="Nanny", groups=["Family", "Servants"], timeout=5
    )
    await chamber.client.update_roster("nurse@localhost", name="Nanny", groups=[], timeout=5)
    await settle(everyone)
    assert balcony.item("nurse@localhost")["groups"] == []
    assert balcony.item("nurse@localhost")["name"] == "Nanny"

    # §2.5: removal is pushed with subscription='remove'.
    balcony.drain()
    chamber.drain()
    await balcony.client.del_roster_item("nurse@localhost")
    await settle(everyone)
    for resource in (balcony, chamber):
        _, pushes = resource.drain()
        assert [push_item(p) for p in pushes] == [{"jid": "nurse@localhost", "subscription": "remove"}]
        assert resource.item("nurse@localhost") == {}
    result = await garden.roster()
    query = result.find("query", NS_ROSTER)
    assert query is not None and list(query.elements()) == []
    await close_all(everyone)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (f"<query {Q}><item jid='a@localhost'/><item jid='b@localhost'/></query>", "bad-request"),
        (
            f"<query {Q}><item jid='a@localhost'><group>G</group><group>G</group></item></query>",
            "bad-request",
        ),
        (f"<query {Q}><item jid='a@localhost'><group/></item></query>", "not-acceptable"),
        (f"<query {Q}><item jid='a@localhost' name='{'x' * 2000}'/></query>", "not-acceptable"),
        (f"<query {Q}><item jid='nobody@localhost' subscription='remove'/></query>", "item-not-found"),
    ],
)
async def test_roster_set_errors_over_the_wire(server: RunningServer, payload: str, expected: str) -> None:
    juliet = await login(server, "juliet@localhost/balcony")
    reply = await juliet.iq(payload, "set")
    assert reply.attrs["type"] == "error"
    assert error_condition(reply) == expected
    await settle([juliet])
    assert juliet.roster_pushes.empty()
    await close_all([juliet])


async def test_another_users_roster_is_forbidden(server: RunningServer) -> None:
    juliet = await login(server, "juliet@localhost/balcony")
    reply = await juliet.iq(f"<query {Q}><item jid='nurse@localhost'/></query>", "set", to="romeo@localhost")
    assert error_condition(reply) == "forbidden"
    reply = await juliet.iq(f"<query {Q}/>", "get", to="romeo@localhost")
    assert error_condition(reply) == "forbidden"
    await close_all([juliet])


async def test_roster_size_limit(tmp_path: Path) -> None:
    async with running_server(tmp_path / "own", "[roster]\nmax_items = 2\n") as running:
        await add_users(running, "juliet", "romeo", "nurse", "tybalt")
        juliet = await login(running, "juliet@localhost/balcony")
        await juliet.client.update_roster("romeo@localhost", timeout=5)
        await juliet.client.update_roster("nurse@localhost", timeout=5)
        reply = await juliet.iq(f"<query {Q}><item jid='tybalt@localhost'/></query>", "set")
        assert error_condition(reply) == "not-allowed"
        # A subscription request would add an item too.
        juliet.send("<presence type='subscribe' to='tybalt@localhost' id='s1'/>")
        await settle([juliet])
        errors = [p for p in juliet.drain()[0] if p.attrs.get("type") == "error"]
        assert [error_condition(p) for p in errors] == ["not-allowed"]
        assert juliet.item("tybalt@localhost") == {}
        await close_all([juliet])


async def test_version_round_trip_across_sessions(server: RunningServer) -> None:
    balcony = await login(server, "juliet@localhost/balcony")
    await balcony.client.update_roster("romeo@localhost", name="Romeo", timeout=5)
    await balcony.client.update_roster("nurse@localhost", name="Nurse", timeout=5)
    for other in ("benvolio", "mercutio", "tybalt"):  # enough items that pushes beat the full roster
        await balcony.client.update_roster(f"{other}@localhost", timeout=5)
    await settle([balcony])
    cached = balcony.client.client_roster.version  # slixmpp keeps the version of the last push
    assert cached
    await close_all([balcony])

    chamber = await login(server, "juliet@localhost/chamber")
    await chamber.client.update_roster("nurse@localhost", name="Nanny", timeout=5)
    await chamber.client.del_roster_item("romeo@localhost")
    await settle([chamber])
    await close_all([chamber])

    # The first client comes back with its cached version: an empty result, then one push per change.
    again = await login(server, "juliet@localhost/balcony", roster=False, available=False)
    reply = await again.iq(f"<query {Q} ver='{cached}'/>", "get")
    assert reply.attrs["type"] == "result" and reply.first() is None
    await settle([again])
    _, pushes = again.drain()
    assert [push_item(p) for p in pushes] == [
        {"jid": "nurse@localhost", "name": "Nanny", "subscription": "none"},
        {"jid": "romeo@localhost", "subscription": "remove"},
    ]
    # And with the newest version: nothing at all.
    newest = pushes[-1].find("query", NS_ROSTER).attrs["ver"]  # type: ignore[union-attr]
    reply = await again.iq(f"<query {Q} ver='{newest}'/>", "get")
    assert reply.first() is None
    await settle([again])
    assert again.drain() == ([], [])
    await close_all([again])


async def test_roster_survives_a_restart(tmp_path: Path) -> None:
    tmp_path = tmp_path / "own"  # not the database of the `server` fixture
    async with running_server(tmp_path) as running:
        await add_users(running, "juliet", "romeo")
        juliet = await login(running, "juliet@localhost/balcony")
        await juliet.client.update_roster("romeo@localhost", name="Romeo", groups=["Lovers"], timeout=5)
        await juliet.client.update_roster("tybalt@localhost", name="Tybalt", timeout=5)
        await settle([juliet])
        version = juliet.client.client_roster.version
        await close_all([juliet])

    async with running_server(tmp_path) as running:  # same SQLite database
        juliet = await login(running, "juliet@localhost/balcony", roster=False)
        result = await juliet.iq(f"<query {Q}/>", "get")
        query = result.find("query", NS_ROSTER)
        assert query is not None and query.attrs["ver"] == version
        assert [dict(i.attrs) for i in query.elements("item")] == [
            {"jid": "romeo@localhost", "name": "Romeo", "subscription": "none"},
            {"jid": "tybalt@localhost", "name": "Tybalt", "subscription": "none"},
        ]
        assert [g.text for g in query.elements("item").__next__().elements("group")] == ["Lovers"]
        reply = await juliet.iq(f"<query {Q} ver='{version}'/>", "get")
        assert reply.first() is None  # still current after the restart
        await close_all([juliet])
