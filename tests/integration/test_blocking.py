"""XEP-0191 Blocking Command: the list, its pushes, and enforcement both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.stanza import error_condition
from roost.xml.element import Element
from tests.support.im import Peer, add_users, close_all, drain, install_presence_shim, login
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server

BLOCKING = "urn:xmpp:blocking"
BLOCKLIST = f"<blocklist xmlns='{BLOCKING}'/>"
ERRORS = "urn:xmpp:blocking:errors"


def block(*jids: str) -> str:
    return f"<block xmlns='{BLOCKING}'>" + "".join(f"<item jid='{j}'/>" for j in jids) + "</block>"


def unblock(*jids: str) -> str:
    return f"<unblock xmlns='{BLOCKING}'>" + "".join(f"<item jid='{j}'/>" for j in jids) + "</unblock>"


def items(element: Element, name: str) -> list[str]:
    payload = element.find(name, BLOCKING)
    assert payload is not None, f"no <{name}/> in {element!r}"
    return [item.attrs["jid"] for item in payload.elements("item", BLOCKING)]


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    install_presence_shim(server.server)
    await add_users(server, "romeo", "juliet", "nurse")


async def test_blocklist_starts_empty_and_lists_what_was_blocked(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/a")
    peers.append(romeo)
    assert items(await romeo.iq(BLOCKLIST, "get"), "blocklist") == []  # §3.2
    assert (await romeo.iq(block("Juliet@LOCALHOST", "tybalt@example.org/sword"))).attrs["type"] == "result"
    listed = items(await romeo.iq(BLOCKLIST, "get"), "blocklist")
    assert sorted(listed) == ["juliet@localhost", "tybalt@example.org/sword"]  # stored normalised


async def test_block_and_unblock_are_pushed_to_resources_that_asked_for_the_list(
    server: RunningServer, peers: list[Peer]
) -> None:
    a = await login(server, "romeo@localhost/a")
    b = await login(server, "romeo@localhost/b")
    quiet = await login(server, "romeo@localhost/quiet")
    peers += [a, b, quiet]
    await a.iq(BLOCKLIST, "get")
    await b.iq(BLOCKLIST, "get")
    assert (await a.iq(block("juliet@localhost"))).attrs["type"] == "result"
    for peer in (a, b):  # §3.3: the requesting resource too
        push = await peer.push()
        assert push.attrs["type"] == "set" and items(push, "block") == ["juliet@localhost"]
    assert (await b.iq(unblock("juliet@localhost"))).attrs["type"] == "result"
    for peer in (a, b):
        assert items(await peer.push(), "unblock") == ["juliet@localhost"]  # §3.4
    assert (await a.iq(block("nurse@localhost", "juliet@localhost"))).attrs["type"] == "result"
    for peer in (a, b):
        await peer.push()
    assert (await a.iq(unblock())).attrs["type"] == "result"
    for peer in (a, b):
        assert items(await peer.push(), "unblock") == []  # §3.5: everything
    assert items(await a.iq(BLOCKLIST, "get"), "blocklist") == []
    await quiet.sync()
    assert quiet.pushes.empty()  # never asked for the list


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (block(), "bad-request"),
        (block("not a@@jid"), "jid-malformed"),
        (f"<block xmlns='{BLOCKING}'><item/></block>", "bad-request"),
    ],
)
async def test_bad_block_requests_are_refused(
    server: RunningServer, peers: list[Peer], payload: str, error: str
) -> None:
    romeo = await login(server, "romeo@localhost/a")
    peers.append(romeo)
    reply = await romeo.iq(payload)
    assert reply.attrs["type"] == "error" and error_condition(reply) == error
    assert items(await romeo.iq(BLOCKLIST, "get"), "blocklist") == []


async def test_stanzas_from_a_blocked_jid_do_not_reach_the_user(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/a")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    await romeo.iq(block("juliet@localhost"))
    # §3.3: messages → service-unavailable, to the bare or a full JID, as if Romeo were offline.
    juliet.send("<message to='romeo@localhost' type='chat' id='m1'><body>bare</body></message>")
    juliet.send("<message to='romeo@localhost/a' type='chat' id='m2'><body>full</body></message>")
    for expected in ("m1", "m2"):
        reply = await juliet.message()
        assert reply.attrs["id"] == expected and error_condition(reply) == "service-unavailable"
    # IQ get/set → service-unavailable, whether the server or the client would answer it.
    version = await juliet.iq("<query xmlns='jabber:iq:version'/>", "get", to="romeo@localhost/a")
    assert error_condition(version) == "service-unavailable"
    disco_info = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
    disco = await juliet.iq(disco_info, "get", to="romeo@localhost")
    assert error_condition(disco) == "service-unavailable"
    # Presence: dropped without a word.
    juliet.send("<presence to='romeo@localhost/a'/>")
    juliet.send("<presence to='romeo@localhost' type='subscribe'/>")
    assert await juliet.barrier("romeo@localhost") == []
    await romeo.sync()
    assert romeo.messages.empty()
    assert [p for p in drain(romeo.presences) if p.attrs.get("from", "").startswith("juliet@")] == []


async def test_sending_to_a_blocked_jid_is_refused_with_blocked(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/a")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    await romeo.iq(block("juliet@localhost"))
    romeo.send("<message to='juliet@localhost/j' type='chat' id='o1'><body>can you hear me</body></message>")
    reply = await romeo.message()
    assert reply.attrs["type"] == "error" and reply.attrs["id"] == "o1"
    assert reply.attrs["from"] == "juliet@localhost/j"
    assert error_condition(reply) == "not-acceptable"  # §3.3, last paragraph
    error = reply.find("error")
    assert error is not None and error.find("blocked", ERRORS) is not None
    iq = await romeo.iq("<query xmlns='jabber:iq:version'/>", "get", to="juliet@localhost/j")
    assert error_condition(iq) == "not-acceptable"
    await juliet.no_message()


async def test_item_matching_follows_section_6(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/a")
    phone = await login(server, "juliet@localhost/phone")
    laptop = await login(server, "juliet@localhost/laptop")
    nurse = await login(server, "nurse@localhost/n")
    peers += [romeo, phone, laptop, nurse]
    await romeo.iq(block("juliet@localhost/phone"))  # only that resource
    phone.send("<message to='romeo@localhost/a' id='p'><body>phone</body></message>")
    assert error_condition(await phone.message()) == "service-unavailable"
    laptop.send("<message to='romeo@localhost/a'><body>laptop</body></message>")
    assert (await romeo.message()).find_text("body") == "laptop"
    await romeo.iq(block("localhost"))  # the domain: everyone there, except Romeo's own resources
    nurse.send("<message to='romeo@localhost/a' id='n'><body>nurse</body></message>")
    assert error_condition(await nurse.message()) == "service-unavailable"
    other = await login(server, "romeo@localhost/b")
    peers.append(other)
    other.send("<message to='romeo@localhost/a'><body>myself</body></message>")
    assert (await romeo.message()).find_text("body") == "myself"


async def test_unblock_lets_stanzas_through_again(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/a")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    await romeo.iq(block("juliet@localhost", "nurse@localhost"))
    juliet.send("<message to='romeo@localhost' id='x'><body>blocked</body></message>")
    assert error_condition(await juliet.message()) == "service-unavailable"
    await romeo.iq(unblock())
    juliet.send("<message to='romeo@localhost'><body>welcome back</body></message>")
    assert (await romeo.message()).find_text("body") == "welcome back"
    romeo.send("<message to='juliet@localhost/j'><body>hello again</body></message>")
    assert (await juliet.message()).find_text("body") == "hello again"


async def test_blocked_sender_is_not_stored_offline(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/a")
    await romeo.iq(block("juliet@localhost"))
    await romeo.close()
    juliet = await login(server, "juliet@localhost/j")
    peers.append(juliet)
    juliet.send("<message to='romeo@localhost' type='chat' id='off1'><body>while you sleep</body></message>")
    juliet.send("<message to='romeo@localhost/gone' type='chat' id='off2'><body>and now</body></message>")
    replies = await juliet.barrier("romeo@localhost")
    assert [(r.attrs["id"], error_condition(r)) for r in replies] == [
        ("off1", "service-unavailable"),
        ("off2", "service-unavailable"),
    ]
    assert await server.server.storage.archive("offline").count("localhost", "romeo") == 0


async def test_blocklist_persists_across_sessions(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/a")
    await romeo.iq(block("juliet@localhost"))
    await romeo.close()
    romeo = await login(server, "romeo@localhost/b")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    assert items(await romeo.iq(BLOCKLIST, "get"), "blocklist") == ["juliet@localhost"]
    juliet.send("<message to='romeo@localhost/b' id='again'><body>?</body></message>")
    assert error_condition(await juliet.message()) == "service-unavailable"


async def test_blocklist_survives_a_restart(tmp_path: Path) -> None:
    async with running_server(tmp_path / "restart") as running:
        install_presence_shim(running.server)
        await add_users(running, "romeo", "juliet")
        romeo = await login(running, "romeo@localhost/a")
        assert (await romeo.iq(block("juliet@localhost"))).attrs["type"] == "result"
        await close_all([romeo])
    async with running_server(tmp_path / "restart") as running:
        install_presence_shim(running.server)
        romeo = await login(running, "romeo@localhost/b")
        juliet = await login(running, "juliet@localhost/j")
        assert items(await romeo.iq(BLOCKLIST, "get"), "blocklist") == ["juliet@localhost"]
        juliet.send("<message to='romeo@localhost/b' id='after'><body>?</body></message>")
        assert error_condition(await juliet.message()) == "service-unavailable"
        await close_all([romeo, juliet])


async def test_stanzas_sent_before_the_list_is_loaded_wait_for_it(
    server: RunningServer, peers: list[Peer]
) -> None:
    romeo = await login(server, "romeo@localhost/a")
    await romeo.iq(block("juliet@localhost"))
    await romeo.close()
    # A client that pipelines its first stanza with resource binding: the list is not loaded yet when
    # the message arrives, and it must still be refused.
    raw = await RawClient.connect(server.c2s_port)
    try:
        await raw.open()
        await raw.starttls()
        assert (await raw.auth_scram("romeo", "s3cret")).name == "success"
        await raw.open()
        raw.send_raw(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>fast</resource></bind></iq>"
            "<message to='juliet@localhost' type='chat' id='early'><body>too soon?</body></message>"
        )
        bound = await raw.element()
        assert bound.attrs["id"] == "bind1" and bound.attrs["type"] == "result"
        reply = await raw.element()
        assert reply.attrs["id"] == "early" and error_condition(reply) == "not-acceptable"
    finally:
        raw.close()


async def test_blocking_hides_presence_and_unblocking_restores_it(
    server: RunningServer, peers: list[Peer]
) -> None:
    if "presence" not in server.server.hosts["localhost"].modules.loaded:
        pytest.skip("needs the presence and roster modules")
    romeo = await login(server, "romeo@localhost/a")
    juliet = await login(server, "juliet@localhost/j")
    peers += [romeo, juliet]
    # Juliet subscribes to Romeo's presence (RFC 6121 §3.1).
    juliet.send("<presence to='romeo@localhost' type='subscribe'/>")
    await until_presence(romeo, lambda p: p.attrs.get("type") == "subscribe")
    romeo.send("<presence to='juliet@localhost' type='subscribed'/>")
    await until_presence(juliet, lambda p: p.attrs.get("from") == "romeo@localhost/a")

    await romeo.iq(block("juliet@localhost"))
    # §3.3: unavailable presence from each available resource to the blocked contact.
    await until_presence(
        juliet, lambda p: p.attrs.get("from") == "romeo@localhost/a" and p.attrs.get("type") == "unavailable"
    )
    romeo.send("<presence><show>away</show></presence>")  # not for Juliet's eyes
    await romeo.sync()
    await juliet.sync()
    assert [p for p in drain(juliet.presences) if p.attrs.get("from") == "romeo@localhost/a"] == []
    await romeo.iq(unblock("juliet@localhost"))
    # §3.4: the current presence again.
    back = await until_presence(juliet, lambda p: p.attrs.get("from") == "romeo@localhost/a")
    assert "type" not in back.attrs and back.find_text("show") == "away"


async def until_presence(peer: Peer, predicate: Callable[[Element], bool], timeout: float = 5) -> Element:
    while True:
        presence = await asyncio.wait_for(peer.presences.get(), timeout)
        if predicate(presence):
            return presence


async def test_blocklist_size_is_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path / "small", "[blocking]\nmax_items = 2\n") as running:
        install_presence_shim(running.server)
        await add_users(running, "romeo")
        romeo = await login(running, "romeo@localhost/a")
        assert (await romeo.iq(block("a@example.org", "b@example.org"))).attrs["type"] == "result"
        assert (await romeo.iq(block("b@example.org"))).attrs["type"] == "result"  # already there
        reply = await romeo.iq(block("c@example.org"))
        assert reply.attrs["type"] == "error" and error_condition(reply) == "not-allowed"
        await close_all([romeo])


async def test_server_advertises_blocking(server: RunningServer, peers: list[Peer]) -> None:
    romeo = await login(server, "romeo@localhost/a")
    peers.append(romeo)
    reply = await romeo.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", "get", to="localhost")
    query = reply.find("query", "http://jabber.org/protocol/disco#info")
    assert query is not None
    assert BLOCKING in {f.attrs["var"] for f in query.elements("feature")}
