"""Stream management (XEP-0198) over real sockets: acks both ways, a TCP drop mid-traffic and
resumption with every stanza delivered exactly once, expiry into offline storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from roost.core.session import SessionState
from roost.jid import JID
from roost.modules.roster import RosterItem, roster_rows
from roost.storage.api import ArchiveQuery
from roost.xml.element import Element
from roost.xml.ns import DELAY, SM, STANZA_ERRORS, STREAM
from roost.xml.parser import StreamEnd
from tests.support.clients import connect
from tests.support.im import eventually
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server

C = "jabber:client"
PASSWORD = "secret"


@pytest.fixture
async def sm_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RunningServer]:
    """A server whose [sm] section comes from the test's ``sm_config`` marker (default: no <r/>)."""
    marker = request.node.get_closest_marker("sm_config")
    extra = marker.args[0] if marker else "ack_every = 0\nack_after_seconds = 0"
    async with running_server(tmp_path, f"[sm]\n{extra}\n") as running:
        for user in ("juliet", "romeo", "nurse"):
            await running.add_user(f"{user}@localhost", PASSWORD)
        # juliet and romeo are mutual contacts (so presence flows between them).
        store = running.server.storage.map("roster")
        for user, contact in (("juliet", "romeo"), ("romeo", "juliet")):
            item = RosterItem(JID.parse(f"{contact}@localhost"), subscription="both")
            await store.set_many("localhost", user, roster_rows([item]))
        yield running


class SmClient:
    """A raw client that counts what it handles since enabling stream management (§4)."""

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw
        self.handled = 0
        self.sent = 0
        self.sm_id: str | None = None

    @classmethod
    async def login(cls, running: RunningServer, user: str, resource: str) -> SmClient:
        return cls(await RawClient.login(running.c2s_port, user, PASSWORD, resource))

    async def enable(self, resume: bool = True) -> Element:
        self.raw.send(Element("enable", SM, {"resume": "true"} if resume else None))
        enabled = await self.raw.element()
        assert enabled.name == "enabled" and enabled.ns == SM, enabled
        self.sm_id = enabled.attrs.get("id")
        return enabled

    def send(self, stanza: Element) -> None:
        self.raw.send(stanza)
        self.sent += 1

    async def stanza(self, timeout: float = 5) -> Element:
        """The next stanza (nonzas are returned too, but not counted)."""
        el = await self.raw.element(timeout)
        if el.ns == C:
            self.handled += 1
        return el

    async def stanzas_until(self, done: int, timeout: float = 5) -> list[Element]:
        """Read stanzas until ``done`` messages have arrived (presence etc. counted, kept)."""
        out: list[Element] = []
        while sum(1 for e in out if e.name == "message") < done:
            out.append(await self.stanza(timeout))
        return out

    def ack(self) -> None:
        self.raw.send(Element("a", SM, {"h": str(self.handled)}))

    def drop(self) -> None:
        """The network goes away: no closing tag, the socket just dies."""
        transport = self.raw.writer.transport
        transport.abort()


def chat(to: str, n: int, frm: str = "") -> Element:
    el = Element("message", C, {"to": to, "type": "chat", "id": f"m{n}"})
    el.add("body", text=f"message {n}")
    return el


def ping(to: str = "localhost", iq_id: str = "p") -> Element:
    iq = Element("iq", C, {"type": "get", "to": to, "id": iq_id})
    iq.add("ping", "urn:xmpp:ping")
    return iq


async def resume(running: RunningServer, user: str, previd: str, h: int) -> tuple[RawClient, Element]:
    raw = await RawClient.connect(running.c2s_port)
    await raw.open()
    await raw.starttls()
    assert (await raw.auth_scram(user, PASSWORD)).name == "success"
    await raw.open()
    raw.send(Element("resume", SM, {"previd": previd, "h": str(h)}))
    return raw, await raw.element()


async def until_pong(client: RawClient, iq_id: str) -> list[Element]:
    """Everything that arrives before the answer to ping ``iq_id`` (sent by the caller)."""
    seen: list[Element] = []
    while True:
        el = await client.element()
        if el.name == "iq" and el.attrs.get("id") == iq_id:
            return seen
        seen.append(el)


def ids(stanzas: list[Element], name: str = "message") -> list[str]:
    return [s.attrs.get("id", "") for s in stanzas if s.name == name and s.attrs.get("type") != "error"]


