"""Blocking Command (XEP-0191): a user's list of JIDs that may not reach them, nor be reached.

Protocol: ``<blocklist/>`` get, ``<block/>`` and ``<unblock/>`` sets (an empty ``<unblock/>``
empties the list), each change pushed to every session of the account that has asked for the list
(§3.2-§3.5). Items are normalised JIDs matched as in §6: ``user@domain/resource`` that resource
only, ``user@domain`` any of its resources, ``domain`` the domain and everything at it. A user's own
resources are never blocked from one another.

Enforcement, on the hot path and synchronous — the lists of online accounts are in memory, loaded
when a session binds (its own stanzas wait for that); a filter that meets an account whose list is
not in memory waits for it (the chain goes on after, in order):

* inbound from a blocked JID (§3.3): presence dropped without a word; a message answered with
  ``service-unavailable``; an IQ get/set answered with ``service-unavailable``, other IQs dropped.
  For an account with no session, offline storage asks (:meth:`Blocking.blocks_stored`) before
  keeping a message, and the list is read from storage.
* outbound to a blocked JID (§3.3, last paragraph): refused with ``not-acceptable`` and
  ``<blocked xmlns='urn:xmpp:blocking:errors'/>``; stanzas the server sends on the user's behalf
  (presence broadcasts to local contacts) are dropped.
* on block, each available resource sends unavailable presence to the blocked contacts that are
  subscribed to the user's presence (§3.3); on unblock, the current presence (§3.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, Final

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.core.session import Session
from roost.jid import JID, JIDError
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.storage.api import MapStore
from roost.xml.element import Element
from roost.xml.ns import CLIENT

BLOCKING: Final = "urn:xmpp:blocking"
BLOCKING_ERRORS: Final = "urn:xmpp:blocking:errors"

Delivery = tuple[Session, StanzaEvent]


class BlockingOptions(ModuleOptions):
    """Options of [blocking]."""

    max_items: int = Field(1000, ge=1, description="Most JIDs one account may block.", examples=[1000])


def blocks(blocklist: frozenset[str], jid: JID) -> bool:
    """Whether an item of ``blocklist`` matches ``jid`` (XEP-0191 §6)."""
    text = str(jid)
    if text in blocklist:
        return True
    if jid.resource is not None and jid.bare_str in blocklist:
        return True
    return jid.domain != text and jid.domain in blocklist


class Blocking(Module):
    """XEP-0191 Blocking Command."""

    name = "blocking"
    xeps = (Xep(191, "1.3"),)
    features = (BLOCKING,)
    Options = BlockingOptions
    options: BlockingOptions

    async def start(self) -> None:
        self.store: MapStore = self.server.storage.map("blocklist")
        #: Lists of accounts with a session, by bare JID (the hot path reads only this).
        self._lists: dict[str, frozenset[str]] = {}
        #: Lists being read from storage, by bare JID (everyone who needs one awaits the same read).
        self._loading: dict[str, asyncio.Future[frozenset[str]]] = {}

    # -- queries for other modules -------------------------------------------------------------------
    def is_blocked(self, user: JID, other: JID) -> bool:
        """Whether ``user`` (a local account with a session) blocks ``other``; False if unknown.

        For modules that send on a user's behalf to places the filters do not see (remote contacts).
        """
        blocklist = self._lists.get(user.bare_str)
        if not blocklist or other.bare_str == user.bare_str:
            return False
        return blocks(blocklist, other)

    # -- loading ---------------------------------------------------------------------------------------
    @hook(hooks.SESSION_BOUND, priority=100)
    def bound(self, event: SessionEvent) -> Awaitable[frozenset[str]] | None:
        """The session's own stanzas wait until its list is in memory."""
        jid = event.session.jid
        if jid.bare_str in self._lists:
            return None
        return self._loaded(jid)

    @hook(hooks.SESSION_CLOSED)
    def closed(self, event: SessionEvent) -> None:
        jid = event.session.jid
        key = jid.bare_str
        if key not in self._loading and not self.server.sessions.is_online(jid.domain, jid.local or ""):
            self._lists.pop(key, None)

    @hook(hooks.USER_DELETED)
    def forget(self, event: UserEvent) -> None:
        self._lists.pop(f"{event.username}@{event.domain}", None)

    async def _loaded(self, jid: JID) -> frozenset[str]:
        """``jid``'s list, read once from storage however many wait for it; kept while it is online."""
        key = jid.bare_str
        future = self._loading.get(key)
        if future is None:
            future = self._loading[key] = asyncio.get_running_loop().create_future()
            try:
                blocklist = await self._read(jid)
            except Exception:
                self.log.exception("cannot load the blocklist of %s; treating it as empty", key)
                blocklist = frozenset()
            finally:
                del self._loading[key]
            blocklist = self._lists.setdefault(key, blocklist)
            if not self.server.sessions.is_online(jid.domain, jid.local or ""):
                self._lists.pop(key, None)
            future.set_result(blocklist)
            return blocklist
        return await asyncio.shield(future)

    async def _read(self, jid: JID) -> frozenset[str]:
        return frozenset(await self.store.items(jid.domain, jid.local or ""))

    async def _current(self, jid: JID) -> frozenset[str]:
        blocklist = self._lists.get(jid.bare_str)
        return blocklist if blocklist is not None else await self._read(jid)

    # -- enforcement: stanzas sent by a local session ---------------------------------------------------
    # First of all filters: nothing else looks at a stanza that is refused, and replaying a held
    # stanza through the whole chain runs no filter twice.
    @hook(hooks.PRE_MESSAGE, priority=10_000)
    @hook(hooks.PRE_PRESENCE, priority=10_000)
    @hook(hooks.PRE_IQ, priority=10_000)
    def outbound(self, event: StanzaEvent) -> StanzaEvent | Awaitable[StanzaEvent | None] | None:
        origin = event.origin
        if origin is None:
            return event
        key = origin.jid.bare_str
        blocklist = self._lists.get(key)
        if blocklist is None:
            return self._outbound_later(origin, event, key)
        return self._check_outbound(origin, event, blocklist, key)

    async def _outbound_later(self, origin: Session, event: StanzaEvent, key: str) -> StanzaEvent | None:
        return self._check_outbound(origin, event, await self._loaded(origin.jid), key)

    def _check_outbound(
        self, origin: Session, event: StanzaEvent, blocklist: frozenset[str], key: str
    ) -> StanzaEvent | None:
        to = event.to
        to_key = to.bare_str
        if to_key == key:
            return event
        if blocklist and blocks(blocklist, to):
            self._refuse(origin, event.stanza)
            return None
        if to.resource is None and event.stanza.name == "iq":
            # An IQ to an account's bare JID is answered by the server on its behalf: no delivery
            # filter sees it, so the account's own list is checked here (if it is online).
            theirs = self._lists.get(to_key)
            if theirs and blocks(theirs, event.frm):
                self._inbound_refused(event, direct=True)
                return None
        return event

    def _refuse(self, origin: Session, stanza: Element) -> None:
        """§3.3: the user tried to reach a JID they block."""
        type_ = stanza.attrs.get("type")
        if type_ == "error" or type_ == "result":
            return  # never an error in reply to an error; an IQ result just goes nowhere
        blocked = Element("blocked", BLOCKING_ERRORS)
        reply = error_reply(stanza, StanzaError("not-acceptable", app=blocked))
        origin.send(reply)

    # -- enforcement: stanzas on their way to a local session -------------------------------------------
    @hook(hooks.DELIVER_MESSAGE, priority=10_000)
    @hook(hooks.DELIVER_PRESENCE, priority=10_000)
    @hook(hooks.DELIVER_IQ, priority=10_000)
    def inbound(self, value: Delivery) -> Delivery | Awaitable[Delivery | None] | None:
        jid = value[0].jid
        key = jid.bare_str
        blocklist = self._lists.get(key)
        if blocklist is None:
            return self._inbound_later(value, key)
        return self._check_inbound(value, blocklist, jid, key)

    async def _inbound_later(self, value: Delivery, key: str) -> Delivery | None:
        jid = value[0].jid
        return self._check_inbound(value, await self._loaded(jid), jid, key)

    def _check_inbound(
        self, value: Delivery, blocklist: frozenset[str], jid: JID, key: str
    ) -> Delivery | None:
        event = value[1]
        frm = event.frm
        frm_key = frm.bare_str
        if frm_key == key:
            return value
        if blocklist and blocks(blocklist, frm):
            self._inbound_refused(event, direct=event.to == jid)
            return None
        # Sent on behalf of a local user who blocks this one (e.g. a presence broadcast). Errors pass:
        # the server answers for the user that way (the service-unavailable of §3.3, for one).
        theirs = self._lists.get(frm_key)
        if theirs and event.stanza.attrs.get("type") != "error" and blocks(theirs, jid):
            return None
        return value

    @hook(hooks.MESSAGE_BARE, priority=300)
    def inbound_message(self, event: StanzaEvent) -> bool:
        """Before anything delivers, copies or stores a message for an online account."""
        key = event.to.bare_str
        blocklist = self._lists.get(key)
        if blocklist and event.frm.bare_str != key and blocks(blocklist, event.frm):
            raise StanzaError("service-unavailable")  # §3.3; the router never answers an error
        return False

    async def blocks_stored(self, user: JID, sender: JID) -> bool:
        """Whether ``user`` blocks ``sender``, read from storage if the account has no session.

        Offline storage asks before keeping a message: nothing from a blocked JID is stored.
        """
        if sender.bare_str == user.bare_str:
            return False
        blocklist = await self._current(user)
        return bool(blocklist) and blocks(blocklist, sender)

    @hook(hooks.PRESENCE_BARE, priority=1000)  # before the presence module acts on it
    def inbound_presence(self, event: StanzaEvent) -> bool:
        """§3.3: presence from a blocked JID (notifications, subscriptions, probes) vanishes."""
        key = event.to.bare_str
        blocklist = self._lists.get(key)
        if not blocklist or event.frm.bare_str == key:
            return False
        return blocks(blocklist, event.frm)

    def _inbound_refused(self, event: StanzaEvent, *, direct: bool) -> None:
        """§3.3: what the blocked sender gets back, so that the user appears offline."""
        stanza = event.stanza
        kind = stanza.name
        type_ = stanza.attrs.get("type")
        if kind == "presence" or type_ == "error":
            return
        if kind == "iq" and type_ != "get" and type_ != "set":
            return
        if kind == "message" and not direct:
            return  # a bare-JID message was answered in the message/bare chain already
        reply = error_reply(stanza, StanzaError("service-unavailable"))
        reply.attrs["to"] = str(event.frm)
        reply.attrs["from"] = str(event.to)
        self.server.router.send(reply)

    # -- protocol --------------------------------------------------------------------------------------
    @iq_handler("get", BLOCKING, "blocklist", to=Target.SELF)
    async def get_blocklist(self, event: StanzaEvent) -> Element:
        """§3.2; the asking session will get pushes from now on."""
        if event.origin is not None:
            event.origin.data["blocking"] = True
        blocklist = await self._current(event.frm.bare)
        result = Element("blocklist", BLOCKING)
        for jid in sorted(blocklist):
            result.add("item", attrs={"jid": jid})
        return result

    @iq_handler("set", BLOCKING, "block", to=Target.SELF)
    async def block(self, event: StanzaEvent) -> None:
        """§3.3."""
        payload = event.stanza.first()
        assert payload is not None
        jids = _items(payload)
        if not jids:
            raise StanzaError("bad-request", "<block/> needs at least one <item/>")
        user = event.frm.bare
        key = user.bare_str
        current = await self._current(user)
        added = [j for j in jids if j not in current]
        if len(current) + len(added) > self.options.max_items:
            raise StanzaError("not-allowed", f"at most {self.options.max_items} JIDs can be blocked")
        if added:
            await self.store.set_many(user.domain, user.local or "", dict.fromkeys(added, True))
            if key in self._lists:
                self._lists[key] = self._lists[key].union(added)
            await self._announce(user, frozenset(added), available=False)
        self._push(user, _payload("block", jids))

    @iq_handler("set", BLOCKING, "unblock", to=Target.SELF)
    async def unblock(self, event: StanzaEvent) -> None:
        """§3.4, and §3.5 for an empty <unblock/>: everything."""
        payload = event.stanza.first()
        assert payload is not None
        jids = _items(payload)
        user = event.frm.bare
        key = user.bare_str
        current = await self._current(user)
        if jids:
            removed = frozenset(j for j in jids if j in current)
            if removed:
                await self.store.set_many(user.domain, user.local or "", dict.fromkeys(removed))
        else:
            removed = current
            await self.store.delete_user(user.domain, user.local or "")
        if removed:
            if key in self._lists:
                self._lists[key] = self._lists[key].difference(removed)
            await self._announce(user, removed, available=True)
        self._push(user, _payload("unblock", jids))

    def _push(self, user: JID, payload: Element) -> None:
        """§3.3-§3.5: to every session of the account that has retrieved the list."""
        for session in self.server.sessions.resources(user.domain, user.local or ""):
            if session.data.get("blocking"):
                iq = Element(
                    "iq",
                    CLIENT,
                    {"type": "set", "id": self.server.iq_tracker.new_id(), "to": session.jid_str},
                )
                iq.append(payload.copy())
                session.send(iq)

    async def _announce(self, user: JID, items: frozenset[str], *, available: bool) -> None:
        """Presence to the contacts ``items`` match who may see the user's presence (§3.3, §3.4).

        Who may: roster items with subscription 'from' or 'both' (needs the roster module).
        """
        roster: Any = self.host.modules.loaded.get("roster")
        if roster is None:
            return
        sessions = [s for s in self.server.sessions.resources(user.domain, user.local or "") if s.available]
        if not sessions:
            return
        entries = await roster.items(user)
        if isinstance(entries, dict):
            entries = entries.values()
        for contact in _subscribers(entries, items):
            for session in sessions:
                if available:
                    if session.presence is None:
                        continue
                    presence = session.presence.shallow_copy()
                    presence.attrs["from"] = session.jid_str
                    presence.attrs["to"] = str(contact)
                    self.server.router.send(presence)
                else:
                    presence = Element(
                        "presence",
                        CLIENT,
                        {
                            "from": session.jid_str,
                            "to": str(contact),
                            "type": "unavailable",
                        },
                    )
                    self._send_unfiltered(presence, contact)

    def _send_unfiltered(self, stanza: Element, to: JID) -> None:
        """Deliver past our own filters (the contact is blocked already)."""
        if to.domain not in self.server.hosts:
            self.server.router.send(stanza)
            return
        if to.resource is not None:
            target = self.server.sessions.get(to)
            if target is not None:
                target.send(stanza)
            return
        for target in self.server.sessions.resources(to.domain, to.local or ""):
            if target.available:
                target.send(stanza)


def _items(payload: Element) -> list[str]:
    """The normalised JIDs of a request's <item/> children, without repeats."""
    jids: dict[str, None] = {}
    for item in payload.elements("item", BLOCKING):
        text = item.attrs.get("jid")
        if not text:
            raise StanzaError("bad-request", "an <item/> needs a 'jid'")
        try:
            jids[str(JID.parse(text))] = None
        except JIDError:
            raise StanzaError("jid-malformed", f"{text[:100]!r} is not a valid JID")
    return list(jids)


def _payload(name: str, jids: list[str]) -> Element:
    element = Element(name, BLOCKING)
    for jid in jids:
        element.add("item", attrs={"jid": jid})
    return element


def _subscribers(entries: Iterable[Any], items: frozenset[str]) -> list[JID]:
    """Roster contacts matched by ``items`` that are subscribed to the user's presence."""
    found = []
    for entry in entries:
        if getattr(entry, "subscription", None) not in ("from", "both"):
            continue
        try:
            contact = JID.parse(str(entry.jid))
        except (JIDError, AttributeError):
            continue
        if blocks(items, contact):
            found.append(contact)
    return found
