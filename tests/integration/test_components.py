"""External components (XEP-0114) with a real slixmpp ComponentXMPP over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server
from tests.support.clients import Client, connect
from tests.support.server import RunningServer

SECRET = "component-secret"
DOMAIN = "bot.localhost"


def write_config(tmp_path: Path, domain: str = DOMAIN, secret: str = SECRET) -> Path:
    """A server for localhost with a c2s and a component listener, and one component."""
    data_dir = tmp_path / "data"
    path = tmp_path / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["localhost"]
data_dir = "{data_dir}"

[[listen]]
kind = "c2s"
address = "127.0.0.1:0"

[[listen]]
kind = "component"
address = "127.0.0.1:0"

[storage]
url = "sqlite:///{data_dir / "roost.db"}"

[components."{domain}"]
secret = "{secret}"
"""
    )
    return path


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = create_server(load_config(write_config(tmp_path)))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class Component(slixmpp.ComponentXMPP):  # type: ignore[misc]
    """A component that records what it receives and when its session starts or ends."""

    def __init__(self, jid: str, secret: str, port: int) -> None:
        super().__init__(jid, secret, "127.0.0.1", port)
        self.started = asyncio.Event()
        self.disconnected_event = asyncio.Event()
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.register_plugin("xep_0030")
        self.add_event_handler("session_start", lambda *_: self.started.set())
        self.add_event_handler("disconnected", lambda *_: self.disconnected_event.set())
        self.add_event_handler("message", self.messages.put_nowait)


async def start_component(server: Server, jid: str = DOMAIN, secret: str = SECRET) -> Component:
    component = Component(jid, secret, server.addresses["component"][1])
    component.connect()
    await asyncio.wait(
        [
            asyncio.ensure_future(component.started.wait()),
            asyncio.ensure_future(component.disconnected_event.wait()),
        ],
        timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )
    return component


async def user(server: Server, name: str) -> Client:
    await RunningServer(server, server.config.server.data_dir).add_user(f"{name}@localhost", "pw")
    return await connect(f"{name}@localhost", "pw", server.addresses["c2s"][1])


async def next_message(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), 10)


async def test_component_and_local_user_exchange_messages(server: Server) -> None:
    component = await start_component(server)
    assert component.started.is_set()
    romeo = await user(server, "romeo")
    try:
        romeo.send_message(mto=f"echo@{DOMAIN}", mbody="hello component", mtype="chat")
        got = await next_message(component.messages)
        assert got["body"] == "hello component"
        assert str(got["from"]).startswith("romeo@localhost/")
        # The component answers from a JID of its own domain; the router delivers it unchanged.
        component.send_message(mto=got["from"], mfrom=f"echo@{DOMAIN}/x", mbody="hello romeo", mtype="chat")
        reply = await next_message(romeo.received)
        assert reply["body"] == "hello romeo" and str(reply["from"]) == f"echo@{DOMAIN}/x"
        # A subdomain of the component's domain is routed to it too.
        romeo.send_message(mto=f"x@sub.{DOMAIN}", mbody="deeper", mtype="chat")
        assert (await next_message(component.messages))["body"] == "deeper"
    finally:
        romeo.disconnect()
        component.disconnect()


async def test_component_is_listed_in_the_servers_disco_items(server: Server) -> None:
    component = await start_component(server)
    romeo = await user(server, "romeo")
    try:
        items = await romeo.plugin["xep_0030"].get_items(jid="localhost", timeout=10)
        jids = {item[0] for item in items["disco_items"]["items"]}
        assert DOMAIN in jids
        # And the component answers disco for itself (an IQ round trip through the link).
        info = await romeo.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        assert info["type"] == "result"
    finally:
        romeo.disconnect()
        component.disconnect()


async def test_wrong_secret_is_refused_and_nothing_is_routed_to_it(server: Server) -> None:
    component = await start_component(server, secret="guess")
    assert not component.started.is_set()
    await asyncio.wait_for(component.disconnected_event.wait(), 10)
    assert server.route_table.component_for(DOMAIN) is None


async def test_unknown_component_domain_is_refused(server: Server) -> None:
    component = await start_component(server, jid="other.localhost")
    assert not component.started.is_set()
    await asyncio.wait_for(component.disconnected_event.wait(), 10)


async def test_a_reconnecting_component_replaces_its_old_link(server: Server) -> None:
    first = await start_component(server)
    assert first.started.is_set()
    second = await start_component(server)
    assert second.started.is_set()
    await asyncio.wait_for(first.disconnected_event.wait(), 10)
    romeo = await user(server, "romeo")
    try:
        romeo.send_message(mto=f"echo@{DOMAIN}", mbody="to the new one", mtype="chat")
        assert (await next_message(second.messages))["body"] == "to the new one"
        assert first.messages.empty()
    finally:
        romeo.disconnect()
        second.disconnect()


async def test_component_sending_from_another_domain_is_disconnected(server: Server) -> None:
    component = await start_component(server)
    romeo = await user(server, "romeo")
    try:
        component.send_message(mto=romeo.boundjid, mfrom="admin@localhost", mbody="spoofed", mtype="chat")
        await asyncio.wait_for(component.disconnected_event.wait(), 10)
        await asyncio.sleep(0.2)
        assert romeo.received.empty()
    finally:
        romeo.disconnect()
