"""Client state indication (XEP-0352) on the wire: what an inactive client gets, and when."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.jid import JID
from roost.modules.message import CHATSTATES
from roost.modules.roster import RosterItem, roster_rows
from roost.xml.element import Element
from roost.xml.ns import CSI, SM
from tests.support.clients import connect
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server

C = "jabber:client"
PASSWORD = "secret"


@pytest.fixture
async def csi_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, "[sm]\nack_every = 0\nack_after_seconds = 0\n") as running:
        for user in ("juliet", "romeo", "nurse"):
            await running.add_user(f"{user}@localhost", PASSWORD)
        store = running.server.storage.map("roster")
        for user, contacts in (
            ("juliet", ("romeo", "nurse")),
            ("romeo", ("juliet",)),
            ("nurse", ("juliet",)),
        ):
            items = [RosterItem(JID.parse(f"{c}@localhost"), subscription="both") for c in contacts]
            await store.set_many("localhost", user, roster_rows(items))
        yield running


def presence(show: str | None = None, n: str = "") -> Element:
    el = Element("presence", C, {"id": n} if n else None)
    if show:
        el.add("show", text=show)
    return el


def chat_state(to: str, state: str, n: str) -> Element:
    el = Element("message", C, {"to": to, "type": "chat", "id": n})
    el.add(state, CHATSTATES)
    return el


def chat(to: str, body: str, n: str) -> Element:
    el = Element("message", C, {"to": to, "type": "chat", "id": n})
    el.add("body", text=body)
    return el


def ping(iq_id: str) -> Element:
    iq = Element("iq", C, {"type": "get", "to": "localhost", "id": iq_id})
    iq.add("ping", "urn:xmpp:ping")
    return iq


async def until_pong(client: RawClient, iq_id: str) -> list[Element]:
    seen: list[Element] = []
    while True:
        el = await client.element()
        if el.name == "iq" and el.attrs.get("id") == iq_id:
            return seen
        seen.append(el)


async def quiet(client: RawClient, seconds: float = 0.3) -> list[Element]:
    """What arrives within ``seconds`` (an inactive client should get nothing)."""
    got: list[Element] = []
    try:
        while True:
            got.append(await client.element(timeout=seconds))
    except TimeoutError:
        return got


async def online(running: RunningServer, user: str, resource: str) -> RawClient:
    client = await RawClient.login(running.c2s_port, user, PASSWORD, resource)
    client.send(presence())
    client.send(ping("ready"))
    await until_pong(client, "ready")
    return client


async def settle(client: RawClient, *contacts: str) -> list[Element]:
    """Read until the available presence of each contact has arrived, then whatever follows at once."""
    waiting = set(contacts)
    seen: list[Element] = []
    while waiting:
        el = await client.element()
        seen.append(el)
        if el.name == "presence" and "type" not in el.attrs:
            waiting.discard(el.attrs.get("from", "").split("@")[0])
    return seen + await quiet(client, 0.1)


async def delivered(sender: RawClient) -> None:
    """A round trip for ``sender``: what it sent before has been routed (and held or written)."""
    sender.send(ping("delivered"))
    await until_pong(sender, "delivered")


async def inactive(client: RawClient) -> None:
    """<inactive/>, and a round trip so that it is in effect before anything else is sent."""
    client.send(Element("inactive", CSI))
    client.send(ping("inactive"))
    await until_pong(client, "inactive")


def summary(stanzas: list[Element]) -> list[tuple[str, str, str]]:
    return [(s.name, s.attrs.get("from", "").split("@")[0], s.attrs.get("id", "")) for s in stanzas]


async def test_csi_offered_after_authentication(csi_server: RunningServer) -> None:
    raw = await RawClient.connect(csi_server.c2s_port)
    assert (await raw.open()).find("csi", CSI) is None
    await raw.starttls()
    assert (await raw.auth_scram("juliet", PASSWORD)).name == "success"
    assert (await raw.open()).find("csi", CSI) is not None
    raw.close()


async def test_inactive_client_gets_presence_and_chat_states_late_latest_only_flushed_by_a_message(
    csi_server: RunningServer,
) -> None:
    juliet = await online(csi_server, "juliet", "balcony")
    romeo = await online(csi_server, "romeo", "orchard")
    nurse = await online(csi_server, "nurse", "house")
    await settle(juliet, "romeo", "nurse")  # presence of both, from their logins
    await inactive(juliet)
    romeo.send(presence("away", "r1"))
    nurse.send(presence("dnd", "n1"))
    nurse.send(ping("n"))
    await until_pong(nurse, "n")  # n1 is handled before r2 is sent
    romeo.send(presence("xa", "r2"))
    romeo.send(chat_state("juliet@localhost/balcony", "composing", "s1"))
    romeo.send(chat_state("juliet@localhost/balcony", "paused", "s2"))
    await delivered(romeo)
    assert await quiet(juliet) == []  # held
    romeo.send(chat("juliet@localhost/balcony", "Juliet!", "m1"))
    got = [await juliet.element() for _ in range(4)]
    # Held ones first (latest per contact, in the order of their last update), then the message.
    assert summary(got) == [
        ("presence", "nurse", "n1"),
        ("presence", "romeo", "r2"),
        ("message", "romeo", "s2"),
        ("message", "romeo", "m1"),
    ]
    assert await quiet(juliet) == []
    for client in (juliet, romeo, nurse):
        client.close()


async def test_active_flushes_what_was_held_before_the_next_answer(csi_server: RunningServer) -> None:
    juliet = await online(csi_server, "juliet", "balcony")
    romeo = await online(csi_server, "romeo", "orchard")
    await settle(juliet, "romeo")
    await inactive(juliet)
    romeo.send(presence("away", "r1"))
    await delivered(romeo)
    assert await quiet(juliet) == []
    # §5.1: <active/> then a ping: the held presence comes first, then the pong.
    juliet.send(Element("active", CSI))
    juliet.send(ping("after"))
    assert summary(await until_pong(juliet, "after")) == [("presence", "romeo", "r1")]
    romeo.send(presence("dnd", "r2"))
    assert summary([await juliet.element()]) == [("presence", "romeo", "r2")]  # active again
    juliet.close()
    romeo.close()


async def test_urgent_stanzas_go_at_once_after_the_held_ones(csi_server: RunningServer) -> None:
    juliet = await online(csi_server, "juliet", "balcony")
    romeo = await online(csi_server, "romeo", "orchard")
    await settle(juliet, "romeo")
    await inactive(juliet)
    romeo.send(presence("away", "r1"))
    await delivered(romeo)
    assert await quiet(juliet) == []
    juliet.send(ping("p"))  # the answer to her own IQ is urgent
    assert summary(await until_pong(juliet, "p")) == [("presence", "romeo", "r1")]
    juliet.close()
    romeo.close()


async def test_with_stream_management_held_stanzas_are_counted_when_written(
    csi_server: RunningServer,
) -> None:
    juliet = await RawClient.login(csi_server.c2s_port, "juliet", PASSWORD, "balcony")
    juliet.send(Element("enable", SM))
    assert (await juliet.element()).name == "enabled"
    juliet.send(presence())
    juliet.send(ping("ready"))
    handled = len(await until_pong(juliet, "ready")) + 1
    romeo = await online(csi_server, "romeo", "orchard")
    handled += len(await settle(juliet, "romeo"))
    session = csi_server.server.sessions.get(JID.parse("juliet@localhost/balcony"))
    assert session is not None and session.sm is not None
    state = session.sm.state  # type: ignore[attr-defined]
    await inactive(juliet)
    romeo.send(presence("away", "r1"))
    romeo.send(presence("xa", "r2"))
    romeo.send(ping("sent"))
    await until_pong(romeo, "sent")  # both presences have reached juliet's session
    assert state.outbound == handled + 1  # the pong of inactive(); the presences are held, not counted
    handled += 1  # held, not sent: not counted
    juliet.send(Element("active", CSI))
    juliet.send(ping("end"))
    got = await until_pong(juliet, "end")
    assert summary(got) == [("presence", "romeo", "r2")]
    handled += len(got) + 1
    assert state.outbound == handled
    juliet.send(Element("a", SM, {"h": str(handled)}))
    juliet.send(Element("r", SM))
    assert (await juliet.element()).name == "a"
    assert not state.unacked
    juliet.close()
    romeo.close()


async def test_slixmpp_xep_0352_client(csi_server: RunningServer) -> None:
    juliet = await connect("juliet@localhost/balcony", PASSWORD, csi_server.c2s_port, plugins=("xep_0352",))
    romeo = await connect("romeo@localhost/orchard", PASSWORD, csi_server.c2s_port)
    presences: asyncio.Queue[Any] = asyncio.Queue()
    juliet.add_event_handler(
        "presence", lambda p: presences.put_nowait(p) if str(p["from"]).startswith("romeo@") else None
    )
    csi = juliet.plugin["xep_0352"]
    assert csi.enabled  # the server advertised <csi/>
    await asyncio.sleep(0.3)
    while not presences.empty():
        presences.get_nowait()
    csi.send_inactive()
    await asyncio.sleep(0.1)
    romeo.send_presence(pshow="away")
    romeo.send_presence(pshow="xa")
    await asyncio.sleep(0.3)
    assert presences.empty()
    csi.send_active()
    got = await asyncio.wait_for(presences.get(), 5)
    assert got["show"] == "xa"
    await asyncio.sleep(0.2)
    assert presences.empty()
    for client in (juliet, romeo):
        client.disconnect()