async def test_sm_offered_after_authentication_only(sm_server: RunningServer) -> None:
    raw = await RawClient.connect(sm_server.c2s_port)
    features = await raw.open()
    assert features.find("sm", SM) is None
    await raw.starttls()
    assert (await raw.auth_scram("juliet", PASSWORD)).name == "success"
    features = await raw.open()
    assert features.find("sm", SM) is not None
    # §3: not before binding; the client may still bind.
    raw.send(Element("enable", SM))
    failed = await raw.element()
    assert failed.name == "failed" and failed.find("unexpected-request", STANZA_ERRORS) is not None
    assert (await raw.bind("balcony")).attrs["type"] == "result"
    raw.close()


async def test_enable_without_resume_then_acks_both_ways(sm_server: RunningServer) -> None:
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    enabled = await juliet.enable(resume=False)
    assert enabled.attrs == {}  # no id, no resume
    for n in range(3):
        juliet.send(ping(iq_id=f"p{n}"))
    juliet.raw.send(Element("r", SM))
    got = [await juliet.stanza() for _ in range(4)]
    # The <a/> is written as soon as the <r/> is read (§4), maybe before the pongs: the pings are
    # "handled" once the server has taken them (queued in order behind the session's start-up).
    assert sorted(e.name for e in got) == ["a", "iq", "iq", "iq"]
    assert next(e for e in got if e.name == "a").attrs == {"h": "3"}
    juliet.ack()  # h=3: every pong
    juliet.raw.send(Element("r", SM))
    assert (await juliet.stanza()).attrs == {"h": "3"}  # nonzas are not counted
    juliet.raw.close()


@pytest.mark.sm_config("ack_every = 2\nack_after_seconds = 0")
async def test_server_requests_acks_every_n_stanzas(sm_server: RunningServer) -> None:
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable(resume=False)
    for n in range(3):
        juliet.send(ping(iq_id=f"p{n}"))
    got = [await juliet.stanza() for _ in range(4)]
    assert [(e.name, e.attrs.get("id")) for e in got] == [
        ("iq", "p0"),
        ("iq", "p1"),
        ("r", None),
        ("iq", "p2"),
    ]
    juliet.raw.send(Element("a", SM, {"h": "2"}))
    juliet.send(ping(iq_id="p3"))
    got = [await juliet.stanza() for _ in range(2)]
    # One stanza was outstanding after the ack, one more makes two: asked again.
    assert [(e.name, e.attrs.get("id")) for e in got] == [("iq", "p3"), ("r", None)]
    juliet.raw.close()


async def test_ack_of_more_than_was_sent_closes_the_stream(sm_server: RunningServer) -> None:
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable(resume=False)
    juliet.send(ping())
    await juliet.stanza()
    juliet.raw.send(Element("a", SM, {"h": "10"}))
    while True:
        item = await juliet.raw.next()
        if isinstance(item, Element) and item.ns == STREAM and item.name == "error":
            break
    assert item.find("undefined-condition", "urn:ietf:params:xml:ns:xmpp-streams") is not None
    too_high = item.find("handled-count-too-high", SM)
    assert too_high is not None and too_high.attrs == {"h": "10", "send-count": "1"}
    assert await juliet.raw.closed()


@pytest.mark.parametrize("ack", [Element("r", SM), Element("a", SM, {"h": "0"})])
async def test_acks_before_enabling_end_the_stream(sm_server: RunningServer, ack: Element) -> None:
    raw = await RawClient.login(sm_server.c2s_port, "juliet", PASSWORD, "balcony")
    raw.send(ack)
    assert await raw.stream_error() == "unsupported-stanza-type"


async def test_unreadable_ack_ends_only_its_own_stream(sm_server: RunningServer) -> None:
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    await juliet.enable(resume=False)
    juliet.raw.send(Element("a", SM, {"h": "many"}))
    assert await juliet.raw.stream_error() == "invalid-xml"
    romeo.send(ping(iq_id="still-here"))
    answer = await romeo.stanza()
    assert answer.attrs.get("id") == "still-here" and answer.attrs.get("type") == "result"


