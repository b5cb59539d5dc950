"""Roost federated with real Prosody and ejabberd on loopback, both directions, EXTERNAL and dialback.

Each test starts Roost (``roost.test``, in process) and one peer (``prosody.test`` or
``ejabberd.test``) with certificates from a test CA, then proves, with real clients on both servers:
chat both ways, subscription and presence both ways, a room on each server joined from the other,
and disco of the other server. "external": both sides trust the test CA and refuse dialback
(``secure_auth``), so only SASL EXTERNAL can work; "dialback": neither side validates the other's
certificate, so only dialback can.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server
from roost.jid import JID
from roost.modules.pubsub.pep import find_runtime
from roost.s2s.dns import StaticResolver
from roost.s2s.manager import Federation
from tests.interop.peers import PASSWORD, Ejabberd, Peer, Prosody, missing
from tests.support.clients import Client, connect
from tests.support.server import RunningServer
from tests.support.testca import TestCA

pytestmark = pytest.mark.interop

ROOST = "roost.test"
ROOST_MUC = "conference.roost.test"
PEERS: dict[str, type[Peer]] = {"prosody": Prosody, "ejabberd": Ejabberd}
REQUIRES = {"prosody": ("prosody",), "ejabberd": ("erl", "ejabberdctl")}


@dataclass
class Federated:
    roost: Server
    peer: Peer
    mode: str


def roost_config(directory: Path, ca: TestCA, secure: bool) -> Path:
    issued = ca.issue(ROOST, ROOST_MUC)
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["{ROOST}"]
data_dir = "{data}"

[tls]
cert = "{issued.cert}"
key = "{issued.key}"

[[listen]]
kind = "c2s"
address = "127.0.0.1:0"

[[listen]]
kind = "s2s"
address = "127.0.0.1:0"

[storage]
url = "sqlite:///{data / "roost.db"}"

[s2s]
{f'ca_file = "{ca.ca_file}"' if secure else ""}
secure_auth = {"true" if secure else "false"}
"""
    )
    return path


@pytest.fixture(params=["prosody-dialback", "prosody-external", "ejabberd-dialback", "ejabberd-external"])
async def federated(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Federated]:
    kind, mode = request.param.split("-")
    why = missing(*REQUIRES[kind])
    if why is not None:
        pytest.skip(f"{kind} interop: {why}")
    secure = mode == "external"
    ca = TestCA(tmp_path / "ca")
    roost = create_server(load_config(roost_config(tmp_path / "roost", ca, secure)))
    await roost.start()
    cls = PEERS[kind]
    peer = cls(
        tmp_path / kind, ca.issue(f"{kind}.test", f"conference.{kind}.test"), ca.ca_file, secure=secure
    )
    federation = roost.route_table.remote
    assert isinstance(federation, Federation)
    federation.resolver = StaticResolver(
        {peer.domain: ("127.0.0.1", peer.s2s_port), peer.muc: ("127.0.0.1", peer.s2s_port)}
    )
    s2s_port = roost.addresses["s2s"][1]
    try:
        await peer.start(["alice"], {ROOST: s2s_port, ROOST_MUC: s2s_port})
        await RunningServer(roost, roost.config.server.data_dir).add_user(f"romeo@{ROOST}", PASSWORD)
        yield Federated(roost, peer, mode)
    except BaseException:
        print(peer.logs())
        raise
    finally:
        await peer.stop()
        await roost.stop()


async def clients(f: Federated) -> tuple[Client, Client]:
    romeo = await connect(f"romeo@{ROOST}", PASSWORD, f.roost.addresses["c2s"][1])
    alice = await connect(f"alice@{f.peer.domain}", PASSWORD, f.peer.c2s_port)
    for client in (romeo, alice):
        client.register_plugin("xep_0045")
        client.auto_authorize = None
        await client.get_roster(timeout=10)
    return romeo, alice


async def step(name: str, awaitable: Any, timeout: float = 30) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"timed out: {name}") from None


