"""XEP-0160 offline storage: kept while the account has no reachable resource, delivered on presence."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.stanza import error_condition
from roost.util.datetime import parse_datetime
from roost.xml.ns import DELAY, STANZA_ID
from tests.support.im import (
    Peer,
    add_users,
    close_all,
    initial_presence_done,
    install_presence_shim,
    login,
)
from tests.support.server import RunningServer, running_server


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    install_presence_shim(server.server)
    await add_users(server, "romeo", "juliet")


async def stored_count(running: RunningServer, user: str = "juliet") -> int:
    return await running.server.storage.archive("offline").count("localhost", user)


async def test_messages_wait_offline_and_arrive_in_order_on_initial_presence(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send("<message to='juliet@localhost' type='chat' id='m1'><body>first</body></message>")
    romeo.send("<message to='juliet@localhost' id='m2'><subject>s</subject><body>second</body></message>")
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='m3'><body>third</body></message>")
    assert await romeo.barrier("juliet@localhost") == []  # stored: no error came back
    assert await stored_count(server) == 3

    juliet = await login(server, "juliet@localhost/j")
    peers.append(juliet)
    got = [await juliet.message() for _ in range(3)]
    assert [m.find_text("body") for m in got] == ["first", "second", "third"]
    assert [m.attrs["id"] for m in got] == ["m1", "m2", "m3"]
    assert got[0].attrs["from"] == "romeo@localhost/r"
    assert got[0].attrs["to"] == "juliet@localhost"
    assert got[2].attrs["to"] == "juliet@localhost/balcony"  # §8.5.3.2.1: chat to a gone resource
    for message in got:
        delay = message.find("delay", DELAY)  # XEP-0160 §3 / XEP-0203
        assert delay is not None and delay.attrs["from"] == "localhost"
        parse_datetime(delay.attrs["stamp"])
        (sid,) = message.elements("stanza-id", STANZA_ID)
        assert sid.attrs["by"] == "juliet@localhost"
    assert await stored_count(server) == 0


async def test_nothing_is_delivered_twice(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send("<message to='juliet@localhost' type='chat'><body>once</body></message>")
    assert await romeo.barrier("juliet@localhost") == []
    first = await login(server, "juliet@localhost/one")
    peers.append(first)
    assert (await first.message()).find_text("body") == "once"
    second = await login(server, "juliet@localhost/two")
    peers.append(second)
    await initial_presence_done(server, second.jid)
    await second.no_message()


async def test_negative_priority_keeps_messages_offline_until_it_turns_non_negative(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    juliet = await login(server, "juliet@localhost/j", priority=-1)
    peers += [romeo, juliet]
    romeo.send("<message to='juliet@localhost' type='chat'><body>later</body></message>")
    assert await romeo.barrier("juliet@localhost") == []
    await juliet.no_message()  # §8.5.2.1: never via the bare JID to a negative priority
    assert await stored_count(server) == 1
    juliet.presence(priority=2)
    assert (await juliet.message()).find_text("body") == "later"


@pytest.mark.parametrize(
    ("type_", "answer"), [("headline", None), ("error", None), ("groupchat", "service-unavailable")]
)
async def test_headline_groupchat_and_error_are_never_stored(
    server: RunningServer, peers: list[Peer], type_: str, answer: str | None
) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send(f"<message to='juliet@localhost' type='{type_}' id='t1'><body>now or never</body></message>")
    before = await romeo.barrier("juliet@localhost")
    if answer is None:
        assert before == []
    else:
        (reply,) = before
        assert reply.attrs["id"] == "t1" and error_condition(reply) == answer
    assert await stored_count(server) == 0


async def test_chat_states_alone_are_dropped_quietly(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send(
        "<message to='juliet@localhost' type='chat'>"
        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    assert await romeo.barrier("juliet@localhost") == []  # no error either (XEP-0085 §5.5)
    assert await stored_count(server) == 0


async def test_unstorable_payload_is_refused_not_lost(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send("<message to='juliet@localhost' id='u1'><x xmlns='urn:example:unknown'/></message>")
    reply = await romeo.message()
    assert reply.attrs["id"] == "u1" and error_condition(reply) == "service-unavailable"
    # ... unless the sender says it is worth storing (XEP-0334 <store/>).
    romeo.send(
        "<message to='juliet@localhost' id='u2'><x xmlns='urn:example:unknown'/>"
        "<store xmlns='urn:xmpp:hints'/></message>"
    )
    assert await romeo.barrier("juliet@localhost") == []
    assert await stored_count(server) == 1


async def test_no_store_hint_is_honoured_with_an_error(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send(
        "<message to='juliet@localhost' type='chat' id='n1'><body>ephemeral</body>"
        "<no-store xmlns='urn:xmpp:hints'/></message>"
    )
    reply = await romeo.message()
    assert reply.attrs["id"] == "n1" and error_condition(reply) == "service-unavailable"
    assert await stored_count(server) == 0


async def test_message_to_nonexistent_account_is_not_stored(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send("<message to='ghost@localhost/x' type='chat' id='g1'><body>boo</body></message>")
    reply = await romeo.message()
    assert reply.attrs["id"] == "g1" and error_condition(reply) == "service-unavailable"
    assert await stored_count(server, "ghost") == 0


async def test_full_offline_store_refuses_with_service_unavailable(tmp_path: Path) -> None:
    async with running_server(tmp_path / "small", "[offline]\nmax_messages = 2\n") as running:
        install_presence_shim(running.server)
        await add_users(running, "romeo", "juliet")
        romeo = await login(running, "romeo@localhost/r")
        for n in range(3):
            romeo.send(f"<message to='juliet@localhost' type='chat' id='f{n}'><body>{n}</body></message>")
        (reply,) = await romeo.barrier("juliet@localhost")
        assert reply.attrs["id"] == "f2" and error_condition(reply) == "service-unavailable"  # XEP-0160 §3
        assert await stored_count(running) == 2
        # Once delivered, there is room again.
        juliet = await login(running, "juliet@localhost/j")
        assert [(await juliet.message()).find_text("body") for _ in range(2)] == ["0", "1"]
        await juliet.close()
        romeo.send("<message to='juliet@localhost' type='chat' id='f3'><body>3</body></message>")
        assert await romeo.barrier("juliet@localhost") == []
        assert await stored_count(running) == 1
        await close_all([romeo])


async def test_stored_messages_survive_a_restart(tmp_path: Path) -> None:
    base = tmp_path / "durable"
    # Leaving the block stops the server, with no explicit flush: a clean shutdown must not lose
    # accepted messages.
    async with running_server(base) as first:
        install_presence_shim(first.server)
        await add_users(first, "romeo", "juliet")
        romeo = await login(first, "romeo@localhost/r")
        romeo.send("<message to='juliet@localhost' type='chat' id='d1'><body>remember me</body></message>")
        romeo.send("<message to='juliet@localhost' type='normal' id='d2'><body>and me</body></message>")
        assert await romeo.barrier("juliet@localhost") == []
        await close_all([romeo])

    async with running_server(base) as second:
        install_presence_shim(second.server)
        juliet = await login(second, "juliet@localhost/j")
        got = [await juliet.message() for _ in range(2)]
        got_pairs = [(m.attrs["id"], m.find_text("body")) for m in got]
        assert got_pairs == [("d1", "remember me"), ("d2", "and me")]
        await close_all([juliet])


async def test_server_advertises_offline_storage(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    reply = await romeo.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", "get", to="localhost")
    query = reply.find("query", "http://jabber.org/protocol/disco#info")
    assert query is not None
    assert "msgoffline" in {f.attrs["var"] for f in query.elements("feature")}  # XEP-0160 §5


async def test_a_message_still_on_its_way_to_storage_when_its_recipient_comes_online_is_delivered(
    server: RunningServer, peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by bench/run soak: the recipient's initial presence collected the stored messages while
    this one was still being stored, and it waited for the next login (issue 15)."""
    offline = server.server.hosts["localhost"].modules.loaded["offline"]
    real_count = offline.archive.count
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_count(domain: str, user: str, q: object = None) -> int:
        entered.set()
        await release.wait()  # storage is slow right now
        return await real_count(domain, user)

    monkeypatch.setattr(offline.archive, "count", slow_count)
    romeo = await login(server, "romeo@localhost/r")
    peers.append(romeo)
    romeo.send("<message to='juliet@localhost' type='chat' id='late'><body>racing</body></message>")
    await asyncio.wait_for(entered.wait(), 5)  # routed to offline storage, not stored yet
    juliet = await login(server, "juliet@localhost/j")
    peers.append(juliet)
    for _ in range(100):  # juliet's initial presence has collected the (still empty) store
        if offline._counts.get("juliet@localhost") == 0:
            break
        await asyncio.sleep(0.02)
    release.set()
    got = await juliet.message()
    assert got.attrs["id"] == "late"
    assert got.find("delay", DELAY) is not None
    assert await stored_count(server) == 0