async def test_tcp_drop_mid_traffic_then_resume_loses_nothing_and_duplicates_nothing(
    sm_server: RunningServer,
) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    romeo.raw.send(Element("presence", C))
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    assert juliet.sm_id is not None and len(juliet.sm_id) >= 32
    juliet.send(Element("presence", C))
    # Juliet's side: three messages to romeo (and a ping, so they have reached the server).
    for n in range(3):
        juliet.send(chat("romeo@localhost", 100 + n))
    juliet.send(ping(iq_id="mine"))
    while (await juliet.stanza()).attrs.get("id") != "mine":
        pass
    # Romeo bursts twenty messages; juliet handles seven, acks them, and her network dies.
    for n in range(20):
        romeo.raw.send(chat("juliet@localhost/balcony", n))
    first = await juliet.stanzas_until(7)
    juliet.ack()
    handled_before_drop = juliet.handled
    juliet.drop()

    # Detached: romeo sees no unavailable presence, and what he sends is kept for her.
    session = sm_server.server.sessions.get(JID.parse("juliet@localhost/balcony"))
    assert session is not None
    await until_detached(sm_server, "juliet@localhost/balcony")
    for n in range(20, 25):
        romeo.raw.send(chat("juliet@localhost/balcony", n))
    romeo.raw.send(ping(iq_id="barrier"))
    seen_by_romeo = await until_pong(romeo.raw, "barrier")
    assert not [p for p in seen_by_romeo if p.name == "presence" and p.attrs.get("type") == "unavailable"]
    assert ids(seen_by_romeo) + ids(await _more(romeo.raw)) == ["m100", "m101", "m102"]

    raw, answer = await resume(sm_server, "juliet", juliet.sm_id, handled_before_drop)
    assert answer.name == "resumed", answer
    # The server handled everything juliet sent before the drop: presence, three messages, a ping.
    assert answer.attrs == {"previd": juliet.sm_id, "h": "5"}
    again = SmClient(raw)
    rest = await again.stanzas_until(25 - len(ids(first)))
    delivered = ids(first) + ids(rest)
    assert sorted(delivered, key=lambda i: int(i[1:])) == [f"m{n}" for n in range(25)]
    assert len(set(delivered)) == len(delivered) == 25  # nothing twice
    # The resumed stream keeps counting from where it was (§5): stanzas and acks go on.
    assert session.state is SessionState.BOUND and session.connection is not None
    raw.send(ping(iq_id="after"))
    await until_pong(raw, "after")
    raw.send(Element("r", SM))
    a = await raw.element()
    assert a.name == "a" and a.attrs["h"] == "6"
    raw.close()
    romeo.raw.close()


async def _more(client: RawClient) -> list[Element]:
    client.send(ping(iq_id="barrier2"))
    return await until_pong(client, "barrier2")


async def until_detached(running: RunningServer, jid: str) -> None:
    async def detached() -> bool:
        session = running.server.sessions.get(JID.parse(jid))
        return session is not None and session.state is SessionState.DETACHED

    await eventually(detached)


async def test_resume_while_the_old_connection_is_still_open_closes_it_with_conflict(
    sm_server: RunningServer,
) -> None:
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    assert juliet.sm_id is not None
    raw, answer = await resume(sm_server, "juliet", juliet.sm_id, 0)
    assert answer.name == "resumed"
    assert await juliet.raw.stream_error() == "conflict"
    raw.send(ping(iq_id="p"))
    assert (await raw.element()).attrs["id"] == "p"
    raw.close()


async def test_resume_of_an_unknown_or_foreign_session_fails_and_binding_still_works(
    sm_server: RunningServer,
) -> None:
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    assert juliet.sm_id is not None
    juliet.drop()
    for user, previd in (("juliet", "no-such-id"), ("romeo", juliet.sm_id)):
        raw, answer = await resume(sm_server, user, previd, 0)
        assert answer.name == "failed" and answer.find("item-not-found", STANZA_ERRORS) is not None
        assert "h" not in answer.attrs
        assert (await raw.bind("fresh")).attrs["type"] == "result"
        raw.close()


