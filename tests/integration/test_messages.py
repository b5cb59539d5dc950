"""RFC 6121 §8.5 message delivery to local accounts, and XEP-0359 stanza-ids, with real clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.stanza import error_condition
from roost.util.ids import id_timestamp
from roost.xml.element import Element
from roost.xml.ns import STANZA_ID
from tests.support.im import Peer, add_users, close_all, install_presence_shim, login
from tests.support.server import RunningServer, running_server

SID = STANZA_ID


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    install_presence_shim(server.server)
    await add_users(server, "romeo", "juliet", "nurse")


def stanza_ids(stanza: Element) -> list[dict[str, str]]:
    return [dict(el.attrs) for el in stanza.elements("stanza-id", SID)]


async def test_chat_to_bare_jid_goes_to_highest_priority_resource(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    high = await login(server, "juliet@localhost/high", priority=5)
    low = await login(server, "juliet@localhost/low", priority=1)
    peers += [romeo, high, low]
    romeo.send("<message to='juliet@localhost' type='chat' id='c1'><body>hello</body></message>")
    got = await high.message()
    assert got.attrs["to"] == "juliet@localhost"  # §8.5.2.1: 'to' is not rewritten
    assert got.attrs["from"] == "romeo@localhost/r"
    assert got.find_text("body") == "hello"
    await romeo.sync()
    await low.no_message()


async def test_normal_message_to_bare_jid_reaches_every_resource_sharing_top_priority(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    a = await login(server, "juliet@localhost/a", priority=3)
    b = await login(server, "juliet@localhost/b", priority=3)
    c = await login(server, "juliet@localhost/c", priority=0)
    peers += [romeo, a, b, c]
    romeo.send("<message to='juliet@localhost' id='n1'><body>to both</body></message>")
    got_a, got_b = await a.message(), await b.message()
    assert got_a.find_text("body") == got_b.find_text("body") == "to both"
    # One message, one stanza-id, whichever resource shows it.
    assert stanza_ids(got_a) == stanza_ids(got_b)
    await romeo.sync()
    await c.no_message()


async def test_headline_to_bare_jid_goes_to_all_non_negative_resources(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    a = await login(server, "juliet@localhost/a", priority=3)
    b = await login(server, "juliet@localhost/b", priority=0)
    negative = await login(server, "juliet@localhost/neg", priority=-1)
    peers += [romeo, a, b, negative]
    romeo.send("<message to='juliet@localhost' type='headline'><body>news</body></message>")
    assert (await a.message()).find_text("body") == "news"
    assert (await b.message()).find_text("body") == "news"
    await romeo.sync()
    await negative.no_message()  # §8.5.2.1: never to a negative-priority resource via the bare JID


async def test_groupchat_to_bare_jid_is_refused_even_when_online(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send("<message to='juliet@localhost' type='groupchat' id='g1'><body>room?</body></message>")
    reply = await romeo.message()
    assert reply.attrs["type"] == "error" and reply.attrs["id"] == "g1"
    assert error_condition(reply) == "service-unavailable"
    await juliet.no_message()


async def test_error_message_to_bare_jid_is_ignored_silently(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send(
        "<message to='juliet@localhost' type='error' id='e1'><error type='cancel'>"
        "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    assert await romeo.barrier("juliet@localhost") == []  # no error in reply to an error
    await juliet.no_message()


@pytest.mark.parametrize("type_", ["chat", "normal"])
async def test_message_to_nonexistent_account_is_service_unavailable(
    server: RunningServer, peers: list[Peer], type_: str
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send(f"<message to='ghost@localhost' type='{type_}' id='x1'><body>anyone?</body></message>")
    reply = await romeo.message()
    assert reply.attrs["type"] == "error" and reply.attrs["id"] == "x1"
    assert reply.attrs["from"] == "ghost@localhost"
    assert error_condition(reply) == "service-unavailable"


@pytest.mark.parametrize("type_", ["headline", "error"])
async def test_headline_or_error_to_nonexistent_account_vanishes(
    server: RunningServer, peers: list[Peer], type_: str
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send(f"<message to='ghost@localhost' type='{type_}' id='x2'><body>psst</body></message>")
    assert await romeo.barrier("ghost@localhost") == []


async def test_full_jid_reaches_that_resource_whatever_its_priority(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    top = await login(server, "juliet@localhost/top", priority=10)
    shy = await login(server, "juliet@localhost/shy", priority=-5)
    hidden = await login(server, "juliet@localhost/hidden", available=False)
    peers += [romeo, top, shy, hidden]
    romeo.send("<message to='juliet@localhost/shy' type='chat'><body>1</body></message>")
    romeo.send("<message to='juliet@localhost/hidden' type='normal'><body>2</body></message>")
    assert (await shy.message()).find_text("body") == "1"  # §8.5.3.1
    assert (await hidden.message()).find_text("body") == "2"
    await romeo.sync()
    await top.no_message()


async def test_chat_to_unknown_resource_is_handled_as_bare(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send("<message to='juliet@localhost/gone' type='chat'><body>still there?</body></message>")
    got = await juliet.message()  # §8.5.3.2.1
    assert got.find_text("body") == "still there?"
    assert got.attrs["to"] == "juliet@localhost/gone"


@pytest.mark.parametrize("type_", ["normal", "groupchat"])
async def test_normal_or_groupchat_to_unknown_resource_is_refused(
    server: RunningServer, peers: list[Peer], type_: str
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send(f"<message to='juliet@localhost/gone' type='{type_}' id='u1'><body>?</body></message>")
    reply = await romeo.message()
    assert reply.attrs["id"] == "u1" and error_condition(reply) == "service-unavailable"  # §8.5.3.2.1
    await juliet.no_message()


async def test_headline_to_unknown_resource_is_dropped(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send("<message to='juliet@localhost/gone' type='headline'><body>flash</body></message>")
    assert await romeo.barrier("juliet@localhost") == []
    await juliet.no_message()


async def test_without_offline_storage_messages_for_offline_accounts_are_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path / "no-offline", "[offline]\nenabled = false\n") as running:
        install_presence_shim(running.server)
        await add_users(running, "romeo", "juliet")
        romeo = await login(running, "romeo@localhost/r")
        negative = await login(running, "juliet@localhost/neg", priority=-1)
        romeo.send("<message to='juliet@localhost' type='chat' id='o1'><body>hi</body></message>")
        reply = await romeo.message()
        assert reply.attrs["id"] == "o1" and error_condition(reply) == "service-unavailable"  # §8.5.2.2.1
        await negative.no_message()
        await close_all([romeo, negative])


async def test_delivered_message_gets_a_stanza_id_by_the_recipient(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send(
        "<message to='juliet@localhost' type='chat'><body>one</body>"
        f"<origin-id xmlns='{SID}' id='client-1'/></message>"
    )
    first = await juliet.message()
    romeo.send("<message to='juliet@localhost/j' type='chat'><body>two</body></message>")
    second = await juliet.message()
    assert (first.find_text("body"), second.find_text("body")) == ("one", "two")
    ids = []
    for got in (first, second):
        (sid,) = stanza_ids(got)
        assert sid["by"] == "juliet@localhost"
        assert id_timestamp(sid["id"]) is not None
        ids.append(sid["id"])
    assert ids[0] < ids[1]  # time-ordered: an archive can page by them
    origin = first.find("origin-id", SID)
    assert origin is not None and origin.attrs["id"] == "client-1"  # passes through untouched


async def test_forged_stanza_id_for_the_recipient_is_replaced(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send(
        "<message to='juliet@localhost' type='chat'><body>trust me</body>"
        f"<stanza-id xmlns='{SID}' id='forged' by='juliet@localhost'/>"
        f"<stanza-id xmlns='{SID}' id='forged2' by='JULIET@localhost'/>"
        f"<stanza-id xmlns='{SID}' id='room-1' by='room@conference.example'/></message>"
    )
    got = await juliet.message()
    by_us = [s for s in stanza_ids(got) if s["by"] == "juliet@localhost"]
    assert len(by_us) == 1 and by_us[0]["id"] not in ("forged", "forged2")  # XEP-0359 §5
    assert {"id": "room-1", "by": "room@conference.example"} in stanza_ids(got)  # not ours to strip
    assert all(s["id"] != "forged2" for s in stanza_ids(got))


async def test_forged_stanza_id_is_stripped_even_without_a_new_one(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    romeo.send(
        "<message to='juliet@localhost/j' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
        f"<stanza-id xmlns='{SID}' id='forged' by='juliet@localhost'/></message>"
    )
    got = await juliet.message()
    assert got.find("composing", "http://jabber.org/protocol/chatstates") is not None
    assert stanza_ids(got) == []  # a chat state alone is not archivable: no id, and no forged one


async def test_account_advertises_stanza_ids(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    disco = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
    reply = await romeo.iq(disco, "get", to="juliet@localhost")
    query = reply.find("query", "http://jabber.org/protocol/disco#info")
    assert query is not None
    assert SID in {f.attrs["var"] for f in query.elements("feature")}
