"""XEP-0384 OMEMO on Roost with slixmpp-omemo: both clients publish their device lists and bundles with
publish-options (open access), fetch each other's, and an encrypted message decrypts — and the first
publication attempt succeeds every time (no client-side fallback was needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

omemo = pytest.importorskip("omemo")
slixmpp_omemo = pytest.importorskip("slixmpp_omemo")

from omemo.storage import Just, Maybe, Nothing, Storage  # noqa: E402
from omemo.types import DeviceInformation, JSONType  # noqa: E402
from slixmpp import JID  # noqa: E402
from slixmpp.plugins import register_plugin  # noqa: E402

from roost.modules.pubsub.pep import find_runtime  # noqa: E402
from tests.integration.test_pep import mutual  # noqa: E402
from tests.support.clients import Client  # noqa: E402
from tests.support.im import PASSWORD, Peer, add_users  # noqa: E402
from tests.support.server import RunningServer  # noqa: E402


class MemoryStorage(Storage):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class Omemo(slixmpp_omemo.XEP_0384):  # type: ignore[misc,name-defined]
    """slixmpp-omemo with in-memory storage and blind trust (BTBV), as a test client would."""

    name = "xep_0384"
    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._storage = MemoryStorage()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(
        self, blindly_trusted: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
        return None

    async def _prompt_manual_trust(
        self, manually_trusted: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
        manager = await self.get_session_manager()
        for device in manually_trusted:
            await manager.set_trust(device.bare_jid, device.identity_key, "BLINDLY_TRUSTED")


register_plugin(Omemo)


async def omemo_login(server: RunningServer, jid: str) -> Peer:
    client = Client(jid, PASSWORD)
    for plugin in ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0280", "xep_0334", "xep_0004"):
        client.register_plugin(plugin)
    client.register_plugin("xep_0384")
    ready = asyncio.Event()
    client.add_event_handler("omemo_initialized", lambda *_: ready.set())
    client.enable_plaintext = False
    client.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(client.session_started.wait(), 10)
    client.send_presence()
    await asyncio.wait_for(ready.wait(), 30)
    peer = Peer(client)
    await peer.sync()
    return peer


@pytest.fixture
async def pair(server: RunningServer) -> AsyncIterator[tuple[Peer, Peer]]:
    await add_users(server, "alice", "bob")
    alice = await omemo_login(server, "alice@localhost/phone")
    bob = await omemo_login(server, "bob@localhost/laptop")
    try:
        yield alice, bob
    finally:
        alice.client.disconnect()
        bob.client.disconnect()


async def test_encrypted_message_decrypts(server: RunningServer, pair: tuple[Peer, Peer]) -> None:
    alice, bob = pair
    await mutual(alice, bob)
    received: asyncio.Queue[Any] = asyncio.Queue()
    bob_omemo: Any = bob.client.plugin["xep_0384"]

    def on_message(stanza: Any) -> None:
        if bob_omemo.is_encrypted(stanza):
            received.put_nowait(stanza)

    bob.client.add_event_handler("message", on_message)
    alice_omemo: Any = alice.client.plugin["xep_0384"]
    plain = alice.client.make_message(mto=JID("bob@localhost"), mbody="wherefore art thou", mtype="chat")
    encrypted, errors = await alice_omemo.encrypt_message(plain, JID("bob@localhost"))
    assert not errors, errors
    for message in encrypted.values() if isinstance(encrypted, dict) else [encrypted]:
        message.send()
    stanza = await asyncio.wait_for(received.get(), 10)
    decrypted, device = await bob_omemo.decrypt_message(stanza)
    assert decrypted["body"] == "wherefore art thou"
    assert device.bare_jid == "alice@localhost"

    # Published with publish-options at the first attempt: the nodes carry exactly what was asked
    # (the client's fallback would have dropped pubsub#max_items = max).
    runtime = find_runtime(server.server)
    assert runtime is not None
    for user in ("alice", "bob"):
        service = await runtime.service("localhost", user)
        devices = service.nodes["urn:xmpp:omemo:2:devices"]
        bundles = service.nodes["urn:xmpp:omemo:2:bundles"]
        legacy = service.nodes["eu.siacs.conversations.axolotl.devicelist"]
        assert (
            devices.config.access_model == bundles.config.access_model == legacy.config.access_model == "open"
        )
        assert bundles.config.max_items is None  # 'max'
        assert devices.config.max_items == 1
