"""XEP-0163 PEP with real slixmpp clients (xep_0060/0115/0163 plugins): caps, +notify, last items.

Juliet and Romeo are mutual contacts unless a test says otherwise. Clients advertise interest with
slixmpp's own XEP-0115/XEP-0163 machinery: the server learns it from their presence, asks the client
for the disco#info behind an unknown hash, and verifies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.modules.pubsub.config import PUBSUB, PUBSUB_EVENT
from roost.xml.element import Element
from roost.xml.serializer import serialize
from tests.support.clients import Client
from tests.support.im import PASSWORD, Peer, add_users
from tests.support.server import RunningServer, running_server

JULIET, ROMEO, NURSE = "juliet@localhost", "romeo@localhost", "nurse@localhost"
TUNE = "http://jabber.org/protocol/tune"
GEO = "http://jabber.org/protocol/geoloc"


class PepPeer(Peer):
    """A slixmpp client with the PEP plugins, collecting PubSub events."""

    def events(self) -> list[Element]:
        out = []
        while not self.messages.empty():
            message = self.messages.get_nowait()
            if message.find("event", PUBSUB_EVENT) is not None:
                out.append(message)
        return out

    async def event(self, node: str, timeout: float = 5) -> Element:
        """The next event message about ``node`` (other messages are skipped)."""
        while True:
            message = await self.message(timeout)
            event = message.find("event", PUBSUB_EVENT)
            if event is not None and event.first() is not None and event.first().get("node") == node:  # type: ignore[union-attr]
                return message

    async def no_event(self, node: str, wait: float = 0.3) -> None:
        await asyncio.sleep(wait)
        await self.sync()
        for message in self.events():
            event = message.find("event", PUBSUB_EVENT)
            assert event is None or event.first().get("node") != node, f"unexpected event {message!r}"  # type: ignore[union-attr]


async def pep_login(
    server: RunningServer,
    jid: str,
    interests: tuple[str, ...] = (),
    *,
    presence: bool = True,
    peer_class: type[PepPeer] = PepPeer,
) -> PepPeer:
    client = Client(jid, PASSWORD)
    for plugin in ("xep_0030", "xep_0060", "xep_0115", "xep_0163"):
        client.register_plugin(plugin)
    for ns in interests:
        client.plugin["xep_0030"].add_feature(ns + "+notify")
    client.enable_plaintext = False
    client.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(client.session_started.wait(), 10)
    peer = peer_class(client)
    if presence:
        await client.plugin["xep_0115"].update_caps(broadcast=False)
        client.send_presence()
        await peer.sync()
    return peer


async def mutual(a: Peer, b: Peer) -> None:
    """Both subscribed to each other's presence."""
    a_bare, b_bare = a.jid.split("/")[0], b.jid.split("/")[0]
    a.send(f"<presence type='subscribe' to='{b_bare}'/>")
    await a.sync()
    b.send(f"<presence type='subscribed' to='{a_bare}'/>")
    b.send(f"<presence type='subscribe' to='{a_bare}'/>")
    await b.sync()
    a.send(f"<presence type='subscribed' to='{b_bare}'/>")
    await a.sync()
    await b.sync()


def tune(artist: str) -> str:
    return f"<tune xmlns='{TUNE}'><artist>{artist}</artist></tune>"


async def publish(
    peer: Peer, node: str, payload: str, item_id: str = "current", options: str = ""
) -> Element:
    item = f"<item id='{item_id}'>{payload}</item>"
    body = f"<publish node='{node}'>{item}</publish>{options}"
    return await peer.iq(f"<pubsub xmlns='{PUBSUB}'>{body}</pubsub>")


@pytest.fixture
async def users(server: RunningServer) -> None:
    await add_users(server, "juliet", "romeo", "nurse")


@pytest.fixture
async def opened() -> AsyncIterator[list[Peer]]:
    peers: list[Peer] = []
    yield peers
    for peer in peers:
        peer.client.disconnect()


