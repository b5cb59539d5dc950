"""XEP-0012 Last Activity: the server's uptime (§5) and when an account was last connected (§3).

For an account's bare JID the server answers on the user's behalf: 0 seconds while the account has a
connected resource, otherwise the seconds since its last resource went away and the status text of
that resource's last unavailable presence (kept in the keyvalue store ``last``). Only the user and
contacts allowed to see the user's presence get an answer; others get <forbidden/> (§3, §8: anything
else would leak presence). The same check guards queries to a full JID (§4) before they reach the
client.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from roost.core import hooks
from roost.core.hooks import ServerEvent, SessionEvent, StanzaEvent, UserEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.core.session import Session
from roost.modules.contacts import may_see_presence, peek_roster_item, sees_presence
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.storage.write_behind import WriteBehind
from roost.xml.element import Element
from roost.xml.ns import LAST


class LastActivity(Module):
    """Answers jabber:iq:last queries to the server and to accounts."""

    name = "last"
    xeps = (Xep(12, "2.0"),)
    features = (LAST,)
    account_features = (LAST,)

    async def start(self) -> None:
        #: Logout records are written behind, many in one transaction: a logout costs no storage
        #: round trip of its own.
        self.store = WriteBehind(self.server.storage.keyvalue("last"), "last", self.server.spawn)

    async def stop(self) -> None:
        await self.store.close()

    @iq_handler("get", LAST, "query", to=Target.HOST)
    def uptime(self, event: StanzaEvent) -> Element:
        seconds = int(time.time() - self.server.started_at)
        return Element("query", LAST, {"seconds": str(seconds)})

    @iq_handler("get", LAST, "query", to=Target.ACCOUNT)
    async def account(self, event: StanzaEvent) -> Element:
        user = event.to.bare
        domain, username = user.domain, user.local or ""
        if not await self.server.account_exists(domain, username):
            raise StanzaError("service-unavailable")  # RFC 6121 §8.5.1
        if not await may_see_presence(self.host, user, event.frm):
            raise StanzaError("forbidden", "you may not see this user's presence")  # §3
        if self.server.sessions.is_online(domain, username):
            # §3: with a connected or available resource, an empty <query/> with seconds='0'.
            return Element("query", LAST, {"seconds": "0"})
        record = await self.store.get(domain, username)
        stamp = record.get("time") if isinstance(record, dict) else None
        if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not isinstance(record, dict):
            raise StanzaError("item-not-found", "no activity recorded yet")
        seconds = max(0, int(time.time() - stamp))
        query = Element("query", LAST, {"seconds": str(seconds)})
        status = record.get("status")
        if isinstance(status, str) and status:
            query.children.append(status)
        return query

    # -- recording the last logout ----------------------------------------------------------------------
    @hook(hooks.PRE_PRESENCE)
    def note_status(self, event: StanzaEvent) -> StanzaEvent:
        """Keep the status text of a resource's unavailable broadcast, for its logout record."""
        session = event.origin
        stanza = event.stanza
        if session is not None and "to" not in stanza.attrs:
            type_ = stanza.attrs.get("type")
            if type_ == "unavailable":
                session.data[self.name] = stanza.find_text("status") or ""
            elif type_ is None:
                session.data.pop(self.name, None)
        return event

    @hook(hooks.SESSION_CLOSED)
    def record_logout(self, event: SessionEvent) -> None:
        session = event.session
        domain, username = session.jid.domain, session.jid.local or ""
        if not username or domain != self.host.domain or self.server.sessions.is_online(domain, username):
            return  # another resource is still connected
        status = session.data.get(self.name, "")
        self.store.put(domain, username, {"time": time.time(), "status": str(status)})

    @hook(hooks.SERVER_STOPPING)
    def stopping(self, event: ServerEvent) -> None:
        """Do not make shutdown wait for the batching delay: stop() writes what is pending."""
        self.store.stopping()

    @hook(hooks.USER_DELETED)
    def forget(self, event: UserEvent) -> None:
        self.store.forget(event.domain, event.username)

    # -- queries to a full JID (§4) -----------------------------------------------------------------------
    @hook(hooks.DELIVER_IQ, priority=1000)
    def guard_full_jid(
        self, item: tuple[Session, StanzaEvent]
    ) -> tuple[Session, StanzaEvent] | Awaitable[tuple[Session, StanzaEvent] | None] | None:
        """§4: a query from someone not allowed to see the user's presence never reaches the client."""
        session, event = item
        stanza = event.stanza
        if stanza.attrs.get("type") != "get" or event.to.resource is None:
            return item
        payload = stanza.first()
        if payload is None or payload.name != "query" or payload.ns != LAST:
            return item
        if event.frm.bare == session.jid.bare:
            return item
        known, roster_item = peek_roster_item(self.host, session.jid, event.frm)
        if known:
            if sees_presence(roster_item):
                return item
            self._refuse(event, StanzaError("forbidden", "you may not see this user's presence"))
            return None
        return self._check_full_jid(item)

    async def _check_full_jid(self, item: tuple[Session, StanzaEvent]) -> tuple[Session, StanzaEvent] | None:
        session, event = item
        if await may_see_presence(self.host, session.jid.bare, event.frm):
            return item
        self._refuse(event, StanzaError("forbidden", "you may not see this user's presence"))
        return None

    def _refuse(self, event: StanzaEvent, error: StanzaError) -> None:
        reply = error_reply(event.stanza, error)
        reply.attrs["to"] = str(event.frm)
        reply.attrs["from"] = str(event.to)
        self.server.router.send(reply)
