"""RFC 6121 §3 and §4 over real connections: slixmpp clients, several accounts with several resources.

Romeo (orchard, garden), Juliet (balcony, chamber), and others as needed. Each client gets the roster
(an interested resource) and sends initial presence unless a test says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.stanza import error_condition
from tests.support.im import add_users, close_all
from tests.support.roster_client import Contact, login, push_item, settle, summary
from tests.support.server import RunningServer, running_server

ROMEO, JULIET = "romeo@localhost", "juliet@localhost"


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    await add_users(server, "romeo", "juliet", "nurse", "benvolio")


async def lovers(server: RunningServer) -> tuple[Contact, Contact, Contact, Contact]:
    orchard = await login(server, f"{ROMEO}/orchard")
    garden = await login(server, f"{ROMEO}/garden")
    balcony = await login(server, f"{JULIET}/balcony")
    chamber = await login(server, f"{JULIET}/chamber")
    await settle([orchard, garden, balcony, chamber])
    for c in (orchard, garden, balcony, chamber):
        c.drain()
    return orchard, garden, balcony, chamber


async def mutual(a: Contact, b: Contact, *others: Contact) -> None:
    """Both subscribed to each other; every queue emptied."""
    a_bare, b_bare = a.jid.split("/")[0], b.jid.split("/")[0]
    everyone = [a, b, *others]
    a.send(f"<presence type='subscribe' to='{b_bare}'/>")
    await settle(everyone)
    b.send(f"<presence type='subscribed' to='{a_bare}'/>")
    b.send(f"<presence type='subscribe' to='{a_bare}'/>")
    await settle(everyone)
    a.send(f"<presence type='subscribed' to='{b_bare}'/>")
    await settle(everyone)
    for c in everyone:
        c.drain()


# -- §3.1 ----------------------------------------------------------------------------------------------------
async def test_subscription_handshake_between_two_multi_resource_accounts(server: RunningServer) -> None:
    orchard, garden, balcony, chamber = await lovers(server)
    everyone = [orchard, garden, balcony, chamber]

    orchard.client.send_presence(pto=JULIET, ptype="subscribe")
    await settle(everyone)
    for resource in (balcony, chamber):  # §3.1.3 rule 3: every available resource
        presences, pushes = resource.drain()
        assert summary(presences) == [("presence", ROMEO, "subscribe")]
        assert pushes == []
    for resource in (orchard, garden):  # §3.1.2: push with ask to every interested resource
        presences, pushes = resource.drain()
        assert presences == []
        assert [push_item(p) for p in pushes] == [{"jid": JULIET, "subscription": "none", "ask": "subscribe"}]
        assert resource.item(JULIET)["pending_out"] is True

    balcony.client.send_presence(pto=ROMEO, ptype="subscribed")
    await settle(everyone)
    for resource in (orchard, garden):
        assert resource.item(JULIET)["subscription"] == "to"
        assert resource.item(JULIET)["pending_out"] is False
        assert resource.item(JULIET)["resources"] == ["balcony", "chamber"]  # §3.1.5 presence of each
    for resource in (balcony, chamber):
        assert resource.item(ROMEO)["subscription"] == "from"

    chamber.client.send_presence(pto=ROMEO, ptype="subscribe")
    await settle(everyone)
    orchard.client.send_presence(pto=JULIET, ptype="subscribed")
    await settle(everyone)
    for resource in (orchard, garden):
        assert resource.item(JULIET)["subscription"] == "both"
    for resource in (balcony, chamber):
        assert resource.item(ROMEO)["subscription"] == "both"
        assert resource.item(ROMEO)["resources"] == ["garden", "orchard"]
    await close_all(everyone)


async def test_denied_request(server: RunningServer) -> None:
    orchard, garden, balcony, chamber = await lovers(server)
    everyone = [orchard, garden, balcony, chamber]
    orchard.send(f"<presence type='subscribe' to='{JULIET}'/>")
    await settle(everyone)
    balcony.send(f"<presence type='unsubscribed' to='{ROMEO}' id='no'/>")
    await settle(everyone)
    for resource in (orchard, garden):
        presences, _ = resource.drain()
        assert summary(presences) == [("presence", JULIET, "unsubscribed")]
        assert resource.item(JULIET) == {
            "subscription": "none",
            "pending_out": False,
            "name": "",
            "groups": [],
            "resources": [],
        }
    result = await balcony.roster()  # never added to Juliet's roster (§3.1.3 security warning)
    assert result.find("query", "jabber:iq:roster").first() is None  # type: ignore[union-attr]
    await close_all(everyone)


async def test_request_to_an_account_that_does_not_exist(server: RunningServer) -> None:
    romeo = await login(server, f"{ROMEO}/orchard")
    romeo.drain()
    romeo.send("<presence type='subscribe' to='rosaline@localhost' id='r1'/>")
    await settle([romeo])
    presences, pushes = romeo.drain()
    errors = [p for p in presences if p.attrs.get("type") == "error"]
    assert [(p.attrs["id"], error_condition(p)) for p in errors] == [("r1", "item-not-found")]
    assert pushes == []
    await close_all([romeo])


async def test_request_to_an_offline_contact_waits_for_her_and_survives_a_restart(tmp_path: Path) -> None:
    tmp_path = tmp_path / "own"
    async with running_server(tmp_path) as running:
        await add_users(running, "romeo", "juliet")
        romeo = await login(running, f"{ROMEO}/orchard")
        romeo.send(f"<presence type='subscribe' to='{JULIET}' id='wait'><status>It is I</status></presence>")
        await settle([romeo])
        await close_all([romeo])

    async with running_server(tmp_path) as running:
        balcony = await login(running, f"{JULIET}/balcony")
        requests = [p for p in balcony.drain()[0] if p.attrs.get("type") == "subscribe"]
        assert summary(requests) == [("presence", ROMEO, "subscribe")]
        assert requests[0].attrs["id"] == "wait" and requests[0].find_text("status") == "It is I"
        # Still pending: the next resource gets it as well (§3.1.3 rule 4).
        chamber = await login(running, f"{JULIET}/chamber")
        assert ("presence", ROMEO, "subscribe") in summary(chamber.drain()[0])
        chamber.send(f"<presence type='subscribed' to='{ROMEO}'/>")
        await settle([balcony, chamber])
        assert balcony.item(ROMEO)["subscription"] == "from"
        romeo = await login(running, f"{ROMEO}/orchard")
        assert romeo.item(JULIET)["subscription"] == "to"
        # Juliet's presence came on login (§4.3): both her resources.
        assert {p.attrs["from"] for p in romeo.drain()[0] if "type" not in p.attrs} >= {
            f"{JULIET}/balcony",
            f"{JULIET}/chamber",
        }
        await close_all([balcony, chamber, romeo])


# -- §3.2, §3.3 ----------------------------------------------------------------------------------------------
async def test_cancelled_subscription(server: RunningServer) -> None:
    orchard, garden, balcony, chamber = await lovers(server)
    everyone = [orchard, garden, balcony, chamber]
    await mutual(orchard, balcony, garden, chamber)
    balcony.send(f"<presence type='unsubscribed' to='{ROMEO}'/>")
    await settle(everyone)
    for resource in (orchard, garden):
        presences, pushes = resource.drain()
        # §3.2.2: unavailable from each of Juliet's resources, then the cancellation
        assert summary(presences) == [
            ("presence", f"{JULIET}/balcony", "unavailable"),
            ("presence", f"{JULIET}/chamber", "unavailable"),
            ("presence", JULIET, "unsubscribed"),
        ]
        assert [push_item(p)["subscription"] for p in pushes] == ["from"]
    for resource in (balcony, chamber):
        assert resource.item(ROMEO)["subscription"] == "to"
    await close_all(everyone)


async def test_unsubscribe(server: RunningServer) -> None:
    orchard, garden, balcony, chamber = await lovers(server)
    everyone = [orchard, garden, balcony, chamber]
    await mutual(orchard, balcony, garden, chamber)
    garden.send(f"<presence type='unsubscribe' to='{JULIET}'/>")
    await settle(everyone)
    for resource in (balcony, chamber):
        presences, pushes = resource.drain()
        assert summary(presences) == [("presence", ROMEO, "unsubscribe")]
        assert [push_item(p)["subscription"] for p in pushes] == ["to"]
    for resource in (orchard, garden):
        presences, pushes = resource.drain()
        assert [push_item(p)["subscription"] for p in pushes] == ["from"]
        # §3.3.3 rule 3: Juliet's resources are now unavailable to Romeo.
        assert sorted(summary(presences)) == [
            ("presence", f"{JULIET}/balcony", "unavailable"),
            ("presence", f"{JULIET}/chamber", "unavailable"),
        ]
    await close_all(everyone)


# -- §3.4 ----------------------------------------------------------------------------------------------------
async def test_pre_approved_request_is_approved_by_the_server(server: RunningServer) -> None:
    orchard, garden, balcony, chamber = await lovers(server)
    everyone = [orchard, garden, balcony, chamber]
    balcony.send(f"<presence type='subscribed' to='{ROMEO}'/>")
    await settle(everyone)
    for resource in (balcony, chamber):
        _, pushes = resource.drain()
        assert [push_item(p) for p in pushes] == [{"jid": ROMEO, "subscription": "none", "approved": "true"}]
    assert orchard.drain() == ([], [])
    orchard.send(f"<presence type='subscribe' to='{JULIET}'/>")
    await settle(everyone)
    assert orchard.item(JULIET)["subscription"] == "to"
    for resource in (balcony, chamber):
        presences, pushes = resource.drain()
        assert presences == []  # never asked
        assert [push_item(p) for p in pushes] == [{"jid": ROMEO, "subscription": "from"}]
    await close_all(everyone)


# -- §4 ------------------------------------------------------------------------------------------------------
async def test_presence_exchange_between_multi_resource_accounts(server: RunningServer) -> None:
    orchard, garden, balcony, chamber = await lovers(server)
    nurse = await login(server, "nurse@localhost/kitchen")
    everyone = [orchard, garden, balcony, chamber, nurse]
    await mutual(orchard, balcony, garden, chamber, nurse)

    # §4.4: an update reaches each resource of each subscriber and the user's own resources.
    balcony.send("<presence><show>away</show><status>stepped away</status></presence>")
    await settle(everyone)
    for resource in (orchard, garden, balcony, chamber):
        presences, _ = resource.drain()
        assert [(p.attrs["from"], p.find_text("show")) for p in presences] == [(f"{JULIET}/balcony", "away")]
    assert nurse.drain() == ([], [])

    # §4.5: a client that vanishes is announced unavailable.
    balcony.client.abort()
    await settle([orchard, garden, chamber])
    for resource in (orchard, garden, chamber):
        presences, _ = resource.drain()
        assert summary(presences) == [("presence", f"{JULIET}/balcony", "unavailable")]
    assert orchard.item(JULIET)["resources"] == ["chamber"]

    # §4.2/§4.3: a new resource gets its contacts' and its own other resources' presence.
    tower = await login(server, f"{JULIET}/tower")
    await settle([orchard, garden, chamber, tower])
    froms = sorted(p.attrs["from"] for p in tower.drain()[0] if "type" not in p.attrs)
    assert froms == [f"{JULIET}/chamber", f"{JULIET}/tower", f"{ROMEO}/garden", f"{ROMEO}/orchard"]
    for resource in (orchard, garden, chamber):
        presences, _ = resource.drain()
        assert summary(presences) == [("presence", f"{JULIET}/tower", None)]
    await close_all([orchard, garden, chamber, tower, nurse])


async def test_directed_presence_is_undone_on_logout(server: RunningServer) -> None:
    juliet = await login(server, f"{JULIET}/balcony")
    benvolio = await login(server, "benvolio@localhost/street")
    benvolio.drain()
    juliet.send("<presence to='benvolio@localhost/street'><status>psst</status></presence>")
    await settle([juliet, benvolio])
    assert summary(benvolio.drain()[0]) == [("presence", f"{JULIET}/balcony", None)]
    await juliet.close()
    await settle([benvolio])
    assert summary(benvolio.drain()[0]) == [("presence", f"{JULIET}/balcony", "unavailable")]
    await close_all([benvolio])


async def test_priority_decides_where_bare_jid_messages_go(server: RunningServer) -> None:
    # §4.7.2.3 sets the session priority that message routing (§8.5.2.1.1) reads.
    balcony = await login(server, f"{JULIET}/balcony", priority=1)
    chamber = await login(server, f"{JULIET}/chamber", priority=5)
    romeo = await login(server, f"{ROMEO}/orchard")
    romeo.send(f"<message to='{JULIET}' type='chat'><body>hi</body></message>")
    await settle([romeo, balcony, chamber])
    assert (await chamber.message()).find_text("body") == "hi"
    await balcony.no_message()
    chamber.send("<presence><priority>-1</priority></presence>")
    romeo.send(f"<message to='{JULIET}' type='chat'><body>again</body></message>")
    await settle([romeo, balcony, chamber])
    assert (await balcony.message()).find_text("body") == "again"
    bad = await balcony.iq("<ping xmlns='urn:xmpp:ping'/>", "get", to="localhost")
    assert bad.attrs["type"] == "result"
    balcony.send("<presence id='bad'><priority>500</priority></presence>")
    await settle([balcony])
    errors = [p for p in balcony.drain()[0] if p.attrs.get("type") == "error"]
    assert [error_condition(p) for p in errors] == ["bad-request"]
    await close_all([balcony, chamber, romeo])