@pytest.mark.sm_config("resume_seconds = 1\nack_every = 0\nack_after_seconds = 0")
async def test_expired_session_reroutes_unacked_messages_to_offline_storage(sm_server: RunningServer) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    romeo.raw.send(Element("presence", C))
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    enabled = await juliet.enable()
    assert enabled.attrs["max"] == "1"
    juliet.send(Element("presence", C))
    for n in range(3):
        romeo.raw.send(chat("juliet@localhost/balcony", n))
    await juliet.stanzas_until(1)
    juliet.ack()  # m0 and whatever came before it are handled; m1, m2 are not
    await asyncio.sleep(0.1)
    juliet.drop()
    session = sm_server.server.sessions.get(JID.parse("juliet@localhost/balcony"))
    assert session is not None
    await until_detached(sm_server, "juliet@localhost/balcony")
    romeo.raw.send(chat("juliet@localhost/balcony", 3))
    romeo.raw.send(ping(to="juliet@localhost/balcony", iq_id="to-juliet"))
    # After the resumption time: the session ends, the IQ is answered, messages go offline.
    error = None
    seen: list[Element] = []
    while error is None:
        el = await romeo.raw.element(timeout=5)
        seen.append(el)
        if el.name == "iq" and el.attrs.get("id") == "to-juliet":
            error = el
    assert error.attrs["type"] == "error" and error.find("error", C) is not None
    assert [p for p in seen if p.name == "presence" and p.attrs.get("type") == "unavailable"]
    assert sm_server.server.sessions.get(JID.parse("juliet@localhost/balcony")) is None

    async def stored() -> bool:
        return await sm_server.server.storage.archive("offline").count("localhost", "juliet") == 3

    await eventually(stored)
    # Stored with the id each message was archived under (XEP-0359, XEP-0313): archived once only.
    offline_items = await sm_server.server.storage.archive("offline").query(
        "localhost", "juliet", ArchiveQuery(limit=10)
    )
    archived = await sm_server.server.storage.archive("mam").query(
        "localhost", "juliet", ArchiveQuery(limit=50)
    )
    archived_ids = [item.id for item in archived[0]]
    assert len(archived_ids) == len(set(archived_ids)) == 4  # m0..m3, each once
    assert {item.id for item in offline_items[0]} <= set(archived_ids)
    # Too late to resume: <failed/> with the count of juliet's stanzas the server handled (§5).
    assert juliet.sm_id is not None
    late, answer = await resume(sm_server, "juliet", juliet.sm_id, 1)
    assert answer.name == "failed" and answer.attrs == {"h": "1"}
    assert answer.find("item-not-found", STANZA_ERRORS) is not None
    late.close()
    # A later login gets them, once, with the time of their first delivery.
    fresh = await RawClient.login(sm_server.c2s_port, "juliet", PASSWORD, "later")
    fresh.send(Element("presence", C))
    got: list[Element] = []
    while len(ids(got)) < 3:
        got.append(await fresh.element())
    assert ids(got) == ["m1", "m2", "m3"]
    assert all(m.find("delay", DELAY) is not None for m in got if m.name == "message")
    fresh.send(ping(iq_id="end"))
    assert not ids(await until_pong(fresh, "end"))
    fresh.close()
    romeo.raw.close()


async def test_stanzas_after_a_clean_close_with_unacked_left_are_rerouted(sm_server: RunningServer) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    romeo.raw.send(Element("presence", C))
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    romeo.raw.send(chat("juliet@localhost/balcony", 0))
    await juliet.stanzas_until(1)
    juliet.raw.send_raw("</stream:stream>")  # never acked m0: it is offered again elsewhere
    while not isinstance(await juliet.raw.next(), StreamEnd):
        pass

    async def stored() -> bool:
        return await sm_server.server.storage.archive("offline").count("localhost", "juliet") == 1

    await eventually(stored)
    romeo.raw.close()


MUC = "http://jabber.org/protocol/muc"
ROOM = "balcony@conference.localhost"


def join(nick: str) -> Element:
    presence = Element("presence", C, {"to": f"{ROOM}/{nick}"})
    presence.add("x", MUC)
    return presence


