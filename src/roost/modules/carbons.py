"""Message Carbons (XEP-0280): every enabled resource sees both sides of the account's conversations.

* ``<enable/>``/``<disable/>`` (§4, §5) switch a session on or off, as often as it likes; the state
  lives in ``session.data["carbons"]`` and in an index by account, so the hot path asks one dict.
* Sent (§8): an eligible message a session sends is copied, wrapped in ``<sent/>``, to the account's
  other enabled sessions — whether or not the sender itself has Carbons on.
* Received (§7): an eligible message delivered to the account is copied, wrapped in
  ``<received/>``, to the enabled sessions that did not get the original. For a bare JID those are
  the sessions outside :func:`roost.modules.message.bare_targets`; for a full JID, all but that
  one. If nobody gets the original (it is stored offline or refused) nobody gets a copy.
* Eligibility follows §6.1 exactly (and so we advertise ``urn:xmpp:carbons:rules:0``): chat; normal
  with a body; receipts, chat states or markers; invitations (XEP-0249, XEP-0045 mediated); errors
  answering an eligible message; never groupchat, never a private message from a MUC occupant, never
  a message with ``<private/>`` (§9) or the XEP-0334 ``<no-copy/>`` hint, never a carbon itself.
* Messages between two resources of the same account are copied once, as received, to the
  account's other resources; a message from a resource to itself is not copied.

Wrappers come from the account's bare JID and go to the full JID of the receiving session (§7, §8).
"""

from __future__ import annotations

from typing import Final

from roost.core import hooks
from roost.core.hooks import Bind2Event, SessionEvent, StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, hook, iq_handler
from roost.core.session import Session
from roost.jid import JID
from roost.modules.message import CHATSTATES, HINTS, MUC_USER, bare_targets
from roost.stanza.errors import StanzaError
from roost.util.bounded import BoundedDict
from roost.xml.element import Element
from roost.xml.ns import FORWARD

CARBONS: Final = "urn:xmpp:carbons:2"
CARBONS_RULES: Final = "urn:xmpp:carbons:rules:0"
CONFERENCE: Final = "jabber:x:conference"  # XEP-0249
#: §6.1 "payload elements typically used in IM": receipts, chat states, chat markers.
IM_PAYLOADS: Final = frozenset({"urn:xmpp:receipts", CHATSTATES, "urn:xmpp:chat-markers:0"})

#: How many (account, message id) pairs of eligible messages we remember, to copy errors answering them.
RECENT_IDS: Final = 4096


def is_eligible(stanza: Element, *, inbound: bool) -> bool:
    """XEP-0280 §6.1 for a non-error message; ``inbound``: it is being delivered to the account."""
    type_ = stanza.attrs.get("type", "normal")
    if type_ == "groupchat":
        return False
    stanza_ns = stanza.ns
    body = im = invite = muc = False
    for child in stanza.children:
        if isinstance(child, str):
            continue
        ns = child.ns
        if ns == CARBONS:
            return False  # <private/> (§9), or already a carbon (<sent/>, <received/>)
        if ns == HINTS:
            if child.name == "no-copy":
                return False  # XEP-0334 §4.3
        elif ns == stanza_ns:
            if child.name == "body":
                body = True
        elif ns in IM_PAYLOADS:
            im = True
        elif ns == CONFERENCE:
            invite = True
        elif ns == MUC_USER:
            muc = True
            if child.find("invite", MUC_USER) is not None:
                invite = True
    if invite:
        return True
    if muc and inbound:
        return False  # a private message from a MUC occupant: the room copies it to every joined client
    return type_ == "chat" or (body and type_ == "normal") or im


