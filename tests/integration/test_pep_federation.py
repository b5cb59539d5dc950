"""XEP-0163 PEP across two Roost servers federated over real s2s (TCP, TLS, dialback on loopback).

alice@a.test and bob@b.test share presence both ways. a.test learns bob's caps from the presence
b.test sends it, verifies them with a disco#info query over s2s, and sends him +notify events and
last items; carol@b.test, a stranger, subscribes explicitly and gets events at her bare JID.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from roost.core.server import Server
from roost.modules.pubsub.config import PUBSUB, PUBSUB_EVENT
from roost.modules.pubsub.pep import PepRuntime, find_runtime
from roost.xml.element import Element
from tests.integration.test_federation import Pair, start_pair
from tests.integration.test_pep import TUNE, PepPeer, pep_login, publish, tune
from tests.support.im import PASSWORD
from tests.support.server import RunningServer

OMEMO = "urn:xmpp:omemo:2:devices"


class FedPeer(PepPeer):
    """A PEP client whose round trips go to its own server (not 'localhost')."""

    async def sync(self) -> None:
        ping: Any = self.client.plugin["xep_0199"]
        await ping.ping(self.jid.split("@")[1].split("/")[0], timeout=5)


async def login(server: Server, jid: str, interests: tuple[str, ...] = ()) -> FedPeer:
    running = RunningServer(server, server.config.server.data_dir)
    peer = await pep_login(running, jid, interests, peer_class=FedPeer)
    assert isinstance(peer, FedPeer)
    return peer


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def runtime(server: Server) -> PepRuntime:
    found = find_runtime(server)
    assert found is not None
    return found


def knows(server: Server, full_jid: str, node: str) -> Callable[[], bool]:
    """Whether ``server``'s PEP tracks the remote ``full_jid`` with +notify for ``node``."""

    def check() -> bool:
        resource = runtime(server).remote.get(full_jid)
        state = resource.data.get("pep") if resource is not None else None
        return state is not None and node in state.notify

    return check


def subscription(server: Server, user: str, contact: str) -> str | None:
    roster = server.hosts[user.split("@")[1]].modules.loaded["roster"]
    from roost.jid import JID

    cached = roster.cached(JID.parse(user))  # type: ignore[attr-defined]
    item = cached.item(JID.parse(contact)) if cached is not None else None
    return item.subscription if item is not None else None


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    pair = await start_pair(tmp_path)
    try:
        for server, name in ((pair.a, "alice@a.test"), (pair.b, "bob@b.test"), (pair.b, "carol@b.test")):
            await RunningServer(server, server.config.server.data_dir).add_user(name, PASSWORD)
        yield pair
    finally:
        await pair.a.stop()
        await pair.b.stop()


async def share_presence(alice: FedPeer, bob: FedPeer, pair: Pair) -> None:
    """Mutual presence subscription over s2s (the clients also answer requests themselves:
    slixmpp's auto_authorize, so the explicit approvals may be redundant)."""
    alice.send("<presence type='subscribe' to='bob@b.test'/>")
    await until(lambda: subscription(pair.b, "bob@b.test", "alice@a.test") is not None, "request at b")
    bob.send("<presence type='subscribed' to='alice@a.test'/><presence type='subscribe' to='alice@a.test'/>")
    await until(lambda: subscription(pair.a, "alice@a.test", "bob@b.test") is not None, "approval at a")
    alice.send("<presence type='subscribed' to='bob@b.test'/>")
    await until(lambda: subscription(pair.b, "bob@b.test", "alice@a.test") == "both", "both at b")
    await until(lambda: subscription(pair.a, "alice@a.test", "bob@b.test") == "both", "both at a")


async def event_from(peer: FedPeer, node: str, owner: str) -> Element:
    """The next event about ``node`` from ``owner``'s PEP (events from others are skipped)."""
    while True:
        message = await peer.event(node, timeout=15)
        if message.get("from") == owner:
            return message


def event_item(message: Element) -> Element:
    event = message.find("event", PUBSUB_EVENT)
    assert event is not None
    items = event.first()
    assert items is not None
    item = items.first()
    assert item is not None
    return item


async def test_notify_events_and_last_item_to_a_contact_on_another_server(pair: Pair) -> None:
    alice = await login(pair.a, "alice@a.test/home", (TUNE,))
    bob = await login(pair.b, "bob@b.test/phone", (TUNE,))
    try:
        await share_presence(alice, bob, pair)
        # Each server learns the other's contact caps from presence over s2s (disco#info verified).
        await until(knows(pair.a, bob.jid, TUNE), "a.test to learn bob's caps")
        await until(knows(pair.b, alice.jid, TUNE), "b.test to learn alice's caps")

        assert (await publish(alice, TUNE, tune("Dowland"))).get("type") == "result"
        got = await bob.event(TUNE, timeout=10)
        assert got.get("from") == "alice@a.test" and got.get("to") == bob.jid
        assert "Dowland" in str(event_item(got))

        assert (await publish(bob, TUNE, tune("Byrd"))).get("type") == "result"
        back = await event_from(alice, TUNE, "bob@b.test")  # (her own tune came to her first)
        assert "Byrd" in str(event_item(back))

        # Offline: a.test forgets the resource and sends it nothing.
        bob.client.disconnect()
        await until(lambda: not runtime(pair.a).remote, "a.test to forget bob's resource")

        # Back online: alice's last tune arrives on bob's presence, before anything new is published.
        bob = await login(pair.b, "bob@b.test/tablet", (TUNE,))
        last = await event_from(bob, TUNE, "alice@a.test")  # (and his own last tune)
        assert "Dowland" in str(event_item(last))
    finally:
        alice.client.disconnect()
        bob.client.disconnect()


async def test_explicit_subscription_from_another_server(pair: Pair) -> None:
    alice = await login(pair.a, "alice@a.test/home")
    carol = await login(pair.b, "carol@b.test/laptop")  # a stranger without +notify
    try:
        open_access = (
            f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#publish-options</value></field>"
            "<field var='pubsub#access_model'><value>open</value></field></x></publish-options>"
        )
        devices = f"<devices xmlns='{OMEMO}'><device id='1'/></devices>"
        assert (await publish(alice, OMEMO, devices, options=open_access)).get("type") == "result"
        reply = await carol.iq(
            f"<pubsub xmlns='{PUBSUB}'><subscribe node='{OMEMO}' jid='carol@b.test'/></pubsub>",
            to="alice@a.test",
        )
        assert reply.get("type") == "result", reply
        sub = reply.find("pubsub", PUBSUB)
        assert sub is not None and sub.find("subscription", PUBSUB).get("subscription") == "subscribed"  # type: ignore[union-attr]

        # The last item on a new subscription (XEP-0060 §6.1.7), then the next publication.
        for device in ("1", "2"):
            if device == "2":
                assert (await publish(alice, OMEMO, devices.replace("'1'", "'2'"))).get("type") == "result"
            got = await carol.event(OMEMO, timeout=10)
            assert got.get("from") == "alice@a.test" and got.get("to") == "carol@b.test"
            payload = event_item(got).first()
            assert payload is not None and payload.first().get("id") == device  # type: ignore[union-attr]

        # presence access: a stranger on another server cannot read alice's tune.
        assert (await publish(alice, TUNE, tune("Campion"))).get("type") == "result"
        denied = await carol.iq(
            f"<pubsub xmlns='{PUBSUB}'><items node='{TUNE}'/></pubsub>", "get", "alice@a.test"
        )
        assert denied.get("type") == "error"
    finally:
        alice.client.disconnect()
        carol.client.disconnect()