async def test_resumed_session_keeps_its_room_occupancy_and_gets_what_was_said(
    sm_server: RunningServer,
) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    romeo.raw.send(join("romeo"))
    await until_self_presence(romeo.raw, "romeo")
    instant = Element("iq", C, {"type": "set", "to": ROOM, "id": "instant"})
    instant.add("query", "http://jabber.org/protocol/muc#owner").add("x", "jabber:x:data", {"type": "submit"})
    romeo.raw.send(instant)
    await until_pong(romeo.raw, "instant")
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    assert juliet.sm_id is not None
    juliet.send(join("jules"))
    await juliet_until_self(juliet)
    romeo.raw.send(ping(iq_id="b1"))
    await until_pong(romeo.raw, "b1")  # romeo has seen jules join
    juliet.ack()
    juliet.drop()
    await until_detached(sm_server, "juliet@localhost/balcony")
    said = Element("message", C, {"to": ROOM, "type": "groupchat", "id": "g1"})
    said.add("body", text="Wherefore art thou?")
    romeo.raw.send(said)
    romeo.raw.send(ping(iq_id="b2"))
    seen = await until_pong(romeo.raw, "b2")
    assert not [p for p in seen if p.name == "presence" and p.attrs.get("from") == f"{ROOM}/jules"]
    raw, answer = await resume(sm_server, "juliet", juliet.sm_id, juliet.handled)
    assert answer.name == "resumed"
    raw.send(ping(iq_id="b3"))
    again = [m for m in await until_pong(raw, "b3") if m.find_text("body") == "Wherefore art thou?"]
    assert len(again) == 1 and again[0].attrs["from"] == f"{ROOM}/romeo"
    raw.close()
    romeo.raw.close()


async def until_self_presence(client: RawClient, nick: str) -> list[Element]:
    seen: list[Element] = []
    while True:
        el = await client.element()
        seen.append(el)
        if el.name == "presence" and el.attrs.get("from") == f"{ROOM}/{nick}":
            return seen


async def juliet_until_self(juliet: SmClient) -> list[Element]:
    seen: list[Element] = []
    while True:
        el = await juliet.stanza()
        seen.append(el)
        if el.name == "presence" and el.attrs.get("from") == f"{ROOM}/jules":
            return seen


@pytest.mark.sm_config("ack_every = 3\nack_after_seconds = 0")
async def test_slixmpp_xep_0198_client_acks_and_resumes(sm_server: RunningServer) -> None:
    juliet = await connect("juliet@localhost/balcony", PASSWORD, sm_server.c2s_port, plugins=("xep_0198",))
    sm_plugin = juliet.plugin["xep_0198"]
    await eventually(lambda: _now(sm_plugin.sm_id is not None))
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    for n in range(6):
        juliet.send_message(mto="romeo@localhost/orchard", mbody=f"to romeo {n}", mtype="chat")
    got = await romeo.stanzas_until(6)
    assert len(ids(got)) == 6
    # The server answers slixmpp's requests: everything it sent is acknowledged.
    sm_plugin.request_ack()
    await eventually(lambda: _now(not sm_plugin.unacked_queue and sm_plugin.last_ack == sm_plugin.seq))
    for n in range(4):
        romeo.raw.send(chat("juliet@localhost/balcony", n))
    for n in range(4):
        assert (await asyncio.wait_for(juliet.received.get(), 5))["id"] == f"m{n}"
    # The network drops; messages keep coming; slixmpp reconnects and resumes.
    resumed = asyncio.Event()
    juliet.add_event_handler("session_resumed", lambda *_: resumed.set())
    juliet.transport.abort()
    await until_detached(sm_server, "juliet@localhost/balcony")
    for n in range(4, 8):
        romeo.raw.send(chat("juliet@localhost/balcony", n))
    juliet.connect("127.0.0.1", sm_server.c2s_port)
    await asyncio.wait_for(resumed.wait(), 10)
    for n in range(4, 8):
        assert (await asyncio.wait_for(juliet.received.get(), 5))["id"] == f"m{n}"
    await asyncio.sleep(0.2)
    assert juliet.received.empty()  # nothing twice
    juliet.disconnect()
    romeo.raw.close()


def _now(value: bool) -> Awaitable[bool]:
    async def check() -> bool:
        return value

    return check()


