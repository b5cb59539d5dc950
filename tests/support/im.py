"""Helpers for IM tests (messages, offline storage, carbons, blocking) with real slixmpp clients.

* :class:`Peer` wraps a logged-in slixmpp client and collects *everything* it receives (slixmpp's own
  ``message`` event skips messages without a body, such as carbons), as Roost ``Element`` trees, so
  assertions read like the XML in the XEPs.
* :meth:`Peer.sync` is the barrier that replaces sleeping: a ping round trip to the server. The
  server handles a session's stanzas in order and writes to a socket in order, so after a sender's
  sync, its earlier stanzas have been routed; after the recipient's sync, whatever they caused has
  arrived. "Nothing arrived" is then a plain check of an empty queue.
* The ``peers`` fixture (registered for all tests in ``tests/conftest.py``) collects the peers a test
  logs in and closes them at the end.
* :func:`install_presence_shim` stands in for the presence module while it does not exist: initial
  presence makes a session available (with its priority) and fires ``presence/initial``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from roost.core import hooks
from roost.core.hooks import SessionEvent, StanzaEvent
from roost.core.server import Server
from roost.jid import JID
from roost.xml.element import Element
from roost.xml.parser import StreamParser
from tests.support.clients import Client, connect
from tests.support.server import RunningServer

PASSWORD = "s3cret"


def parse(xml: str) -> Element:
    """One stanza (default namespace jabber:client) as a Roost Element."""
    parser = StreamParser(max_stanza_bytes=10_000_000, root=("jabber:client", "wrap"))
    for event in parser.feed(f"<wrap xmlns='jabber:client'>{xml}</wrap>".encode()):
        if isinstance(event, Element):
            return event
    raise AssertionError(f"no element in {xml!r}")


class Peer:
    """A logged-in client and what it received, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.messages: asyncio.Queue[Element] = asyncio.Queue()
        self.presences: asyncio.Queue[Element] = asyncio.Queue()
        self.pushes: asyncio.Queue[Element] = asyncio.Queue()
        self._barriers = 0
        for name, handler in (("message", self._message), ("presence", self._presence)):
            client.register_handler(Callback(f"test-{name}", MatchXPath(f"{{jabber:client}}{name}"), handler))
        for name in ("block", "unblock"):
            client.register_handler(
                Callback(
                    f"test-{name}", MatchXPath(f"{{jabber:client}}iq/{{urn:xmpp:blocking}}{name}"), self._push
                )
            )

    def _message(self, stanza: Any) -> None:
        self.messages.put_nowait(parse(str(stanza)))

    def _presence(self, stanza: Any) -> None:
        self.presences.put_nowait(parse(str(stanza)))

    def _push(self, stanza: Any) -> None:
        self.pushes.put_nowait(parse(str(stanza)))
        stanza.reply().send()

    @property
    def jid(self) -> str:
        return str(self.client.boundjid)

    def send(self, xml: str) -> None:
        self.client.send_raw(xml)

    async def iq(self, payload: str, type_: str = "set", to: str | None = None) -> Element:
        """Send an IQ with this payload; the reply (result or error) as an Element."""
        client: Any = self.client
        iq = client.make_iq(ito=to, itype=type_)
        iq.append(_et(payload))
        try:
            reply = await iq.send(timeout=5)
        except IqError as e:
            reply = e.iq
        return parse(str(reply))

    async def sync(self) -> None:
        """A round trip to the server (see the module docstring)."""
        ping: Any = self.client.plugin["xep_0199"]
        await ping.ping("localhost", timeout=5)

    async def message(self, timeout: float = 5) -> Element:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def push(self, timeout: float = 5) -> Element:
        return await asyncio.wait_for(self.pushes.get(), timeout)

    async def no_message(self) -> None:
        await self.sync()
        assert self.messages.empty(), f"unexpected message: {self.messages.get_nowait()!r}"

    async def until(self, predicate: Callable[[Element], bool], timeout: float = 5) -> list[Element]:
        """Read messages until one matches ``predicate``; those that came before it."""
        before: list[Element] = []
        while True:
            message = await self.message(timeout)
            if predicate(message):
                return before
            before.append(message)

    async def barrier(self, to: str) -> list[Element]:
        """Send ``to`` (a bare JID) a groupchat message, which is always refused, and return what this
        client received before the refusal. Stanzas from one sender to one recipient are handled in
        order even when a module defers them (storage reads, privacy checks), so everything sent to
        ``to`` before has been dealt with by then — including errors it caused."""
        self._barriers += 1
        marker = f"barrier-{self._barriers}"
        self.send(f"<message to='{to}' type='groupchat' id='{marker}'/>")
        return await self.until(lambda m: m.attrs.get("id") == marker and m.attrs.get("type") == "error")

    def presence(self, priority: int | None = None, type_: str | None = None, to: str | None = None) -> None:
        attrs = "".join(f" {k}='{v}'" for k, v in (("type", type_), ("to", to)) if v is not None)
        inner = "" if priority is None else f"<priority>{priority}</priority>"
        self.send(f"<presence{attrs}>{inner}</presence>")

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.wait_for(self.client.disconnected_event.wait(), 5)


