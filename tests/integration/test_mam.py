"""Message archives read by a real client: slixmpp's XEP-0313 plugin against a server on real sockets
(SQLite storage), for a user archive and a room archive."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from slixmpp import JID

from tests.support.clients import Client, connect
from tests.support.muc import MucPeer, room_jid
from tests.support.server import RunningServer


async def mam_client(server: RunningServer, jid: str) -> Client:
    client = await connect(jid, "pw", server.c2s_port)
    client.register_plugin("xep_0313")
    client.register_plugin("xep_0059")
    return client


def text_of(messages: list[object]) -> list[str]:
    return [str(m["mam_result"]["forwarded"]["stanza"]["body"]) for m in messages]  # type: ignore[index]


async def test_a_fresh_login_reads_the_history_page_by_page(server: RunningServer) -> None:
    for user in ("alice", "bob"):
        await server.add_user(f"{user}@localhost", "pw")
    alice = await mam_client(server, "alice@localhost/phone")
    try:
        for n in range(12):
            alice.send_message(mto=JID("bob@localhost"), mbody=f"line {n}", mtype="chat")
        await alice.plugin["xep_0199"].ping("localhost", timeout=5)  # everything sent is processed
        await server.server.storage.flush()
    finally:
        alice.disconnect()

    bob = await mam_client(server, "bob@localhost/fresh")
    try:
        mam = bob.plugin["xep_0313"]
        iq = await mam.retrieve(with_jid=JID("alice@localhost"), timeout=10, rsm={"max": 20})
        assert text_of(iq["mam"]["results"]) == [f"line {n}" for n in range(12)]
        assert iq["mam_fin"]["complete"] in (True, "true")

        paged = [
            str(m["mam_result"]["forwarded"]["stanza"]["body"]) async for m in mam.iterate(rsm={"max": 5})
        ]
        assert paged == [f"line {n}" for n in range(12)]
        newest = [
            str(m["mam_result"]["forwarded"]["stanza"]["body"])
            async for m in mam.iterate(reverse=True, rsm={"max": 5}, total=7)
        ]
        assert newest == [f"line {n}" for n in range(11, 4, -1)]

        since = datetime.now(UTC) - timedelta(hours=1)
        iq = await mam.retrieve(start=since, timeout=10, rsm={"max": 3})
        assert text_of(iq["mam"]["results"]) == ["line 0", "line 1", "line 2"]
        meta = await mam.get_archive_metadata()
        assert meta["mam_metadata"]["start"]["id"] == iq["mam"]["results"][0]["mam_result"]["id"]
    finally:
        bob.disconnect()


async def test_a_room_archive_through_slixmpp(server: RunningServer) -> None:
    for user in ("crone", "hag"):
        await server.add_user(f"{user}@localhost", "pw")
    crone = MucPeer(await mam_client(server, "crone@localhost/desk"))
    try:
        await crone.create("coven", "firstwitch", persistentroom="1")
        for n in range(3):
            crone.send(f"<message to='{room_jid('coven')}' type='groupchat'><body>spell {n}</body></message>")
        await crone.sync()
    finally:
        crone.client.disconnect()
    await asyncio.sleep(0)
    await server.server.storage.flush()

    hag = await mam_client(server, "hag@localhost/pda")
    try:
        iq = await hag.plugin["xep_0313"].retrieve(jid=JID(room_jid("coven")), timeout=10, rsm={"max": 10})
        results = iq["mam"]["results"]
        assert text_of(results) == ["spell 0", "spell 1", "spell 2"]
        forwarded = results[0]["mam_result"]["forwarded"]["stanza"]
        assert str(forwarded["from"]) == f"{room_jid('coven')}/firstwitch"
    finally:
        hag.disconnect()