async def test_notification_to_contacts_with_notify_and_own_resources(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    juliet = await pep_login(server, JULIET + "/balcony", (TUNE,))
    romeo = await pep_login(server, ROMEO + "/orchard", (TUNE,))
    nurse = await pep_login(server, NURSE + "/kitchen", ())  # a contact without +notify for tune
    opened += [juliet, romeo, nurse]
    await mutual(juliet, romeo)
    await mutual(juliet, nurse)
    reply = await publish(juliet, TUNE, tune("Gounod"))
    assert reply.attrs["type"] == "result", reply
    got = await romeo.event(TUNE)
    assert (
        got.attrs["from"] == JULIET and got.attrs["to"] == romeo.jid
    )  # §4.3.1: from the bare JID, to the full
    item = got.find("event", PUBSUB_EVENT).find("items").find("item")  # type: ignore[union-attr]
    assert item.find("tune", TUNE).find_text("artist", TUNE) == "Gounod"  # type: ignore[union-attr]
    # §4.3.1 rule 3: the publishing resource, for those who share presence with her
    address = got.find("addresses", "http://jabber.org/protocol/address").find("address")  # type: ignore[union-attr]
    assert address.attrs == {"type": "replyto", "jid": juliet.jid}  # type: ignore[union-attr]
    own = await juliet.event(TUNE)
    assert own.attrs["to"] == juliet.jid
    await nurse.no_event(TUNE)


async def test_stranger_gets_nothing_and_cannot_read_presence_node(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    juliet = await pep_login(server, JULIET + "/balcony", (TUNE,))
    stranger = await pep_login(server, NURSE + "/kitchen", (TUNE,))
    opened += [juliet, stranger]
    await publish(juliet, TUNE, tune("Berlioz"))
    await stranger.no_event(TUNE)
    reply = await stranger.iq(f"<pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub>", "get", JULIET)
    assert reply.attrs["type"] == "error"
    error = reply.find("error")
    assert error is not None and error.find("presence-subscription-required", PUBSUB + "#errors") is not None


async def test_last_item_on_login(server: RunningServer, users: None, opened: list[Peer]) -> None:
    juliet = await pep_login(server, JULIET + "/balcony", (TUNE,))
    romeo = await pep_login(server, ROMEO + "/orchard", (TUNE,))
    opened += [juliet, romeo]
    await mutual(juliet, romeo)
    await publish(juliet, TUNE, tune("Prokofiev"))
    await romeo.event(TUNE)
    garden = await pep_login(server, ROMEO + "/garden", (TUNE,))
    opened.append(garden)
    got = await garden.event(TUNE)  # §4.3.3: the newly available resource gets the last item
    assert "Prokofiev" in serialize(got)


async def test_caps_arriving_after_subscription_and_after_publication(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    """Subscription first, publication next, caps with +notify last: the last item still comes."""
    juliet = await pep_login(server, JULIET + "/balcony")
    romeo = await pep_login(server, ROMEO + "/orchard")
    opened += [juliet, romeo]
    await mutual(juliet, romeo)
    await publish(juliet, GEO, f"<geoloc xmlns='{GEO}'><locality>Verona</locality></geoloc>")
    await romeo.no_event(GEO)
    romeo.client.plugin["xep_0163"].add_interest(GEO)  # slixmpp recomputes caps
    await asyncio.sleep(0.1)
    romeo.client.send_presence()
    got = await romeo.event(GEO)
    assert "Verona" in serialize(got)


async def test_subscription_approved_after_caps(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    """Caps first, then Juliet approves Romeo: he gets her last item at once."""
    juliet = await pep_login(server, JULIET + "/balcony", (TUNE,))
    romeo = await pep_login(server, ROMEO + "/orchard", (TUNE,))
    opened += [juliet, romeo]
    await publish(juliet, TUNE, tune("Bellini"))
    romeo.send(f"<presence type='subscribe' to='{JULIET}'/>")
    await romeo.sync()
    juliet.send(f"<presence type='subscribed' to='{ROMEO}'/>")
    got = await romeo.event(TUNE)
    assert "Bellini" in serialize(got)


async def test_pep_identity_and_publish_options_feature(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    juliet = await pep_login(server, JULIET + "/balcony")
    opened.append(juliet)
    info = await juliet.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", "get", JULIET)
    query = info.find("query", "http://jabber.org/protocol/disco#info")
    assert query is not None
    identities = [(i.get("category"), i.get("type")) for i in query.elements("identity")]
    assert ("pubsub", "pep") in identities
    features = {f.get("var") for f in query.elements("feature")}
    assert PUBSUB + "#publish-options" in features and PUBSUB + "#access-presence" in features


async def test_server_caps_in_stream_features_verify(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    juliet = await pep_login(server, JULIET + "/balcony")
    opened.append(juliet)
    client: Any = juliet.client
    caps = client.features
    assert "caps" in caps  # slixmpp saw <c/> among the stream features
    ver = None
    for _ in range(50):
        ver = await client.plugin["xep_0115"].get_verstring("localhost")
        if ver:
            break
        await asyncio.sleep(0.05)
    assert ver, "slixmpp could not verify the server's caps"


async def test_nodes_survive_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        await add_users(server, "juliet")
        juliet = await pep_login(server, JULIET + "/balcony")
        await publish(juliet, TUNE, tune("Verdi"))
        juliet.client.disconnect()
    async with running_server(tmp_path) as server:
        juliet = await pep_login(server, JULIET + "/balcony")
        reply = await juliet.iq(f"<pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub>", "get")
        juliet.client.disconnect()
    assert "Verdi" in serialize(reply), reply


async def test_no_notification_to_a_blocked_contact(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    juliet = await pep_login(server, JULIET + "/balcony", (TUNE,))
    romeo = await pep_login(server, ROMEO + "/orchard", (TUNE,))
    opened += [juliet, romeo]
    await mutual(juliet, romeo)
    blocked = await juliet.iq(f"<block xmlns='urn:xmpp:blocking'><item jid='{ROMEO}'/></block>")
    assert blocked.attrs["type"] == "result"
    await publish(juliet, TUNE, tune("Gluck"))
    await juliet.event(TUNE)  # her own resource still gets it
    await romeo.no_event(TUNE)


async def test_caps_that_do_not_match_their_hash_serve_only_that_client(
    server: RunningServer, users: None, opened: list[Peer]
) -> None:
    """XEP-0115 §5.4: the server asks the client (from its domain, to the full JID), checks the answer
    against the hash, and does not cache a mismatch — yet that client still gets what it asked for."""
    from roost.modules.pubsub.pep import find_runtime
    from tests.support.raw import RawClient

    juliet = await pep_login(server, JULIET + "/balcony", (TUNE,))
    opened.append(juliet)
    raw = await RawClient.login(server.c2s_port, "juliet", PASSWORD, "raw")
    try:
        raw.send_raw(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='bogus='/>"
            "</presence>"
        )
        while True:
            query = await raw.element()
            if query.name == "iq" and query.attrs.get("type") == "get":
                break
        assert query.attrs["from"] == "localhost" and query.attrs["to"] == raw.jid
        disco = query.find("query", "http://jabber.org/protocol/disco#info")
        assert disco is not None and disco.attrs["node"] == "urn:test#bogus="
        raw.send_raw(
            f"<iq type='result' id='{query.attrs['id']}' to='localhost'>"
            "<query xmlns='http://jabber.org/protocol/disco#info' node='urn:test#bogus='>"
            "<identity category='client' type='pc'/>"
            f"<feature var='{TUNE}+notify'/></query></iq>"
        )
        await juliet.sync()
        await asyncio.sleep(0.1)
        runtime = find_runtime(server.server)
        assert runtime is not None and runtime.caps.get("sha-1", "bogus=") is None
        await publish(juliet, TUNE, tune("Rossini"))
        while True:
            message = await raw.element()
            if message.name == "message":
                break
        assert "Rossini" in serialize(message)
    finally:
        raw.close()