async def chat(romeo: Client, alice: Client, peer: Peer) -> None:
    romeo.send_message(mto=f"alice@{peer.domain}", mbody="hello from roost", mtype="chat")
    got = await step("roost → peer message", alice.received.get())
    assert got["body"] == "hello from roost" and got["from"].bare == f"romeo@{ROOST}"
    alice.send_message(mto=got["from"], mbody="hello from the peer", mtype="chat")
    back = await step("peer → roost message", romeo.received.get())
    assert back["body"] == "hello from the peer" and back["from"].bare == f"alice@{peer.domain}"


async def subscriptions(romeo: Client, alice: Client, peer: Peer) -> None:
    alice_jid = f"alice@{peer.domain}"
    romeo_jid = f"romeo@{ROOST}"
    romeo_sees_alice = asyncio.Event()
    alice_sees_romeo = asyncio.Event()

    def alice_subscribe(p: Any) -> None:
        if p["from"].bare == romeo_jid:
            alice.send_presence(pto=romeo_jid, ptype="subscribed")
            alice.send_presence(pto=romeo_jid, ptype="subscribe")

    def romeo_subscribe(p: Any) -> None:
        if p["from"].bare == alice_jid:
            romeo.send_presence(pto=alice_jid, ptype="subscribed")

    alice.add_event_handler("presence_subscribe", alice_subscribe)
    romeo.add_event_handler("presence_subscribe", romeo_subscribe)
    romeo.add_event_handler(
        "presence_available", lambda p: romeo_sees_alice.set() if p["from"].bare == alice_jid else None
    )
    alice.add_event_handler(
        "presence_available", lambda p: alice_sees_romeo.set() if p["from"].bare == romeo_jid else None
    )
    romeo.send_presence(pto=alice_jid, ptype="subscribe")
    await step("roost user sees the peer user's presence", romeo_sees_alice.wait())
    await step("peer user sees the roost user's presence", alice_sees_romeo.wait())
    for _ in range(100):
        if (
            romeo.client_roster[alice_jid]["subscription"] == "both"
            and alice.client_roster[romeo_jid]["subscription"] == "both"
        ):
            break
        await asyncio.sleep(0.1)
    assert romeo.client_roster[alice_jid]["subscription"] == "both"
    assert alice.client_roster[romeo_jid]["subscription"] == "both"


async def room(host_user: Client, guest: Client, muc: str) -> None:
    """``host_user`` (on the room's server) and ``guest`` (on the other) join a room and talk."""
    room_jid = f"interop{muc.split('.')[1]}@{muc}"
    host_muc = host_user.plugin["xep_0045"]
    guest_muc = guest.plugin["xep_0045"]
    await step(f"join {room_jid} locally", host_muc.join_muc_wait(room_jid, "host", maxstanzas=0, timeout=30))
    # XEP-0045 §10.1.2: accept the default configuration (an instant room), which unlocks it.
    iq = host_user.make_iq_set(ito=room_jid)
    query = ET.Element("{http://jabber.org/protocol/muc#owner}query")
    ET.SubElement(query, "{jabber:x:data}x", type="submit")
    iq.append(query)
    await step(f"unlock {room_jid}", iq.send(timeout=20))
    await step(
        f"join {room_jid} from the other server",
        guest_muc.join_muc_wait(room_jid, "guest", maxstanzas=0, timeout=30),
    )
    got: asyncio.Queue[Any] = asyncio.Queue()
    host_user.add_event_handler("groupchat_message", got.put_nowait)
    guest.send_message(mto=room_jid, mbody="hi room", mtype="groupchat")
    while True:
        message = await step(f"groupchat in {room_jid}", got.get())
        if message["body"] == "hi room":
            assert message["from"].resource == "guest"
            break


async def disco(romeo: Client, alice: Client, peer: Peer) -> None:
    info = await romeo.plugin["xep_0030"].get_info(jid=peer.domain, timeout=20)
    assert any(i[0] == "server" for i in info["disco_info"]["identities"])
    info = await alice.plugin["xep_0030"].get_info(jid=ROOST, timeout=20)
    assert any(i[0] == "server" for i in info["disco_info"]["identities"])