def _et(xml: str) -> Any:
    from xml.etree import ElementTree as ET

    return ET.fromstring(xml)


async def login(
    running: RunningServer, jid: str, *, priority: int | None = None, available: bool = True
) -> Peer:
    """Log ``jid`` in; by default send initial presence and wait until the server has handled it."""
    client = await connect(jid, PASSWORD, running.c2s_port, send_presence=False)
    peer = Peer(client)
    await session_ready(running, peer.jid)
    if available:
        peer.presence(priority)
        await peer.sync()
    return peer


async def _session_tasks(running: RunningServer, jid: str, suffix: str) -> None:
    session = running.server.sessions.get(JID.parse(jid))
    assert session is not None, f"{jid} is not bound"
    name = f"{session.id}-{suffix}"
    pending = [t for t in running.server._tasks if t.get_name() == name]
    if pending:
        await asyncio.wait(pending, timeout=5)


async def session_ready(running: RunningServer, jid: str) -> None:
    """Wait until the modules' ``session/bound`` handlers for ``jid`` are done (rosters and settings
    loaded), as a real client's first few round trips usually do: tests then see steady-state
    behaviour, not a race with those loads."""
    await _session_tasks(running, jid, "bound")


async def initial_presence_done(running: RunningServer, jid: str) -> None:
    """Wait until the ``presence/initial`` handlers for ``jid`` (offline delivery) are done."""
    await _session_tasks(running, jid, "initial")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5) -> None:
    """Wait until ``check()`` holds (for effects of deferred work, such as a stored message)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def drain(queue: asyncio.Queue[Element]) -> list[Element]:
    """Everything in ``queue`` now, in order; the queue is emptied."""
    found = []
    while not queue.empty():
        found.append(queue.get_nowait())
    return found


async def add_users(running: RunningServer, *names: str) -> None:
    for name in names:
        await running.add_user(f"{name}@localhost", PASSWORD)


async def close_all(peers: Iterable[Peer]) -> None:
    for peer in peers:
        try:
            await peer.close()
        except TimeoutError:
            pass


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """A list for the test to put its logged-in peers in; they are all closed at the end."""
    opened: list[Peer] = []
    yield opened
    await close_all(opened)


def install_presence_shim(server: Server) -> None:
    """Availability and ``presence/initial`` from a client's own presence, if no presence module is
    loaded (RFC 6121 §4.2 in its barest form: no broadcast, no probes)."""
    for host in server.hosts.values():
        if not host.has_accounts or "presence" in host.modules.loaded:
            continue
        bus = host.bus

        def own_presence(event: StanzaEvent, bus: Any = bus) -> bool:
            origin = event.origin
            stanza = event.stanza
            if origin is None or "to" in stanza.attrs:
                return False
            type_ = stanza.attrs.get("type")
            if type_ is None:
                was_reachable = origin.available and origin.priority >= 0
                origin.available = True
                origin.priority = int(stanza.find_text("priority") or 0)
                origin.presence = stanza
                if not was_reachable and origin.priority >= 0:
                    initial = bus.fire(hooks.PRESENCE_INITIAL, SessionEvent(origin))
                    server.spawn(initial, f"{origin.id}-initial")
            elif type_ == "unavailable":
                origin.available = False
                origin.presence = None
            return True

        bus.on(hooks.PRESENCE_BARE, own_presence, priority=-1000)


@dataclass
class FakeRosterItem:
    jid: str
    subscription: str


class FakeRoster:
    """Enough of the roster module's API for blocking's presence rules (items with subscriptions)."""

    def __init__(self, items: dict[str, list[FakeRosterItem]]) -> None:
        self._items = items

    async def items(self, user: Any) -> list[FakeRosterItem]:
        return self._items.get(str(user), [])

    async def get_item(self, user: Any, contact: Any) -> FakeRosterItem | None:
        for item in self._items.get(str(user), []):
            if item.jid == str(contact):
                return item
        return None
