"""XEP-0280 Message Carbons with several resources of one account."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roost.xml.element import Element
from roost.xml.ns import FORWARD, STANZA_ID
from tests.support.im import Peer, add_users, eventually, install_presence_shim, login
from tests.support.server import RunningServer

CARBONS = "urn:xmpp:carbons:2"
ENABLE = f"<enable xmlns='{CARBONS}'/>"
DISABLE = f"<disable xmlns='{CARBONS}'/>"


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    install_presence_shim(server.server)
    await add_users(server, "romeo", "juliet")


@pytest.fixture
async def romeo(server: RunningServer, peers: list[Peer]) -> tuple[Peer, Peer, Peer]:
    """romeo/a (priority 5, Carbons off), romeo/b (priority 1, on), romeo/c (priority 1, off)."""
    a = await login(server, "romeo@localhost/a", priority=5)
    b = await login(server, "romeo@localhost/b", priority=1)
    c = await login(server, "romeo@localhost/c", priority=1)
    peers += [a, b, c]
    reply = await b.iq(ENABLE)
    assert reply.attrs["type"] == "result"
    return a, b, c


@pytest.fixture
async def juliet(server: RunningServer, peers: list[Peer]) -> Peer:
    peer = await login(server, "juliet@localhost/j")
    peers.append(peer)
    return peer


def carried(wrapper: Element, direction: str) -> Element:
    """The original message inside a carbon (XEP-0297 <forwarded/> in <sent/> or <received/>)."""
    outer = wrapper.find(direction, CARBONS)
    assert outer is not None, f"not a {direction} carbon: {wrapper!r}"
    forwarded = outer.find("forwarded", FORWARD)
    assert forwarded is not None
    message = forwarded.find("message", "jabber:client")
    assert message is not None
    return message


def body_is(text: str) -> Callable[[Element], bool]:
    """Matches a message with this body, or a carbon of one."""

    def match(message: Element) -> bool:
        if message.find_text("body") == text:
            return True
        for direction in ("sent", "received"):
            if message.find(direction, CARBONS) is not None:
                return carried(message, direction).find_text("body") == text
        return False

    return match


async def test_enable_and_disable_answer_results_even_when_repeated(romeo: tuple[Peer, Peer, Peer]) -> None:
    _, b, _ = romeo
    for payload in (ENABLE, ENABLE, DISABLE, DISABLE):  # §10.1: repeats are not errors
        assert (await b.iq(payload)).attrs["type"] == "result"
    assert (await b.iq(ENABLE, to="romeo@localhost")).attrs["type"] == "result"


async def test_inbound_to_bare_jid_is_copied_to_other_enabled_resources(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, c = romeo
    juliet.send("<message to='romeo@localhost' type='chat' id='in1'><body>wherefore</body></message>")
    original = await a.message()
    assert original.find_text("body") == "wherefore"
    carbon = await b.message()
    # §7: from the bare JID, to the receiving resource, same type, the original inside.
    assert carbon.attrs == {"from": "romeo@localhost", "to": "romeo@localhost/b", "type": "chat"}
    inner = carried(carbon, "received")
    assert inner.attrs["from"] == "juliet@localhost/j" and inner.attrs["to"] == "romeo@localhost"
    assert inner.find_text("body") == "wherefore"
    # The copy carries the same stanza-id as the original, so clients can match it with the archive.
    assert [s.attrs for s in inner.elements("stanza-id", STANZA_ID)] == [
        s.attrs for s in original.elements("stanza-id", STANZA_ID)
    ]
    assert await juliet.barrier("romeo@localhost") == []
    await c.no_message()  # Carbons off: nothing


async def test_inbound_to_full_jid_is_copied_to_the_others_only(
    server: RunningServer, romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, c = romeo
    assert (await a.iq(ENABLE)).attrs["type"] == "result"
    juliet.send("<message to='romeo@localhost/b' type='chat'><body>to b</body></message>")
    assert (await b.message()).find_text("body") == "to b"  # the original, no carbon for b
    carbon = await a.message()
    assert carbon.attrs["to"] == "romeo@localhost/a"
    assert carried(carbon, "received").attrs["to"] == "romeo@localhost/b"
    assert await juliet.barrier("romeo@localhost") == []
    await b.no_message()
    await c.no_message()


async def test_outbound_is_copied_as_sent_whether_or_not_the_sender_has_carbons(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, c = romeo
    a.send("<message to='juliet@localhost/j' type='chat' id='out1'><body>soft</body></message>")
    assert (await juliet.message()).find_text("body") == "soft"
    carbon = await b.message()
    assert carbon.attrs == {"from": "romeo@localhost", "to": "romeo@localhost/b", "type": "chat"}
    inner = carried(carbon, "sent")
    assert inner.attrs["from"] == "romeo@localhost/a" and inner.attrs["to"] == "juliet@localhost/j"
    await a.no_message()
    await c.no_message()


async def test_sender_with_carbons_gets_no_copy_of_its_own_message(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    _, b, _ = romeo
    b.send("<message to='juliet@localhost/j' type='chat'><body>from b</body></message>")
    assert (await juliet.message()).find_text("body") == "from b"
    await b.no_message()  # §8: not to the sending resource


async def test_private_and_no_copy_messages_are_not_copied(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, _ = romeo
    hints = f"<private xmlns='{CARBONS}'/><no-copy xmlns='urn:xmpp:hints'/>"
    a.send(f"<message to='juliet@localhost/j' type='chat'><body>secret out</body>{hints}</message>")
    a.send(
        "<message to='juliet@localhost/j' type='chat'><body>no copy out</body>"
        "<no-copy xmlns='urn:xmpp:hints'/></message>"
    )
    juliet.send(f"<message to='romeo@localhost/a' type='chat'><body>secret in</body>{hints}</message>")
    juliet.send("<message to='romeo@localhost/a' type='chat'><body>marker</body></message>")
    assert await b.until(body_is("marker")) == []  # §9; XEP-0334 §4.3


@pytest.mark.parametrize(
    ("payload", "copied"),
    [
        ("<message type='normal'><body>normal with body</body></message>", True),
        ("<message><body>no type</body></message>", True),
        ("<message type='normal'><received xmlns='urn:xmpp:receipts' id='r1'/></message>", True),
        ("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>", True),
        ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='d1'/></message>", True),
        ("<message><x xmlns='jabber:x:conference' jid='room@conference.localhost'/></message>", True),
        (
            "<message><x xmlns='http://jabber.org/protocol/muc#user'>"
            "<invite from='x@localhost'/></x></message>",
            True,
        ),
        ("<message type='normal'><x xmlns='urn:example:other'/></message>", False),
        ("<message type='headline'><body>news</body></message>", False),
        ("<message type='groupchat'><body>room talk</body></message>", False),
        # A private message from a MUC occupant: the room already copies it to every joined client.
        (
            "<message type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
            False,
        ),
    ],
)
async def test_inbound_eligibility_follows_section_6_1(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer, payload: str, copied: bool
) -> None:
    a, b, _ = romeo
    juliet.send(payload.replace("<message", "<message to='romeo@localhost/a' id='probe'", 1))
    await a.message()
    juliet.send("<message to='romeo@localhost/a' type='chat'><body>marker</body></message>")
    before = await b.until(body_is("marker"))
    if copied:
        (carbon,) = before
        assert carried(carbon, "received").attrs["id"] == "probe"
    else:
        assert before == []


async def test_outbound_private_message_to_a_room_occupant_is_copied(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, _ = romeo
    a.send(
        "<message to='juliet@localhost/j' type='chat'><body>pm</body>"
        "<x xmlns='http://jabber.org/protocol/muc#user'/></message>"
    )
    assert carried(await b.message(), "sent").find_text("body") == "pm"


async def test_error_answering_an_eligible_message_is_copied(
    romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, _ = romeo
    a.send("<message to='juliet@localhost/j' type='chat' id='ask1'><body>?</body></message>")
    assert carried(await b.message(), "sent").attrs["id"] == "ask1"
    error = "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
    juliet.send(f"<message to='romeo@localhost/a' type='error' id='other'>{error}</message>")
    juliet.send(f"<message to='romeo@localhost/a' type='error' id='ask1'>{error}</message>")
    carbon = await b.message()
    inner = carried(carbon, "received")
    assert inner.attrs["type"] == "error" and inner.attrs["id"] == "ask1"  # 'other' was not copied


async def test_messages_between_own_resources_are_copied_once(romeo: tuple[Peer, Peer, Peer]) -> None:
    a, b, c = romeo
    assert (await a.iq(ENABLE)).attrs["type"] == "result"
    assert (await c.iq(ENABLE)).attrs["type"] == "result"
    a.send("<message to='romeo@localhost/c' type='chat'><body>note to c</body></message>")
    assert (await c.message()).find_text("body") == "note to c"
    carbon = await b.message()
    assert carried(carbon, "received").attrs["from"] == "romeo@localhost/a"
    await a.no_message()  # the sender gets no copy
    await b.no_message()  # and b exactly one
    # A resource writing to itself: no copies at all.
    b.send("<message to='romeo@localhost/b' type='chat'><body>self</body></message>")
    assert (await b.message()).find_text("body") == "self"
    await a.no_message()
    await c.no_message()


async def test_disabled_resource_gets_no_more_copies(romeo: tuple[Peer, Peer, Peer], juliet: Peer) -> None:
    a, b, _ = romeo
    assert (await b.iq(DISABLE)).attrs["type"] == "result"
    juliet.send("<message to='romeo@localhost' type='chat'><body>after</body></message>")
    assert (await a.message()).find_text("body") == "after"
    assert await juliet.barrier("romeo@localhost") == []
    await b.no_message()


async def test_closed_resource_is_forgotten(
    server: RunningServer, romeo: tuple[Peer, Peer, Peer], juliet: Peer
) -> None:
    a, b, c = romeo
    carbons = server.server.hosts["localhost"].modules.loaded["carbons"]
    assert "romeo@localhost" in carbons._enabled  # type: ignore[attr-defined]
    await b.close()

    async def forgotten() -> bool:
        return "romeo@localhost" not in carbons._enabled  # type: ignore[attr-defined]

    await eventually(forgotten)
    juliet.send("<message to='romeo@localhost' type='chat'><body>still fine</body></message>")
    assert (await a.message()).find_text("body") == "still fine"
    assert await juliet.barrier("romeo@localhost") == []
    await c.no_message()


async def test_server_advertises_carbons(romeo: tuple[Peer, Peer, Peer]) -> None:
    a, _, _ = romeo
    reply = await a.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>", "get", to="localhost")
    query = reply.find("query", "http://jabber.org/protocol/disco#info")
    assert query is not None
    features = {f.attrs["var"] for f in query.elements("feature")}
    assert {CARBONS, "urn:xmpp:carbons:rules:0"} <= features