class Carbons(Module):
    """XEP-0280 Message Carbons."""

    name = "carbons"
    xeps = (
        Xep(280, "1.0.1"),
        Xep(297, "1.0", note="carbon copies"),
        Xep(334, "1.0.0", status="partial", note="no-copy (carbons), store and no-store (offline storage)"),
    )
    features = (CARBONS, CARBONS_RULES)

    async def start(self) -> None:
        #: Account bare JID → its sessions with Carbons enabled.
        self._enabled: dict[str, list[Session]] = {}
        #: (account bare JID, message id) of recent eligible messages, oldest first.
        self._recent: BoundedDict[tuple[str, str], None] = BoundedDict(RECENT_IDS)

    # -- enable / disable ------------------------------------------------------------------------------
    @iq_handler("set", CARBONS, "enable", to=Target.SELF)
    def enable(self, event: StanzaEvent) -> None:
        self._enable(self._own_session(event))

    def _enable(self, session: Session) -> None:
        if not session.data.get("carbons"):
            session.data["carbons"] = True
            self._enabled.setdefault(session.jid.bare_str, []).append(session)

    #: XEP-0386 §3.3: a Bind2 request may enable Carbons inline.
    bind2_inline = (CARBONS,)

    @hook(hooks.BIND2_INLINE)
    def bind2(self, event: Bind2Event) -> None:
        """Carbons "MUST be enabled at this point"; no answer goes into <bound/>."""
        if event.request.find("enable", CARBONS) is not None:
            self._enable(event.session)

    @iq_handler("set", CARBONS, "disable", to=Target.SELF)
    def disable(self, event: StanzaEvent) -> None:
        self._drop(self._own_session(event))

    @staticmethod
    def _own_session(event: StanzaEvent) -> Session:
        session = event.origin
        if session is None or session.jid != event.frm:
            raise StanzaError("not-allowed", "only a client of this server can switch its own Carbons")
        return session

    def _drop(self, session: Session) -> None:
        if session.data.pop("carbons", None) is None:
            return
        key = session.jid.bare_str
        enabled = self._enabled.get(key)
        if enabled is not None:
            if session in enabled:
                enabled.remove(session)
            if not enabled:
                del self._enabled[key]

    @hook(hooks.SESSION_CLOSED)
    def closed(self, event: SessionEvent) -> None:
        self._drop(event.session)

    # -- copies ------------------------------------------------------------------------------------------
    @hook(hooks.PRE_MESSAGE, priority=50)
    def sent(self, event: StanzaEvent) -> StanzaEvent:
        """§8: copies of what a session sends, to the account's other enabled sessions."""
        origin = event.origin
        if origin is None:
            return event
        key = origin.jid.bare_str
        enabled = self._enabled.get(key)
        if not enabled or (len(enabled) == 1 and enabled[0] is origin):
            return event
        if event.to.bare_str == key:
            return event  # to the account itself: copied as received on delivery
        stanza = event.stanza
        if not self._eligible(stanza, key, inbound=False):
            return event
        frm = origin.jid.bare
        for session in enabled:
            if session is not origin:
                self._forward(session, "sent", stanza, frm)
        return event

    @hook(hooks.MESSAGE_BARE, priority=150)
    def received_bare(self, event: StanzaEvent) -> bool:
        """§7 for the bare JID: runs before the message module delivers, with the same targets."""
        to = event.to
        key = to.bare_str
        enabled = self._enabled.get(key)
        if not enabled:
            return False
        stanza = event.stanza
        type_ = stanza.attrs.get("type", "normal")
        if type_ == "error" or type_ == "groupchat":
            return False  # neither is delivered to a bare JID (RFC 6121 §8.5.2)
        targets = bare_targets(self.server.sessions.resources(to.domain, to.local or ""), type_)
        if not targets or not self._eligible(stanza, key, inbound=True):
            return False
        frm = event.frm
        bare = to.bare
        for session in enabled:
            if session not in targets and session.jid != frm:
                self._forward(session, "received", stanza, bare)
        return False

    @hook(hooks.DELIVER_MESSAGE, priority=100)
    def received_direct(self, value: tuple[Session, StanzaEvent]) -> tuple[Session, StanzaEvent]:
        """§7 for a full JID: the session it is written to is the only one with the original."""
        session, event = value
        to = event.to
        if to.resource is None:
            return value
        key = session.jid.bare_str
        enabled = self._enabled.get(key)
        if not enabled or (len(enabled) == 1 and enabled[0] is session) or to != session.jid:
            return value
        frm = event.frm
        if frm == to:
            return value  # from a resource to itself
        stanza = event.stanza
        if not self._eligible(stanza, key, inbound=True):
            return value
        bare = session.jid.bare
        for other in enabled:
            if other is not session and other.jid != frm:
                self._forward(other, "received", stanza, bare)
        return value

    def _eligible(self, stanza: Element, key: str, *, inbound: bool) -> bool:
        msg_id = stanza.attrs.get("id")
        if stanza.attrs.get("type") == "error":
            # §6.1: an error is copied when it answers an eligible message.
            return msg_id is not None and (key, msg_id) in self._recent
        if not is_eligible(stanza, inbound=inbound):
            return False
        if msg_id is not None:
            self._recent[(key, msg_id)] = None
        return True

    def _forward(self, session: Session, direction: str, stanza: Element, account: JID) -> None:
        attrs = {"from": str(account), "to": session.jid_str}
        type_ = stanza.attrs.get("type")
        if type_ is not None:
            attrs["type"] = type_  # §7, §8: the wrapper keeps the type
        wrapper = Element("message", stanza.ns, attrs)
        forwarded = wrapper.add(direction, CARBONS).add("forwarded", FORWARD)
        # A copy of the top level: later processing (the recipient's stanza-id) must not change it.
        forwarded.children.append(stanza.shallow_copy())
        self.server.router.to_session(session, StanzaEvent(wrapper, None, session.jid, account))
