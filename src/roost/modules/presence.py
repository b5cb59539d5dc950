"""RFC 6121 §3 and §4: presence subscriptions (the state machine of Appendix A) and presence exchange.

The RFC describes every subscription stanza twice: *outbound* processing at the sender's server and
*inbound* processing at the recipient's. Both halves are kept apart here even though both parties are
local today, so that server-to-server links can feed remote stanzas into the inbound half unchanged:

* outbound — stanzas from a local session. The ``pre/presence`` filter takes subscription stanzas (and
  client probes of full JIDs) out of the chain and handles them itself, returning an awaitable so that
  the session's later stanzas wait for it (RFC 6120 §10.1): :meth:`Presence._outbound` updates the
  sender's roster (Appendix A.2, pre-approvals §3.4) and routes the stanza, stamped with the bare JID
  (§3 implementation note), towards the contact. Broadcast presence (no 'to') is handled in the
  ``presence/bare`` chain: to subscribers (from/both), to the user's own available resources, and on
  initial presence the contacts' presence comes back (probes, §4.3).
* inbound — presence addressed to a local account (``presence/bare`` and ``presence/full`` chains):
  Appendix A.3 for subscription stanzas, §4.3.2 for probes, §8.5.2.1.2 delivery for the rest.

Rosters of online users are in memory (see :mod:`roost.modules.roster`), so the common cases run without
a coroutine; a synchronous handler declines what needs storage and an async one right after it does it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Iterable, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import ServerEvent, SessionEvent, StanzaEvent, UserEvent
from roost.core.modules import Module, hook
from roost.core.session import Session
from roost.jid import JID
from roost.modules.roster import Roster, RosterFull, RosterItem, UserRoster
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.storage.write_behind import WriteBehind
from roost.util.bounded import BoundedDict
from roost.util.datetime import format_datetime
from roost.xml.element import Element
from roost.xml.ns import CLIENT, DELAY
from roost.xml.serializer import serialize

if TYPE_CHECKING:
    from roost.core.host import Host

#: RFC 6121 §3.4 stream feature: subscription pre-approval is supported.
NS_PREAPPROVAL: Final = "urn:xmpp:features:pre-approval"
SUBSCRIPTION_TYPES: Final = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))
_PRIORITY = re.compile(r"[+-]?[0-9]{1,4}")
#: Largest subscription request stored whole (bytes); a bigger one is kept without its children.
MAX_STORED_REQUEST: Final = 8192
#: Accounts whose last unavailable time is kept in memory (older ones are read from storage).
LAST_UNAVAILABLE_CACHE_SIZE: Final = 100_000


# -- the subscription state machine (pure) --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Outcome:
    """What a subscription stanza does: route/deliver it, whether the state changed, an auto-reply."""

    forward: bool
    changed: bool
    reply: str | None = None


_WITH_TO: Final = {"none": "to", "from": "both", "to": "to", "both": "both"}
_WITHOUT_TO: Final = {"to": "none", "both": "from", "none": "none", "from": "from"}
_WITH_FROM: Final = {"none": "from", "to": "both", "from": "from", "both": "both"}
_WITHOUT_FROM: Final = {"from": "none", "both": "to", "none": "none", "to": "to"}


def outbound(type_: str, item: RosterItem) -> Outcome:
    """RFC 6121 Appendix A.2 (with §3.4 pre-approval): the user sends ``type_`` to the contact.

    Updates ``item`` (the user's state for the contact) in place; ``forward`` says whether to route.
    """
    if type_ == "subscribe":  # Table 2: always routed; "pending out" unless already subscribed
        if item.has_to or item.ask:
            return Outcome(True, False)
        item.ask = True
        return Outcome(True, True)
    if type_ == "unsubscribe":  # Table 3: always routed
        changed = item.ask or item.has_to
        item.ask = False
        item.subscription = _WITHOUT_TO[item.subscription]
        return Outcome(True, changed)
    if type_ == "subscribed":  # Table 4
        if item.pending_in:  # an approval
            item.pending_in = False
            item.pending_stanza = None
            item.approved = False
            item.subscription = _WITH_FROM[item.subscription]
            return Outcome(True, True)
        if item.has_from:
            return Outcome(False, False)
        changed = not item.approved  # §3.4.2 rules 3 and 4: a pre-approval, not routed
        item.approved = True
        return Outcome(False, changed)
    if type_ == "unsubscribed":  # Table 5
        if item.pending_in or item.has_from:  # a denial or a cancellation
            item.pending_in = False
            item.pending_stanza = None
            item.approved = False
            item.subscription = _WITHOUT_FROM[item.subscription]
            return Outcome(True, True)
        changed = item.approved  # §3.2.2 rule 2: cancels a pre-approval, not routed
        item.approved = False
        return Outcome(False, changed)
    raise ValueError(f"not a subscription type: {type_!r}")


def inbound(type_: str, item: RosterItem) -> Outcome:
    """RFC 6121 Appendix A.3: the contact's ``type_`` arrives for the user (``item``: the user's state).

    ``forward`` says whether to deliver it to the user, ``reply`` is the auto-reply to send back.
    """
    if type_ == "subscribe":  # Table 6
        if item.has_from:
            return Outcome(False, False, "subscribed")  # [2]
        if item.approved:  # [1] and §3.4.2: pre-approved, answered on the user's behalf
            item.approved = False
            item.subscription = _WITH_FROM[item.subscription]
            return Outcome(False, True, "subscribed")
        if item.pending_in:
            return Outcome(False, False)
        item.pending_in = True
        return Outcome(True, True)
    if type_ == "unsubscribe":  # Table 7
        if item.pending_in or item.has_from:
            item.pending_in = False
            item.pending_stanza = None
            item.subscription = _WITHOUT_FROM[item.subscription]
            return Outcome(True, True, "unsubscribed")
        return Outcome(False, False)
    if type_ == "subscribed":  # Table 8
        if item.ask:
            item.ask = False
            item.subscription = _WITH_TO[item.subscription]
            return Outcome(True, True)
        return Outcome(False, False)
    if type_ == "unsubscribed":  # Table 9
        if item.ask or item.has_to:
            item.ask = False
            item.subscription = _WITHOUT_TO[item.subscription]
            return Outcome(True, True)
        return Outcome(False, False)
    raise ValueError(f"not a subscription type: {type_!r}")


# -- events and per-session state ----------------------------------------------------------------------------
class SessionPresence:
    """Presence state of one session beyond what :class:`Session` holds."""

    __slots__ = ("directed",)

    def __init__(self) -> None:
        #: Entities this session sent available directed presence to and has not since made
        #: unavailable (RFC 6121 §4.6): they get unavailable presence when the session goes.
        self.directed: set[JID] = set()


def _state(session: Session, create: bool = False) -> SessionPresence | None:
    state = session.data.get("presence")
    if state is None and create:
        state = session.data["presence"] = SessionPresence()
    return state


def parse_priority(stanza: Element) -> int:
    """The <priority/> of an available presence (RFC 6121 §4.7.2.3): -128..127, 0 if absent."""
    found = list(stanza.elements("priority", stanza.ns))
    if not found:
        return 0
    if len(found) > 1:
        raise StanzaError("bad-request", "a presence carries at most one <priority/>")
    text = found[0].text.strip()
    if not _PRIORITY.fullmatch(text) or not -128 <= int(text) <= 127:
        raise StanzaError("bad-request", "<priority/> is an integer from -128 to 127")
    return int(text)


class PresenceOptions(ModuleOptions):
    """Options of [presence]."""

    max_pending_requests: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Inbound subscription requests stored per account from people not in its roster "
        "(RFC 6121 §3.1.3 security warning); requests past it are dropped.",
    )
    max_directed: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Entities one session can send directed presence to and have it undone with "
        "unavailable presence when the session ends (RFC 6121 §4.6).",
    )


class Presence(Module):
    """Presence subscriptions, broadcast, probes, directed presence and unavailable-on-close."""

    name = "presence"
    Options = PresenceOptions
    options: PresenceOptions

    def __init__(self, host: Host, options: ModuleOptions) -> None:
        super().__init__(host, options)
        #: Username → time its last available resource went away (answers probes, §4.3.2 rule 3).
        self._last_unavailable: BoundedDict[str, float] = BoundedDict(LAST_UNAVAILABLE_CACHE_SIZE)

    async def start(self) -> None:
        roster = self.host.modules.loaded.get("roster")
        if not isinstance(roster, Roster):
            raise RuntimeError("the presence module needs the roster module (load it first)")
        self.roster: Roster = roster
        #: When each account's last resource went unavailable, written behind (one transaction for
        #: a burst of logouts, none of its own per logout).
        self.store = WriteBehind(self.server.storage.keyvalue("presence"), "presence", self.server.spawn)

    async def stop(self) -> None:
        await self.store.close()

    @hook(hooks.SERVER_STOPPING)
    def stopping(self, event: ServerEvent) -> None:
        self.store.stopping()  # shutdown does not wait for the batching delay; stop() writes

    @hook(hooks.USER_DELETED)
    def forget(self, event: UserEvent) -> None:
        if event.domain == self.host.domain:
            self._last_unavailable.pop(event.username, None)
            self.store.forget(event.domain, event.username)

    def stream_features(self) -> tuple[Element, ...]:
        return (Element("sub", NS_PREAPPROVAL),)

    # -- helpers ------------------------------------------------------------------------------------------
    def _is_account_domain(self, domain: str) -> bool:
        host = self.server.hosts.get(domain)
        return host is not None and host.has_accounts

    def _roster_module(self, domain: str) -> Roster | None:
        host = self.server.hosts.get(domain)
        module = host.modules.loaded.get("roster") if host is not None else None
        return module if isinstance(module, Roster) else None

    def _presence_module(self, domain: str) -> Presence | None:
        host = self.server.hosts.get(domain)
        module = host.modules.loaded.get("presence") if host is not None else None
        return module if isinstance(module, Presence) else None

    def _sessions(self, user: JID) -> list[Session]:
        return self.server.sessions.resources(user.domain, user.local or "")

    def _available(self, user: JID) -> list[Session]:
        return [s for s in self.server.sessions.resources(user.domain, user.local or "") if s.available]

    def _send(self, stanza: Element) -> None:
        """Route a stanza this server generates (its storage work, if any, runs in the background)."""
        self.server.router.send(stanza)

    def _deliver(self, sessions: Iterable[Session], stanza: Element, frm: JID) -> None:
        """A copy of ``stanza`` to each session, through the ``deliver/presence`` filters."""
        router = self.server.router
        to = JID.parse(stanza.attrs["to"])
        for session in sessions:
            router.to_session(session, StanzaEvent(stanza.shallow_copy(), None, to, frm))

    def _error(self, session: Session, stanza: Element, error: StanzaError) -> None:
        if stanza.attrs.get("type") == "error":
            return
        reply = error_reply(stanza, error)
        reply.attrs["to"] = session.jid_str
        session.send(reply)

    # -- outbound: the pre/presence filter --------------------------------------------------------------
    @hook(hooks.PRE_PRESENCE, priority=-100)
    def outbound_filter(self, event: StanzaEvent) -> StanzaEvent | Awaitable[None] | None:
        """Stanzas from local sessions, after other filters (blocking, privacy) have had their say."""
        session = event.origin
        if session is None:
            return event
        stanza = event.stanza
        type_ = stanza.attrs.get("type")
        if type_ is None or type_ == "unavailable":
            if "to" in stanza.attrs and event.to.bare != session.jid.bare:
                self._track_directed(session, event.to, type_ is None)
            return event
        if type_ in SUBSCRIPTION_TYPES:
            if "to" not in stanza.attrs or event.to.bare == session.jid.bare:
                return None  # about one's own presence: an account is implicitly subscribed to itself
            # §3.1.2 rule 1: a full JID is treated as the bare JID.
            return self._outbound(session, stanza, event.to.bare)
        if type_ == "probe" and event.to.resource is not None and self._is_account_domain(event.to.domain):
            # A probe of a local full JID would otherwise reach the client; the server answers it (§4.3).
            return self._outbound(session, stanza, event.to)
        return event

    def _track_directed(self, session: Session, target: JID, available: bool) -> None:
        """RFC 6121 §4.6.3: remember who got directed presence, forget who got directed unavailable."""
        state = _state(session, create=available)
        if state is None:
            return
        if not available:
            state.directed.discard(target)
        elif len(state.directed) < self.options.max_directed:
            state.directed.add(target)
        else:
            session.log.warning("not tracking directed presence to %s: over max_directed", target)

    # -- presence/bare: broadcast, outbound events, inbound --------------------------------------------------
    @hook(hooks.PRESENCE_BARE, priority=-100)
    def on_bare(self, event: StanzaEvent) -> bool:
        """The synchronous cases; declines (False) what needs storage, for :meth:`on_bare_async`."""
        stanza = event.stanza
        type_ = stanza.attrs.get("type")
        session = event.origin
        if session is not None and "to" not in stanza.attrs:
            # Broadcast presence from a local session (RFC 6121 §4.2, §4.4, §4.5).
            if type_ is None or type_ == "unavailable":
                roster = self.roster.cached(session.jid.bare)
                if roster is None:
                    return False
                self._broadcast(session, stanza, roster)
                return True
            if type_ == "probe":  # of its own account
                return self._probe(event)
            return True  # an error to nobody
        if type_ is None or type_ == "unavailable" or type_ == "error":
            self._deliver_inbound(event)
            return True
        if type_ == "probe":
            return self._probe(event)
        if type_ in SUBSCRIPTION_TYPES:
            to = event.to
            roster = self.roster.cached(to)
            if roster is None or not self.server.sessions.is_online(to.domain, to.local or ""):
                return False  # offline: the account may not exist, the roster is in storage
            self._inbound_subscription(roster, event)
            return True
        return True

    @hook(hooks.PRESENCE_BARE, priority=-101)
    async def on_bare_async(self, event: StanzaEvent) -> bool:
        """What :meth:`on_bare` declined: the same work after loading what it needs."""
        stanza = event.stanza
        type_ = stanza.attrs.get("type")
        session = event.origin
        if session is not None and "to" not in stanza.attrs:
            roster = await self.roster.load(session.jid.bare)
            if self.server.sessions.get(session.jid) is session:  # else SESSION_CLOSED did the rest
                self._broadcast(session, stanza, roster)
            return True
        if type_ == "probe":
            await self.inbound_probe(event)
        elif type_ in SUBSCRIPTION_TYPES:
            await self.inbound_subscription(event)
        return True

    @hook(hooks.PRESENCE_FULL, priority=-100)
    async def on_full(self, event: StanzaEvent) -> bool:
        """Presence to a full JID that has no session (RFC 6121 §8.5.3.2.2)."""
        type_ = event.stanza.attrs.get("type")
        if type_ == "subscribe":  # treated as sent to the bare JID (§3.1.3)
            stanza = event.stanza.shallow_copy()
            stanza.attrs["to"] = str(event.to.bare)
            await self.inbound_subscription(StanzaEvent(stanza, event.origin, event.to.bare, event.frm))
            return True
        if type_ == "probe":
            await self.inbound_probe(event)
            return True
        return False  # available/unavailable/other subscription types: ignored

    # -- broadcast (outbound, RFC 6121 §4.2.2, §4.4.2, §4.5.2) -----------------------------------------------
    def _broadcast(
        self, session: Session, stanza: Element, roster: UserRoster, *, closing: bool = False
    ) -> None:
        type_ = stanza.attrs.get("type")
        user = session.jid.bare
        initial = reachable = False
        if type_ is None:
            try:
                priority = parse_priority(stanza)
            except StanzaError as e:
                self._error(session, stanza, e)
                return
            initial = not session.available
            # presence/initial: now available with priority >= 0, and was not (XEP-0160 delivery).
            reachable = priority >= 0 and (initial or session.priority < 0)
            session.available = True
            session.priority = priority
            session.presence = stanza
        else:
            if not session.available:
                # Not in a presence session (§4.6.3 rule 3): only directed presence to undo.
                self._undo_directed(session, stanza, frozenset())
                return
            session.available = False
            session.priority = 0
            session.presence = None
        subscribers = roster.subscribers()
        online = self.server.sessions.is_online
        # Nobody there to deliver to on our own domains (§8.5.2.2.2); the router's fan-out does the rest.
        self.server.router.fanout(
            stanza,
            [
                c
                for c in subscribers
                if not self._is_account_domain(c.domain) or online(c.domain, c.local or "")
            ],
            session.jid,
        )
        # The user's own available resources, this one included (an account is subscribed to itself).
        own = self._available(user)
        if not closing and session not in own:
            own.append(session)
        echo = stanza.shallow_copy()
        echo.attrs["to"] = str(user)
        self._deliver(own, echo, session.jid)
        if initial:
            self._initial(session, roster)
        if reachable and self.host.bus.has_handlers(hooks.PRESENCE_INITIAL):
            self.server.spawn(
                self.host.bus.fire(hooks.PRESENCE_INITIAL, SessionEvent(session)), f"{session.id}-initial"
            )
        if type_ == "unavailable":
            self._undo_directed(session, stanza, subscribers)
            if not self._available(user):
                self._went_offline(user)

    def _initial(self, session: Session, roster: UserRoster) -> None:
        """A new presence session: what the new resource needs to learn (§4.2.2, §4.3.1, §3.1.3)."""
        user = session.jid.bare
        others = [s for s in self._available(user) if s is not session]
        # The user's other resources (implicit self-subscription).
        for other in others:
            if other.presence is not None:
                self._deliver_presence_of(other, session)
        # Contacts' presence (§4.3.1). Local contacts need no probe stanza (the server knows).
        for contact in roster.subscriptions():
            if not self._local_probe(contact, session):
                probe = Element(
                    "presence",
                    CLIENT,
                    {
                        "type": "probe",
                        "from": str(user),
                        "to": str(contact),
                        "id": self.server.iq_tracker.new_id(),
                    },
                )
                self._send(probe)
        if not others:
            # §3.1.2: resend pending requests to remote contacts, whose servers may have lost them.
            for item in roster.items():
                if item.ask and not self._is_account_domain(item.jid.domain):
                    self._send(
                        Element(
                            "presence",
                            CLIENT,
                            {
                                "type": "subscribe",
                                "from": str(user),
                                "to": str(item.jid),
                                "id": self.server.iq_tracker.new_id(),
                            },
                        )
                    )
        # §3.1.3 rule 4: stored subscription requests, to every new available resource until answered.
        router = self.server.router
        for pending in roster.pending_requests():
            request = pending.pending_stanza
            if request is None:
                request = Element("presence", CLIENT, {"type": "subscribe", "from": str(pending.jid)})
            request = request.copy()
            request.attrs["to"] = str(user)
            router.to_session(session, StanzaEvent(request, None, user, pending.jid))

    def _deliver_presence_of(self, source: Session, target: Session) -> None:
        assert source.presence is not None
        copy = source.presence.shallow_copy()
        copy.attrs["from"] = source.jid_str
        copy.attrs["to"] = target.jid_str
        self.server.router.to_session(target, StanzaEvent(copy, None, target.jid, source.jid))

    def _local_probe(self, contact: JID, session: Session) -> bool:
        """Answer the probe of a local ``contact`` for ``session`` directly; False if a probe must go."""
        if not self._is_account_domain(contact.domain):
            return False
        available = self._available(contact)
        if not available:
            return True  # unavailable is what the client assumes anyway (§4.3.1: no probe needed)
        roster_module = self._roster_module(contact.domain)
        contact_roster = roster_module.cached(contact) if roster_module is not None else None
        if contact_roster is None:
            return False  # let the probe do it
        item = contact_roster.item(session.jid.bare)
        if item is None or not item.has_from:
            return False  # out of sync: the probe's <unsubscribed/> answer resynchronises (§4.3.2 rule 1)
        for source in available:
            if source.presence is not None:
                self._deliver_presence_of(source, session)
        return True

    def _undo_directed(self, session: Session, stanza: Element, subscribers: Set[JID]) -> None:
        """§4.6.3 rule 2: directed presence recipients that got no broadcast get the unavailable."""
        state = _state(session)
        if state is None or not state.directed:
            return
        for target in state.directed:
            if target.bare in subscribers:
                continue
            copy = stanza.shallow_copy()
            copy.attrs["from"] = session.jid_str
            copy.attrs["to"] = str(target)
            self._send(copy)
        state.directed.clear()

    def _went_offline(self, user: JID) -> None:
        now = time.time()
        self._last_unavailable[user.local or ""] = now
        self.store.put(user.domain, user.local or "", {"unavailable": now})

    # -- session end (§4.5.2: unavailable whatever the reason) -----------------------------------------------
    @hook(hooks.SESSION_CLOSED, priority=10)
    async def session_closed(self, event: SessionEvent) -> None:
        session = event.session
        unavailable = Element("presence", CLIENT, {"type": "unavailable", "from": session.jid_str})
        if not session.available:
            self._undo_directed(session, unavailable, frozenset())
            return
        user = session.jid.bare
        roster = self.roster.cached(user)
        if roster is None:
            roster = await self.roster.load(user)
        successor = self.server.sessions.get(session.jid)
        if successor is not None and successor.available:
            # Replaced by a new session on the same resource that is already available: contacts must
            # not see that resource go. Only its own directed presence is undone.
            session.available = False
            state = _state(session)
            theirs = _state(successor)
            if state is not None and theirs is not None:
                state.directed -= theirs.directed
            self._undo_directed(session, unavailable, frozenset())
        else:
            self._broadcast(session, unavailable, roster, closing=True)
        self.roster.release(user)

    # -- inbound delivery of available/unavailable/error (§8.5.2.1.2, §4.6.1) --------------------------------
    def _deliver_inbound(self, event: StanzaEvent) -> None:
        to = event.to
        stanza = event.stanza
        sessions = self._sessions(to)
        if not sessions:
            return  # §8.5.2.2.2 / §8.5.1: silently ignored
        if "to" not in stanza.attrs:
            stanza.attrs["to"] = str(to)
        targets = [s for s in sessions if s.available]
        if targets:
            self._deliver(targets, stanza, event.frm)
        if stanza.attrs.get("type") == "unavailable":
            # §4.6.1: whoever sends us unavailable presence no longer needs ours.
            for session in sessions:
                state = _state(session)
                if state is not None and state.directed:
                    state.directed.discard(event.frm)
                    state.directed.discard(event.frm.bare)

    # -- inbound subscription stanzas (Appendix A.3) ---------------------------------------------------------
    async def inbound_subscription(self, event: StanzaEvent) -> None:
        """Entry point for subscription stanzas to a local bare JID from anywhere (s2s included)."""
        to = event.to.bare
        if to.local is None:
            return
        roster = self.roster.cached(to)
        if roster is None or not self.server.sessions.is_online(to.domain, to.local):
            if not await self.server.account_exists(to.domain, to.local):
                return  # §8.5.1: silently ignored
            roster = await self.roster.load(to)
        try:
            self._inbound_subscription(roster, event)
        finally:
            self.roster.release(to)

    def _inbound_subscription(self, roster: UserRoster, event: StanzaEvent) -> None:
        stanza = event.stanza
        type_ = stanza.attrs["type"]
        local = roster.user
        peer = event.frm.bare
        if peer == local:
            return
        state = roster.state(peer)
        in_roster = roster.in_roster(peer)
        had_from = state.has_from
        outcome = inbound(type_, state)
        if type_ == "subscribe":
            if outcome.forward:  # a new request: stored (§3.1.3 rule 4) and delivered (rule 3)
                if not in_roster and self._pending_count(roster) >= self.options.max_pending_requests:
                    self.log.info("dropping subscription request to %s: too many pending", local)
                    return
                request = stanza.copy()
                request.attrs["to"] = str(local)
                stored = request
                if len(serialize(request)) > MAX_STORED_REQUEST:
                    # §3.1.3 security warning: bounded storage; the request itself is what matters.
                    stored = Element(request.name, request.ns, dict(request.attrs))
                state.pending_stanza = stored
                self.roster.save(roster, state, in_roster=in_roster)
                self._deliver(self._available(local), request, peer)
            elif outcome.reply is not None:
                if outcome.changed:  # pre-approved (§3.4)
                    self.roster.save(roster, state, in_roster=True)
                self._reply(local, peer, outcome.reply, stanza)
                self._send_current_presence(local, peer)
            return
        if not outcome.changed:
            return  # "S.N." rows: not delivered, nothing changes
        # Delivered before the roster push (§3.1.6, §3.2.3, §3.3.3 rule 1) to the interested resources;
        # a withdrawn request from someone not in the roster goes where the request went.
        delivery = stanza.shallow_copy()
        delivery.attrs["to"] = str(local)
        targets = self.roster.interested(local) if in_roster else self._available(local)
        self._deliver(targets, delivery, peer)
        self.roster.save(roster, state, in_roster=in_roster)
        if type_ == "unsubscribe":
            if had_from:
                # §3.3.3 rule 3: the unsubscribed user no longer sees us.
                for session in self._available(local):
                    self._send(
                        Element(
                            "presence",
                            CLIENT,
                            {
                                "type": "unavailable",
                                "from": session.jid_str,
                                "to": str(peer),
                            },
                        )
                    )
            if outcome.reply is not None:
                self._reply(local, peer, outcome.reply, None)  # A.3.2: SHOULD auto-reply

    @staticmethod
    def _pending_count(roster: UserRoster) -> int:
        return sum(1 for e in roster.entries.values() if e.item.pending_in and not e.in_roster)

    def _reply(self, local: JID, peer: JID, type_: str, to_stanza: Element | None) -> None:
        """An auto-reply on the local user's behalf, from its bare JID (§3.1.3 rule 2)."""
        reply = Element("presence", CLIENT, {"type": type_, "from": str(local), "to": str(peer)})
        if to_stanza is not None and "id" in to_stanza.attrs:
            reply.attrs["id"] = to_stanza.attrs["id"]
        self._send(reply)

    def _send_current_presence(self, local: JID, peer: JID) -> None:
        """§3.1.5: after approving, the new subscriber gets the user's presence, per available resource."""
        for session in self._available(local):
            if session.presence is not None:
                copy = session.presence.shallow_copy()
                copy.attrs["from"] = session.jid_str
                copy.attrs["to"] = str(peer)
                self._send(copy)

    # -- outbound subscription stanzas (Appendix A.2) --------------------------------------------------------
    async def _outbound(self, session: Session, stanza: Element, target: JID) -> None:
        """A subscription stanza or probe from a local session, taken out of the ``pre/presence``
        chain (None: the router has nothing more to do with it)."""
        type_ = stanza.attrs["type"]
        if type_ == "probe":
            owner = self._presence_module(target.domain)
            if owner is not None:
                await owner.inbound_probe(StanzaEvent(stanza, session, target, session.jid))
            return None
        user = session.jid.bare
        contact = target
        if type_ == "subscribe":
            error = await self._undeliverable(contact)
            if error is not None:
                # §3.1.2: a request that cannot be delivered is answered with an error, state unchanged.
                self._error(session, stanza, error)
                return
        roster = self.roster.cached(user) or await self.roster.load(user)
        # From here to the routing there is no await: the roster object stays current.
        state = roster.state(contact)
        in_roster = roster.in_roster(contact)
        had_from = state.has_from
        outcome = outbound(type_, state)
        out = Element("presence", stanza.ns, dict(stanza.attrs), list(stanza.children))
        out.attrs["from"] = str(user)  # RFC 6121 §3 implementation note: bare JID
        out.attrs["to"] = str(contact)
        if type_ == "unsubscribed" and outcome.forward and had_from:
            # §3.2.2: unavailable from every resource while the contact is still subscribed.
            for source in self._available(user):
                self._send(
                    Element(
                        "presence",
                        CLIENT,
                        {
                            "type": "unavailable",
                            "from": source.jid_str,
                            "to": str(contact),
                        },
                    )
                )
        if outcome.changed:
            keep = in_roster or type_ == "subscribe" or type_ == "subscribed"
            try:
                self.roster.save(roster, state, in_roster=keep)
            except RosterFull as e:
                self._error(session, stanza, e)
                return
        if outcome.forward:
            pending = self.server.router.route(out)
            if pending is not None:
                await pending
            if type_ == "subscribed":
                self._send_current_presence(user, contact)  # §3.1.5

    async def _undeliverable(self, contact: JID) -> StanzaError | None:
        """Why a subscription request to ``contact`` cannot be delivered, if it cannot (§3.1.2)."""
        domain = contact.domain
        if self._is_account_domain(domain):
            if contact.local is None or not await self.server.account_exists(domain, contact.local):
                return StanzaError("item-not-found", "no such account")
            return None
        if self.server.route_table.is_routable(domain):
            return None  # served here, a component, or federation (a link being dialled counts)
        return StanzaError("remote-server-not-found", f"cannot reach {domain}")

    # -- probes (§4.3.2, §4.6.6) -----------------------------------------------------------------------------
    def _probe(self, event: StanzaEvent) -> bool:
        """Answer synchronously if everything is in memory; False otherwise."""
        contact = event.to.bare
        roster = self.roster.cached(contact)
        if event.frm.bare != contact and (
            roster is None or not self.server.sessions.is_online(contact.domain, contact.local or "")
        ):
            return False
        self._answer_probe(event, roster, self._last_unavailable.get(contact.local or ""))
        return True

    async def inbound_probe(self, event: StanzaEvent) -> None:
        """Entry point for probes of a local account (bare or full JID) from anywhere (s2s included)."""
        contact = event.to.bare
        if contact.local is None:
            return
        exists = (
            event.frm.bare == contact
            or self.server.sessions.is_online(contact.domain, contact.local)
            or await self.server.account_exists(contact.domain, contact.local)
        )
        last = self._last_unavailable.get(contact.local)
        if exists and last is None and not self._available(contact):
            record = await self.store.get(contact.domain, contact.local)
            if isinstance(record, dict):
                stamp = record.get("unavailable")
                if isinstance(stamp, int | float) and not isinstance(stamp, bool):
                    last = self._last_unavailable[contact.local] = float(stamp)
        roster = await self.roster.load(contact) if exists else None
        try:
            self._answer_probe(event, roster, last)
        finally:
            if exists:
                self.roster.release(contact)

    def _answer_probe(self, event: StanzaEvent, roster: UserRoster | None, last: float | None) -> None:
        """§4.3.2: ``roster`` is the probed account's (None: no such account)."""
        probe = event.stanza
        target = event.to
        contact = target.bare
        prober = event.frm
        reply_to = str(prober)
        probe_id = probe.attrs.get("id")
        sessions = self._sessions(contact)
        if target.resource is not None:
            sessions = [s for s in sessions if s.jid == target]
        authorized = prober.bare == contact
        if not authorized and roster is not None:
            item = roster.item(prober.bare)
            authorized = item is not None and item.has_from
        if not authorized:
            # §4.6.6: no subscription, but maybe directed presence to the prober.
            directed = []
            for s in sessions:
                state = _state(s)
                if state is not None and any(d.bare == prober.bare for d in state.directed):
                    directed.append(s)
            if directed:
                for s in directed:  # "mere presence", only for that full JID
                    self._send(Element("presence", CLIENT, {"from": s.jid_str, "to": reply_to}))
                return
            # Rule 1 (and §8.5.1 for a missing account): from the bare JID, the probe's id mirrored.
            self._send(
                _with_id(
                    Element(
                        "presence",
                        CLIENT,
                        {
                            "type": "unsubscribed",
                            "from": str(contact),
                            "to": reply_to,
                        },
                    ),
                    probe_id,
                )
            )
            return
        available = [s for s in sessions if s.available]
        if target.resource is not None:
            # A probe of one full JID: only that resource, and only whether it is available.
            attrs = {"from": str(target), "to": reply_to}
            if not available:
                attrs["type"] = "unavailable"
            self._send(_with_id(Element("presence", CLIENT, attrs), probe_id if not available else None))
            return
        if available:
            # Rule 4: each resource's last broadcast presence, its own id preserved (§4.3.2.1).
            for s in available:
                if s.presence is None:
                    continue
                copy = s.presence.shallow_copy()
                copy.attrs["from"] = s.jid_str
                copy.attrs["to"] = reply_to
                self._send(copy)
            return
        # Rule 3: unavailable from the bare JID, with the time of the last unavailable presence.
        reply = _with_id(
            Element(
                "presence",
                CLIENT,
                {
                    "type": "unavailable",
                    "from": str(contact),
                    "to": reply_to,
                },
            ),
            probe_id,
        )
        if last is not None:
            reply.add("delay", DELAY, {"from": contact.domain, "stamp": format_datetime(last)})
        self._send(reply)


def _with_id(stanza: Element, stanza_id: str | None) -> Element:
    if stanza_id is not None:
        stanza.attrs["id"] = stanza_id
    return stanza
