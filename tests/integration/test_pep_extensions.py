"""What clients keep in PEP, with real slixmpp plugins: bookmarks (XEP-0402 with the XEP-0048/0049/0411
bridges), XEP-0223 private data, avatars (XEP-0084 ⇄ vCard, XEP-0398), nick (XEP-0172), vCard4
(XEP-0292), and OMEMO (XEP-0384) with slixmpp-omemo: two clients exchange a message that decrypts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp.plugins.xep_0048 import Bookmarks as LegacyBookmarks
from slixmpp.xmlstream import ElementBase

from roost.modules.pubsub.config import PUBSUB
from roost.modules.pubsub.pep import find_runtime
from roost.xml.serializer import serialize
from tests.integration.test_pep import PepPeer, mutual
from tests.support.clients import Client
from tests.support.im import PASSWORD, Peer, add_users
from tests.support.server import RunningServer

JULIET, ROMEO = "juliet@localhost", "romeo@localhost"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"


async def login(server: RunningServer, jid: str, plugins: tuple[str, ...] = (), **config: Any) -> PepPeer:
    client = Client(jid, PASSWORD)
    for plugin in ("xep_0030", "xep_0060", "xep_0115", "xep_0163", *plugins):
        client.register_plugin(plugin, pconfig=config.get(plugin))
    client.enable_plaintext = False
    client.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(client.session_started.wait(), 10)
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    peer = PepPeer(client)
    await peer.sync()
    return peer


@pytest.fixture
async def opened(server: RunningServer) -> AsyncIterator[list[Peer]]:
    await add_users(server, "juliet", "romeo")
    peers: list[Peer] = []
    yield peers
    for peer in peers:
        peer.client.disconnect()


def node_of(server: RunningServer, user: str, node: str) -> Any:
    runtime = find_runtime(server.server)
    assert runtime is not None
    service = runtime.cached("localhost", user)
    assert service is not None
    return service.nodes.get(node)


# -- XEP-0402 and its bridges -----------------------------------------------------------------------
async def test_bookmarks2_reach_legacy_private_storage(server: RunningServer, opened: list[Peer]) -> None:
    juliet = await login(server, JULIET + "/balcony", ("xep_0402", "xep_0049", "xep_0048"))
    opened.append(juliet)
    await _publish_bookmark2(juliet, "balcony@conference.localhost", "The Balcony")
    legacy = await juliet.client.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    confs = legacy["private"]["bookmarks"]["conferences"]
    assert [(str(c["jid"]), c["name"], c["nick"], c["autojoin"]) for c in confs] == [
        ("balcony@conference.localhost", "The Balcony", "J", True)
    ]
    node = node_of(server, "juliet", BOOKMARKS2)
    assert node.config.access_model == "whitelist" and node.config.send_last_published_item == "never"


async def _publish_bookmark2(peer: Peer, room: str, name: str) -> None:
    options = (
        "<publish-options><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
        "<field var='pubsub#persist_items'><value>true</value></field>"
        "<field var='pubsub#max_items'><value>max</value></field>"
        "<field var='pubsub#send_last_published_item'><value>never</value></field>"
        "<field var='pubsub#access_model'><value>whitelist</value></field></x></publish-options>"
    )
    conference = f"<conference xmlns='{BOOKMARKS2}' name='{name}' autojoin='true'><nick>J</nick></conference>"
    item = f"<item id='{room}'>{conference}</item>"
    reply = await peer.iq(
        f"<pubsub xmlns='{PUBSUB}'><publish node='{BOOKMARKS2}'>{item}</publish>{options}</pubsub>"
    )
    assert reply.attrs["type"] == "result", reply


async def test_legacy_private_bookmarks_reach_bookmarks2_with_a_notification(
    server: RunningServer, opened: list[Peer]
) -> None:
    modern = await login(server, JULIET + "/modern", ("xep_0402",))
    legacy = await login(server, JULIET + "/legacy", ("xep_0049", "xep_0048"))
    opened += [modern, legacy]
    modern.client.plugin["xep_0163"].add_interest(BOOKMARKS2)
    await asyncio.sleep(0.1)
    modern.client.send_presence()
    await modern.sync()
    marks = LegacyBookmarks()
    marks.add_conference("crypt@conference.localhost", "J", name="The Crypt", autojoin=True)
    await legacy.client.plugin["xep_0048"].set_bookmarks(marks, method="xep_0049")
    event = await modern.event(BOOKMARKS2)
    item = event.find("event", PUBSUB + "#event").find("items").find("item")  # type: ignore[union-attr]
    assert item.get("id") == "crypt@conference.localhost"  # type: ignore[union-attr]
    assert item.find("conference", BOOKMARKS2).get("name") == "The Crypt"  # type: ignore[union-attr]
    # XEP-0411: the XEP-0048 PEP node has them too.
    pep = await legacy.client.plugin["xep_0048"].get_bookmarks(method="xep_0223")
    assert "crypt@conference.localhost" in str(pep)
    # Removing it in private storage retracts it from XEP-0402.
    await legacy.client.plugin["xep_0048"].set_bookmarks(LegacyBookmarks(), method="xep_0049")
    retract = await modern.event(BOOKMARKS2)
    assert retract.find("event", PUBSUB + "#event").find("items").find("retract") is not None  # type: ignore[union-attr]


async def test_bookmarks_features_on_the_account(server: RunningServer, opened: list[Peer]) -> None:
    juliet = await login(server, JULIET + "/balcony")
    opened.append(juliet)
    info = await juliet.client.plugin["xep_0030"].get_info(jid=JULIET)
    features = set(info["disco_info"]["features"])
    for needed in (
        BOOKMARKS2 + "#compat",
        BOOKMARKS2 + "#compat-pep",
        "urn:xmpp:bookmarks-conversion:0",
        "urn:xmpp:pep-vcard-conversion:0",
    ):
        assert needed in features


class Diary(ElementBase):  # type: ignore[misc]
    name = "diary"
    namespace = "urn:example:diary"
    plugin_attrib = "diary"
    interfaces = {"text"}

    def get_text(self) -> str:
        return str(self.xml.text or "")

    def set_text(self, value: str) -> None:
        self.xml.text = value


# -- XEP-0223 --------------------------------------------------------------------------------------
async def test_private_pep_data_stays_private(server: RunningServer, opened: list[Peer]) -> None:
    juliet = await login(server, JULIET + "/balcony", ("xep_0223",))
    romeo = await login(server, ROMEO + "/orchard")
    opened += [juliet, romeo]
    await mutual(juliet, romeo)
    diary = Diary()
    diary["text"] = "secret"
    await juliet.client.plugin["xep_0223"].store(diary, node="urn:example:diary", id="current")
    got = await juliet.client.plugin["xep_0223"].retrieve("urn:example:diary")
    assert "secret" in str(got)
    reply = await romeo.iq(
        f"<pubsub xmlns='{PUBSUB}'><items node='urn:example:diary'/></pubsub>", "get", JULIET
    )
    assert reply.attrs["type"] == "error" and "closed-node" in serialize(reply)


# -- XEP-0084 + XEP-0398, XEP-0172, XEP-0292 -------------------------------------------------------------
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_pep_avatar_becomes_the_vcard_photo(server: RunningServer, opened: list[Peer]) -> None:
    juliet = await login(server, JULIET + "/balcony", ("xep_0084", "xep_0054", "xep_0153"))
    opened.append(juliet)
    avatar = juliet.client.plugin["xep_0084"]
    sha = hashlib.sha1(PNG).hexdigest()
    await avatar.publish_avatar(PNG)
    await avatar.publish_avatar_metadata([{"id": sha, "type": "image/png", "bytes": len(PNG)}])
    await juliet.sync()
    for _ in range(50):
        vcard = await juliet.client.plugin["xep_0054"].get_vcard(JULIET, local=False, cached=False)
        if vcard["vcard_temp"]["PHOTO"]["BINVAL"]:
            break
        await asyncio.sleep(0.05)
    assert vcard["vcard_temp"]["PHOTO"]["BINVAL"] == PNG
    assert vcard["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"


async def test_vcard_photo_becomes_the_pep_avatar(server: RunningServer, opened: list[Peer]) -> None:
    juliet = await login(server, JULIET + "/balcony", ("xep_0054",))
    romeo = await login(server, ROMEO + "/orchard", ("xep_0084",))
    opened += [juliet, romeo]
    await mutual(juliet, romeo)
    romeo.client.plugin["xep_0163"].add_interest("urn:xmpp:avatar:metadata")
    await asyncio.sleep(0.1)
    romeo.client.send_presence()
    await romeo.sync()
    vcard = juliet.client.plugin["xep_0054"].make_vcard()
    vcard["PHOTO"]["TYPE"] = "image/png"
    vcard["PHOTO"]["BINVAL"] = PNG
    await juliet.client.plugin["xep_0054"].publish_vcard(vcard)
    event = await romeo.event("urn:xmpp:avatar:metadata")
    info = event.find("event", PUBSUB + "#event").find("items").find("item").first().find("info")  # type: ignore[union-attr]
    assert info.get("id") == hashlib.sha1(PNG).hexdigest() and info.get("type") == "image/png"  # type: ignore[union-attr]
    data = await romeo.iq(
        f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:avatar:data'/></pubsub>", "get", JULIET
    )
    assert base64.b64encode(PNG).decode() in serialize(data)


async def test_nick_and_vcard4(server: RunningServer, opened: list[Peer]) -> None:
    juliet = await login(server, JULIET + "/balcony", ("xep_0172", "xep_0292"))
    romeo = await login(server, ROMEO + "/orchard", ("xep_0172",))
    opened += [juliet, romeo]
    await mutual(juliet, romeo)
    await asyncio.sleep(0.1)
    romeo.client.send_presence()  # its caps now say nick+notify (registered at bind by the plugin)
    await romeo.sync()
    await juliet.client.plugin["xep_0172"].publish_nick("Jules")
    event = await romeo.event("http://jabber.org/protocol/nick")
    assert "Jules" in serialize(event)
    vcard4 = juliet.client.plugin["xep_0292"]
    # XEP-0292 §3: node urn:xmpp:vcard4 (slixmpp would default to the payload namespace)
    await vcard4.publish_vcard(full_name="Juliet Capulet", node="urn:xmpp:vcard4")
    got = await romeo.iq(f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:vcard4'/></pubsub>", "get", JULIET)
    assert "Juliet Capulet" in serialize(got)
