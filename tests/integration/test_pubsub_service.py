"""The PubSub service on its own domain, with slixmpp's XEP-0060 plugin: nodes, items, limits, restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from roost.modules.pubsub.config import PUBSUB, PUBSUB_EVENT
from roost.modules.pubsub.pep import find_runtime as find_pep
from roost.modules.pubsub.service import find_runtime as find_service
from tests.support.clients import Client
from tests.support.im import PASSWORD, Peer, add_users
from tests.support.server import RunningServer, running_server

SERVICE = "pubsub.localhost"
SENSOR = "urn:example:sensor"


async def login(server: RunningServer, jid: str) -> Peer:
    client = Client(jid, PASSWORD)
    client.register_plugin("xep_0060")
    client.enable_plaintext = False
    client.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(client.session_started.wait(), 10)
    client.send_presence()
    peer = Peer(client)
    await peer.sync()
    return peer


def reading(value: str) -> Any:
    return ET.fromstring(f"<reading xmlns='{SENSOR}'>{value}</reading>")


def pubsub(peer: Peer) -> Any:
    return peer.client.plugin["xep_0060"]


@pytest.fixture
async def opened() -> AsyncIterator[list[Peer]]:
    peers: list[Peer] = []
    yield peers
    for peer in peers:
        peer.client.disconnect()


async def condition(call: Any) -> str:
    with pytest.raises(IqError) as info:
        await call
    return str(info.value.iq["error"]["condition"])


async def test_iot_node_publish_subscribe_and_retrieve(server: RunningServer, opened: list[Peer]) -> None:
    await add_users(server, "sensor", "display")
    sensor = await login(server, "sensor@localhost/dev")
    display = await login(server, "display@localhost/wall")
    opened += [sensor, display]
    await pubsub(sensor).create_node(SERVICE, "kitchen/temperature")
    result = await pubsub(display).subscribe(SERVICE, "kitchen/temperature")
    assert result["pubsub"]["subscription"]["subscription"] == "subscribed"
    assert result["pubsub"]["subscription"]["subid"]
    for value in ("20.5", "21.0"):
        await pubsub(sensor).publish(SERVICE, "kitchen/temperature", id=value, payload=reading(value))
    first = await display.message()
    second = await display.message()
    assert first.attrs["from"] == SERVICE and first.attrs["to"] == "display@localhost"
    for message, value in ((first, "20.5"), (second, "21.0")):
        item = message.find("event", PUBSUB_EVENT).find("items").find("item")  # type: ignore[union-attr]
        assert item.get("id") == value and item.find("reading", SENSOR).text == value  # type: ignore[union-attr]
    items = await pubsub(display).get_items(SERVICE, "kitchen/temperature", max_items=1)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["21.0"]
    nodes = await display.client.plugin["xep_0030"].get_items(jid=SERVICE)
    assert ("pubsub.localhost", "kitchen/temperature", None) in [
        (str(j), n, name) for j, n, name in nodes["disco_items"]["items"]
    ]
    service_info = await display.client.plugin["xep_0030"].get_info(jid=SERVICE)
    assert ("pubsub", "service") in [(i[0], i[1]) for i in service_info["disco_info"]["identities"]]
    server_items = await display.client.plugin["xep_0030"].get_items(jid="localhost")
    assert SERVICE in [str(j) for j, _, _ in server_items["disco_items"]["items"]]


async def test_only_the_owner_deletes_and_subscribers_hear_of_it(
    server: RunningServer, opened: list[Peer]
) -> None:
    await add_users(server, "owner", "fan")
    owner = await login(server, "owner@localhost/r")
    fan = await login(server, "fan@localhost/r")
    opened += [owner, fan]
    await pubsub(owner).create_node(SERVICE, "game/state", config=None)
    form = await pubsub(owner).get_node_config(SERVICE, "game/state")
    config = form["pubsub_owner"]["configure"]["form"]
    config["type"] = "submit"
    config.field["pubsub#notify_delete"]["value"] = True
    await pubsub(owner).set_node_config(SERVICE, "game/state", config)
    await pubsub(fan).subscribe(SERVICE, "game/state")
    assert await condition(pubsub(fan).delete_node(SERVICE, "game/state")) == "forbidden"
    await pubsub(owner).delete_node(SERVICE, "game/state")
    message = await fan.message()
    assert message.find("event", PUBSUB_EVENT).find("delete").get("node") == "game/state"  # type: ignore[union-attr]


async def test_node_creation_restricted_to_admins(tmp_path: Path) -> None:
    async with running_server(tmp_path, "[pubsub]\ncreate_nodes = 'admins'\n") as server:
        await add_users(server, "user")
        user = await login(server, "user@localhost/r")
        try:
            assert await condition(pubsub(user).create_node(SERVICE, "mine")) == "forbidden"
        finally:
            user.client.disconnect()


async def test_limits_name_their_condition(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, "[pubsub]\nmax_payload_bytes = 300\nmax_nodes_per_user = 1\n"
    ) as server:
        await add_users(server, "user")
        user = await login(server, "user@localhost/r")
        try:
            await pubsub(user).create_node(SERVICE, "feed")
            with pytest.raises(IqError) as info:
                await pubsub(user).create_node(SERVICE, "second")
            assert info.value.iq["error"]["condition"] == "not-allowed"
            assert "max-nodes-exceeded" in str(info.value.iq)
            big = ET.fromstring(f"<entry xmlns='http://www.w3.org/2005/Atom'>{'x' * 400}</entry>")
            with pytest.raises(IqError) as info:
                await pubsub(user).publish(SERVICE, "feed", payload=big)
            assert info.value.iq["error"]["condition"] == "not-acceptable"
            assert "payload-too-big" in str(info.value.iq)
        finally:
            user.client.disconnect()


async def test_service_nodes_survive_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        await add_users(server, "sensor")
        sensor = await login(server, "sensor@localhost/dev")
        await pubsub(sensor).create_node(SERVICE, "t")
        await pubsub(sensor).publish(SERVICE, "t", id="1", payload=reading("19"))
        sensor.client.disconnect()
    async with running_server(tmp_path) as server:
        sensor = await login(server, "sensor@localhost/dev")
        items = await pubsub(sensor).get_items(SERVICE, "t")
        sensor.client.disconnect()
    assert [i["id"] for i in items["pubsub"]["items"]] == ["1"]


async def test_authorize_model_by_approval_message(server: RunningServer, opened: list[Peer]) -> None:
    await add_users(server, "owner", "fan")
    owner = await login(server, "owner@localhost/r")
    fan = await login(server, "fan@localhost/r")
    opened += [owner, fan]
    create = (
        f"<pubsub xmlns='{PUBSUB}'><create node='club'/><configure><x xmlns='jabber:x:data' type='submit'>"
        "<field var='pubsub#access_model'><value>authorize</value></field></x></configure></pubsub>"
    )
    assert (await owner.iq(create, to=SERVICE)).attrs["type"] == "result"
    reply = await fan.iq(
        f"<pubsub xmlns='{PUBSUB}'><subscribe node='club' jid='fan@localhost'/></pubsub>", to=SERVICE
    )
    assert reply.find("pubsub", PUBSUB).find("subscription").get("subscription") == "pending"  # type: ignore[union-attr]
    request = await owner.message()
    form = request.find("x", "jabber:x:data")
    assert form is not None
    answer = (
        f"<message to='{SERVICE}'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#subscribe_authorization</value></field>"
        "<field var='pubsub#node'><value>club</value></field>"
        "<field var='pubsub#subscriber_jid'><value>fan@localhost</value></field>"
        "<field var='pubsub#allow'><value>true</value></field></x></message>"
    )
    owner.send(answer)
    approved = await fan.message()
    sub = approved.find("event", PUBSUB_EVENT).find("subscription")  # type: ignore[union-attr]
    assert sub.get("subscription") == "subscribed"  # type: ignore[union-attr]


async def test_account_deletion_removes_pep_nodes_and_service_state(server: RunningServer) -> None:
    await add_users(server, "juliet", "romeo")
    juliet = await login(server, "juliet@localhost/balcony")
    romeo = await login(server, "romeo@localhost/orchard")
    try:
        await pubsub(juliet).publish("juliet@localhost", "urn:example:diary", id="1", payload=reading("x"))
        await pubsub(juliet).create_node(SERVICE, "juliet-feed")
        await pubsub(romeo).create_node(SERVICE, "romeo-feed")
        await pubsub(juliet).subscribe(SERVICE, "romeo-feed")
        await juliet.sync()
        assert await server.server.accounts.remove("localhost", "juliet")
        await romeo.sync()
        storage = server.server.storage
        assert await storage.map("pubsub_nodes").items("localhost", "juliet") == {}
        assert await storage.map("pubsub_items").items("localhost", "juliet") == {}
        runtime = find_service(server.server)
        assert runtime is not None
        assert "juliet-feed" not in runtime.service.nodes  # she alone owned it
        assert not runtime.service.nodes["romeo-feed"].subscriptions
        await runtime.store.flush()
        stored = await storage.map("pubsub_nodes").items(SERVICE, "")
        assert set(stored) == {"romeo-feed"}
        pep = find_pep(server.server)
        assert pep is not None and pep.cached("localhost", "juliet") is None
    finally:
        romeo.client.disconnect()


async def test_collection_delivers_items_of_its_children_with_a_shim_header(
    server: RunningServer, opened: list[Peer]
) -> None:
    """XEP-0248 with slixmpp: a collection, a leaf in it, a subscriber of the collection (type items)."""
    await add_users(server, "sensor", "display")
    sensor = await login(server, "sensor@localhost/dev")
    display = await login(server, "display@localhost/wall")
    opened += [sensor, display]
    await pubsub(sensor).create_node(SERVICE, "house", config=_form("node_config", "node_type", "collection"))
    await pubsub(sensor).create_node(
        SERVICE, "house/kitchen", config=_form("node_config", "collection", "house")
    )
    options = ET.tostring(_form("subscribe_options", "subscription_type", "items").xml).decode()
    reply = await display.iq(
        f"<pubsub xmlns='{PUBSUB}'><subscribe node='house' jid='display@localhost'/>"
        f"<options>{options}</options></pubsub>",
        to=SERVICE,
    )
    assert reply.get("type") == "result", reply
    # A collection takes no items.
    assert await condition(pubsub(sensor).publish(SERVICE, "house", payload=reading("x"))) == (
        "feature-not-implemented"
    )
    await pubsub(sensor).publish(SERVICE, "house/kitchen", id="t1", payload=reading("19.5"))
    message = await display.message()
    items = message.find("event", PUBSUB_EVENT).find("items")  # type: ignore[union-attr]
    assert items is not None and items.get("node") == "house/kitchen"
    header = message.find("headers", "http://jabber.org/protocol/shim").find("header")  # type: ignore[union-attr]
    assert header is not None and header.get("name") == "Collection" and header.text == "house"
    top = await display.client.plugin["xep_0030"].get_items(jid=SERVICE)
    assert [n for _, n, _ in top["disco_items"]["items"]] == ["house"]
    inside = await display.client.plugin["xep_0030"].get_items(jid=SERVICE, node="house")
    assert [n for _, n, _ in inside["disco_items"]["items"]] == ["house/kitchen"]


def _form(form_type: str, var: str, value: str) -> Any:
    """A submitted pubsub#<form_type> form with one field, as slixmpp takes it."""
    from slixmpp.plugins.xep_0004 import Form

    return Form(
        xml=ET.fromstring(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{PUBSUB}#{form_type}</value></field>"
            f"<field var='pubsub#{var}'><value>{value}</value></field></x>"
        )
    )
