"""Helpers for MUC integration tests: real slixmpp clients whose every stanza is kept as a Roost Element.

* :class:`MucPeer` wraps a logged-in client (with slixmpp's XEP-0045/0249/0410/0421/0425 plugins
  loaded, so the client behaves like a real MUC client) and collects every message, presence and
  IQ request it receives, in order.
* :meth:`MucPeer.expect` waits for the next stanza matching a predicate (others stay queued);
  :meth:`MucPeer.sync` is a round trip to the server, the barrier that replaces sleeping: the server
  handles a session's stanzas in order, and MUC routing of messages and presence is synchronous, so
  once a sender has synced its stanzas have been delivered, and once a recipient has synced they
  have arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from roost.modules.muc.model import MUC_USER
from roost.xml.element import Element
from tests.support.clients import Client, connect
from tests.support.im import PASSWORD, parse
from tests.support.server import RunningServer

SERVICE = "conference.localhost"
MUC_CONFIG = "\n[muc]\nmessage_rate = 0\n"

Predicate = Callable[[Element], bool]


def codes(stanza: Element) -> set[str]:
    x = stanza.find("x", MUC_USER)
    return set() if x is None else {s.attrs.get("code", "") for s in x.elements("status", MUC_USER)}


def item(stanza: Element) -> Element:
    x = stanza.find("x", MUC_USER)
    assert x is not None, stanza
    found = x.find("item", MUC_USER)
    assert found is not None, stanza
    return found


def room_jid(name: str) -> str:
    return f"{name}@{SERVICE}"


def from_(jid: str, name: str | None = None, type_: str | None = "any") -> Predicate:
    """Stanzas from ``jid`` (and of element ``name``, and of ``type_`` unless "any")."""

    def check(s: Element) -> bool:
        if s.attrs.get("from") != jid or (name is not None and s.name != name):
            return False
        return type_ == "any" or s.attrs.get("type") == type_

    return check


class MucPeer:
    """A logged-in MUC client and what it received."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.inbox: list[Element] = []
        self._arrived = asyncio.Event()
        for plugin in ("xep_0045", "xep_0249", "xep_0410", "xep_0421", "xep_0425", "xep_0004"):
            client.register_plugin(plugin)
        for name in ("message", "presence"):
            client.register_handler(
                Callback(f"muc-test-{name}", MatchXPath(f"{{jabber:client}}{name}"), self._received)
            )

    def _received(self, stanza: Any) -> None:
        self.inbox.append(parse(str(stanza)))
        self._arrived.set()

    @property
    def jid(self) -> str:
        return str(self.client.boundjid)

    @property
    def muc(self) -> Any:
        return self.client.plugin["xep_0045"]

    def send(self, xml: str) -> None:
        self.client.send_raw(xml)

    async def iq(
        self, payload: str, type_: str = "get", to: str | None = None, timeout: float = 5
    ) -> Element:
        """Send an IQ with ``payload``; the reply (result or error)."""
        iq = self.client.make_iq(ito=to, itype=type_)
        iq.append(ET.fromstring(payload))
        try:
            reply = await iq.send(timeout=timeout)
        except IqError as e:
            reply = e.iq
        except IqTimeout:
            raise AssertionError(f"{self.jid}: no answer to {payload}") from None
        return parse(str(reply))

    async def sync(self) -> None:
        await self.client.plugin["xep_0199"].ping("localhost", timeout=5)

    async def _find(self, predicate: Predicate, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, stanza in enumerate(self.inbox):
                if predicate(stanza):
                    return i
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.jid} did not receive the expected stanza; has: {self.dump()}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def expect(self, predicate: Predicate, timeout: float = 5) -> Element:
        """The first queued or arriving stanza matching ``predicate`` (taken off the queue)."""
        return self.inbox.pop(await self._find(predicate, timeout))

    async def until(self, predicate: Predicate, timeout: float = 5) -> list[Element]:
        """Every stanza in arrival order up to and including the first that matches (all taken)."""
        index = await self._find(predicate, timeout)
        taken = self.inbox[: index + 1]
        del self.inbox[: index + 1]
        return taken

    async def nothing(self, predicate: Predicate = lambda s: True) -> None:
        """After a round trip, nothing matching ``predicate`` is queued."""
        await self.sync()
        unexpected = [s for s in self.inbox if predicate(s)]
        assert not unexpected, f"{self.jid} received unexpected {unexpected}"

    def clear(self) -> None:
        self.inbox.clear()

    def dump(self) -> str:
        return "\n  ".join([""] + [repr(s) for s in self.inbox]) if self.inbox else "(nothing)"

    # -- MUC ----------------------------------------------------------------------------------------
    async def join(
        self, room: str, nick: str, *, password: str | None = None, history: str = "", extra: str = ""
    ) -> list[Element]:
        """Send a join; return everything up to the subject message (success) or the error presence."""
        target = f"{room_jid(room)}/{nick}"
        inner = f"<password>{password}</password>" if password is not None else ""
        inner += history
        self.send(
            f"<presence to='{target}' id='join-{nick}'>"
            f"<x xmlns='http://jabber.org/protocol/muc'>{inner}</x>{extra}</presence>"
        )
        received: list[Element] = []
        while True:
            stanza = await self.expect(lambda s: s.attrs.get("from", "").startswith(room_jid(room)))
            received.append(stanza)
            if stanza.name == "presence" and stanza.attrs.get("type") == "error":
                return received
            if (
                stanza.name == "message"
                and stanza.find("subject") is not None
                and stanza.find("body") is None
            ):
                return received

    async def create(self, room: str, nick: str, **config: str | list[str]) -> list[Element]:
        """Create a room and configure it (instant room without ``config``)."""
        joined = await self.join(room, nick)
        assert "201" in codes(joined[-2]), joined
        reply = await self.configure(room, **config)
        assert reply.attrs["type"] == "result", reply
        return joined

    async def configure(self, room: str, **config: str | list[str]) -> Element:
        fields = "".join(
            f"<field var='muc#roomconfig_{k}'>"
            + "".join(f"<value>{v}</value>" for v in ([value] if isinstance(value, str) else value))
            + "</field>"
            for k, value in config.items()
        )
        form = (
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
            f"<value>http://jabber.org/protocol/muc#roomconfig</value></field>{fields}</x>"
        )
        return await self.iq(
            f"<query xmlns='http://jabber.org/protocol/muc#owner'>{form}</query>", "set", room_jid(room)
        )

    async def admin(self, room: str, *items: str) -> Element:
        return await self.iq(
            f"<query xmlns='http://jabber.org/protocol/muc#admin'>{''.join(items)}</query>",
            "set",
            room_jid(room),
        )

    def say(self, room: str, body: str, msg_id: str = "m1") -> None:
        self.send(
            f"<message to='{room_jid(room)}' type='groupchat' id='{msg_id}'><body>{body}</body></message>"
        )

    async def close(self) -> None:
        self.client.disconnect()
        try:
            await asyncio.wait_for(self.client.disconnected_event.wait(), 5)
        except TimeoutError:
            pass


async def login(running: RunningServer, jid: str, *, create: bool = True) -> MucPeer:
    if create:
        local, _, rest = jid.partition("@")
        domain = rest.split("/", 1)[0]
        if not await running.server.storage.accounts.exists(domain, local):
            await running.add_user(f"{local}@{domain}", PASSWORD)
    client = await connect(jid, PASSWORD, running.c2s_port, send_presence=True)
    peer = MucPeer(client)
    await peer.sync()
    return peer


async def close_all(peers: Iterable[MucPeer]) -> None:
    for peer in peers:
        await peer.close()
