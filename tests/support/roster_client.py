"""Real slixmpp clients for roster and presence tests: everything received is kept as Roost elements.

:class:`Contact` extends :class:`tests.support.im.Peer` (presences, messages, ``sync``) with the roster
pushes it receives, and turns off slixmpp's automatic answers to subscription requests so that each
test decides what the user does. slixmpp still tracks the roster from pushes (``client.client_roster``),
which checks the server's pushes against a real client's understanding of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from roost.xml.element import Element
from tests.support.clients import connect
from tests.support.im import PASSWORD, Peer, drain, parse
from tests.support.server import RunningServer

NS_ROSTER = "jabber:iq:roster"


class Contact(Peer):
    """A logged-in client that collects presences, messages and roster pushes."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.roster_pushes: asyncio.Queue[Element] = asyncio.Queue()
        client.register_handler(
            Callback(
                "test-roster-push",
                MatchXPath(f"{{jabber:client}}iq/{{{NS_ROSTER}}}query"),
                self._roster_push,
            )
        )
        client.register_handler(
            Callback(
                "test-own-presence",
                MatchXPath("{jabber:client}presence"),
                self._own_presence,
            )
        )
        #: Set when the server echoes this resource's own available presence (RFC 6121 §4.2.2).
        self.echoed = asyncio.Event()
        client.roster.auto_authorize = None  # never answer subscription requests by itself
        client.roster.auto_subscribe = False

    def _own_presence(self, stanza: Any) -> None:
        if str(stanza["from"]) == str(self.client.boundjid) and "type" not in stanza.xml.attrib:
            self.echoed.set()

    def _roster_push(self, stanza: Any) -> None:
        if stanza["type"] == "set":
            self.roster_pushes.put_nowait(parse(str(stanza)))

    def item(self, jid: str) -> dict[str, Any]:
        """slixmpp's view of a roster item (subscription, ask, name, groups, resources)."""
        roster = self.client.client_roster
        if jid not in roster:
            return {}
        entry = roster[jid]
        return {
            "subscription": entry["subscription"],
            "pending_out": entry["pending_out"],
            "name": entry["name"],
            "groups": sorted(entry["groups"]),
            "resources": sorted(entry.resources),
        }

    def drain(self) -> tuple[list[Element], list[Element]]:
        """Everything received so far: (presences, roster pushes); the queues are emptied."""
        return drain(self.presences), drain(self.roster_pushes)

    async def roster(self) -> Element:
        """A roster get through slixmpp (which then knows the roster); the result."""
        result = await self.client.get_roster(timeout=5)
        return parse(str(result))


async def login(
    running: RunningServer,
    jid: str,
    *,
    roster: bool = True,
    available: bool = True,
    priority: int | None = None,
) -> Contact:
    """Log in; by default get the roster, then send initial presence; wait until the server is done."""
    client = await connect(jid, PASSWORD, running.c2s_port, send_presence=False)
    contact = Contact(client)
    if roster:
        await client.get_roster(timeout=5)
    if available:
        contact.presence(priority)
        # The echo of its own presence: what the server delivered before it has arrived too (delivery
        # filters such as blocking may hold a new session's first stanzas; they keep the order).
        await asyncio.wait_for(contact.echoed.wait(), 10)
    await settle([contact])
    return contact


async def settle(contacts: Iterable[Contact], rounds: int = 2) -> None:
    """Ping round trips from every client, twice: whatever was sent before has been delivered."""
    contacts = list(contacts)
    for _ in range(rounds):
        for contact in contacts:
            await contact.sync()


def summary(stanzas: Iterable[Element]) -> list[tuple[str, str | None, str | None]]:
    """(name, from, type) of each stanza, for compact assertions."""
    return [(s.name, s.attrs.get("from"), s.attrs.get("type")) for s in stanzas]


def push_item(push: Element) -> dict[str, str]:
    query = push.find("query", NS_ROSTER)
    assert query is not None
    item = query.find("item", NS_ROSTER)
    assert item is not None
    return dict(item.attrs)