@pytest.mark.sm_config("resume_seconds = 1\nack_every = 0\nack_after_seconds = 0")
async def test_expired_message_that_a_carbons_resource_already_has_is_not_rerouted(
    sm_server: RunningServer,
) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    romeo.raw.send(Element("presence", C))
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    juliet.send(Element("presence", C))
    # Two more resources: "phone" has carbons on, "tablet" has not.
    phone = await RawClient.login(sm_server.c2s_port, "juliet", PASSWORD, "phone")
    carbons = Element("iq", C, {"type": "set", "id": "cc"})
    carbons.add("enable", "urn:xmpp:carbons:2")
    phone.send(carbons)
    await until_pong(phone, "cc")
    phone.send(Element("presence", C, None, [Element("priority", C, None, ["-1"])]))
    tablet = await RawClient.login(sm_server.c2s_port, "juliet", PASSWORD, "tablet")
    tablet.send(Element("presence", C, None, [Element("priority", C, None, ["-1"])]))
    for client in (phone, tablet):
        client.send(ping(iq_id="settled"))
        await until_pong(client, "settled")
    romeo.raw.send(chat("juliet@localhost/balcony", 1))  # the phone gets a carbon copy of it
    await juliet.stanzas_until(1)
    juliet.drop()  # m1 never acknowledged
    await until_detached(sm_server, "juliet@localhost/balcony")

    async def gone() -> bool:
        return sm_server.server.sessions.get(JID.parse("juliet@localhost/balcony")) is None

    await eventually(gone)
    await asyncio.sleep(0.3)  # re-routing runs after the session is gone
    phone.send(ping(iq_id="p"))
    on_phone = await until_pong(phone, "p")
    carbon_copies = [m for m in on_phone if m.name == "message" and m.find("received", "urn:xmpp:carbons:2")]
    originals = [m for m in on_phone if m.name == "message" and m.find("body") is not None]
    assert len(carbon_copies) == 1 and not originals  # the carbon, not the original again
    assert await sm_server.server.storage.archive("offline").count("localhost", "juliet") == 0
    tablet.send(ping(iq_id="t"))
    # Negative priority: nothing is delivered to the bare JID there, it went nowhere else either.
    assert not ids(await until_pong(tablet, "t"))
    for client in (phone, tablet, romeo.raw):
        client.close()


@pytest.mark.sm_config("resume_seconds = 1\nack_every = 0\nack_after_seconds = 0")
async def test_expired_message_goes_to_another_available_resource_with_its_delay(
    sm_server: RunningServer,
) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    romeo.raw.send(Element("presence", C))
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    juliet.send(Element("presence", C))
    tablet = await RawClient.login(sm_server.c2s_port, "juliet", PASSWORD, "tablet")
    tablet.send(Element("presence", C))
    tablet.send(ping(iq_id="settled"))
    await until_pong(tablet, "settled")
    romeo.raw.send(chat("juliet@localhost/balcony", 1))
    await juliet.stanzas_until(1)
    juliet.drop()
    await until_detached(sm_server, "juliet@localhost/balcony")
    got: list[Element] = []
    while not ids(got):
        got.append(await tablet.element())
    message = got[-1]
    assert message.attrs["id"] == "m1" and message.find_text("body") == "message 1"
    delay = message.find("delay", DELAY)
    assert delay is not None and delay.attrs["from"] == "localhost"
    await asyncio.sleep(0.2)
    tablet.send(ping(iq_id="t"))
    assert not ids(await until_pong(tablet, "t"))  # once
    for client in (tablet, romeo.raw):
        client.close()


@pytest.mark.sm_config("max_unacked = 10\nack_every = 0\nack_after_seconds = 0")
async def test_a_detached_session_with_too_many_unacked_stanzas_ends_and_nothing_is_lost(
    sm_server: RunningServer,
) -> None:
    romeo = await SmClient.login(sm_server, "romeo", "orchard")
    juliet = await SmClient.login(sm_server, "juliet", "balcony")
    await juliet.enable()
    juliet.drop()
    await until_detached(sm_server, "juliet@localhost/balcony")
    for n in range(11):
        romeo.raw.send(chat("juliet@localhost/balcony", n))

    def stored(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            gone = sm_server.server.sessions.get(JID.parse("juliet@localhost/balcony")) is None
            return (
                gone
                and await sm_server.server.storage.archive("offline").count("localhost", "juliet") == count
            )

        return check

    await eventually(stored(11))  # the eleventh ended the session, long before the 300 s of resumption
    romeo.raw.send(chat("juliet@localhost/balcony", 11))  # now to an offline resource
    await eventually(stored(12))
    fresh = await RawClient.login(sm_server.c2s_port, "juliet", PASSWORD, "later")
    fresh.send(Element("presence", C))
    got: list[Element] = []
    while len(ids(got)) < 12:
        got.append(await fresh.element())
    assert ids(got) == [f"m{n}" for n in range(12)]  # in order
    fresh.close()
    romeo.raw.close()