async def test_federation_with_peer(federated: Federated, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="roost.s2s")
    romeo, alice = await clients(federated)
    try:
        await chat(romeo, alice, federated.peer)
        await subscriptions(romeo, alice, federated.peer)
        await disco(romeo, alice, federated.peer)
        await room(alice, romeo, federated.peer.muc)
        await room(romeo, alice, ROOST_MUC)
    finally:
        romeo.disconnect()
        alice.disconnect()
    lines = [r.getMessage() for r in caplog.records]
    method = federated.mode
    peer = federated.peer.domain
    assert any(f"s2s out: {ROOST} → {peer} authenticated by {method}" in line for line in lines), lines
    assert all(f"by {'dialback' if method == 'external' else 'external'}" not in line for line in lines)
    # XEP-0288: Prosody 0.12 speaks it (mod_s2s_bidi, enabled in its test config), ejabberd 23.01 not.
    bidi = federated.peer.name == "prosody"
    authenticated = [line for line in lines if "authenticated by" in line]
    assert all((", bidi" in line) == bidi for line in authenticated), authenticated
    if bidi and method == "external":
        # No dialback round trips: each pair is carried both ways by the one stream its initiator
        # opened. Prosody answered roost.test on ours; Roost answered from its MUC on Prosody's.
        assert not any(f"s2s in: {peer} → {ROOST} " in line for line in lines), lines
        assert any(f"s2s in: {peer} → {ROOST_MUC} authenticated" in line for line in lines), lines
        assert not any(f"s2s out: {ROOST_MUC} → {peer} " in line for line in lines), lines
    else:
        assert any(f"s2s in: {peer} → {ROOST} authenticated by" in line for line in lines), lines


TUNE = "http://jabber.org/protocol/tune"


@pytest.mark.parametrize("federated", ["prosody-dialback"], indirect=True)
async def test_pep_with_prosody(federated: Federated) -> None:
    """PEP events both ways between Roost and Prosody's mod_pep: each server learns the other's
    contact's caps (``tune+notify``) from presence over s2s and asks it for disco#info across."""
    peer = federated.peer
    plugins = ("xep_0030", "xep_0060", "xep_0115", "xep_0163")
    romeo = await connect(f"romeo@{ROOST}", PASSWORD, federated.roost.addresses["c2s"][1], plugins=plugins)
    alice = await connect(f"alice@{peer.domain}", PASSWORD, peer.c2s_port, plugins=plugins)
    events: dict[str, asyncio.Queue[Any]] = {"romeo": asyncio.Queue(), "alice": asyncio.Queue()}
    try:
        for name, client in (("romeo", romeo), ("alice", alice)):
            client.auto_authorize = None
            await client.get_roster(timeout=10)
            client.plugin["xep_0030"].add_feature(TUNE + "+notify")
            client.add_event_handler("pubsub_publish", events[name].put_nowait)
        await subscriptions(romeo, alice, peer)
        for client in (romeo, alice):
            await client.plugin["xep_0115"].update_caps(broadcast=False)
            client.send_presence()  # now with caps naming tune+notify

        runtime = find_runtime(federated.roost)
        assert runtime is not None
        for _ in range(300):  # Roost asks alice (at Prosody) for the features behind her caps
            state = next(iter(runtime.remote_resources(JID.parse(alice.boundjid.bare))), None)
            if state is not None and TUNE in getattr(state.data.get("pep"), "notify", ()):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Roost did not learn the caps of the Prosody user")

        async def publish(client: Client, artist: str) -> None:
            tune = ET.Element(f"{{{TUNE}}}tune")
            ET.SubElement(tune, f"{{{TUNE}}}artist").text = artist
            await client.plugin["xep_0060"].publish(client.boundjid.bare, TUNE, payload=tune, timeout=20)

        async def event_from(name: str, owner: str) -> Any:
            while True:
                msg = await step(f"PEP event from {owner} to {name}", events[name].get())
                if msg["from"].bare == owner:
                    return msg

        await publish(romeo, "Dowland")
        got = await event_from("alice", f"romeo@{ROOST}")
        assert "Dowland" in str(got) and got["to"] == alice.boundjid

        # (Should Prosody learn romeo's caps only after this, it sends him the last item then.)
        await publish(alice, "Byrd")
        back = await event_from("romeo", f"alice@{peer.domain}")
        assert "Byrd" in str(back)
    finally:
        romeo.disconnect()
        alice.disconnect()
