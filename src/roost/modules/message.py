"""Message delivery to local accounts (RFC 6121 §8.5) and stanza-ids (XEP-0359).

Where a message to ``user@domain[/resource]`` goes:

* full JID of a bound session: the router writes it to that session (§8.5.3.1); the
  ``deliver/message`` filter here adds the stanza-id on the way.
* full JID of no bound session (``message/full``): chat is handled as if sent to the bare JID
  (§8.5.3.2.1); normal and groupchat are answered ``service-unavailable``; headline and error are
  dropped silently.
* bare JID (``message/bare``): the highest-priority available resources with non-negative priority
  get chat and normal messages, every such resource gets headlines (§8.5.2.1.1); groupchat is refused
  and error dropped. With no such resource the message is left unclaimed, so offline storage (lower in
  the chain) may keep it; when nothing does, the router answers ``service-unavailable``
  (§8.5.2.2.1, also what a non-existent account gets: RFC 6120 §10.5.3.1).

Stanza-ids: every message delivered to (or stored for) a local account loses any
``<stanza-id by='that account'/>`` it arrived with — only we may speak for our accounts (XEP-0359
§5) — and, if :func:`is_archivable`, gains ours: ``<stanza-id id='…' by='user@domain'/>`` with a
time-ordered id (:mod:`roost.util.ids`) that the archive can reuse. ``<origin-id/>`` passes through.
"""

from __future__ import annotations

from typing import Final

from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.core.modules import Module, Xep, hook
from roost.core.session import Session
from roost.jid import JID, JIDError
from roost.stanza.errors import StanzaError
from roost.util.ids import time_ordered_id
from roost.xml.element import Element
from roost.xml.ns import DELAY, STANZA_ID

HINTS: Final = "urn:xmpp:hints"  # XEP-0334
CHATSTATES: Final = "http://jabber.org/protocol/chatstates"  # XEP-0085
MUC_USER: Final = "http://jabber.org/protocol/muc#user"

#: Payloads that make a chat/normal message worth keeping (archive, offline storage), besides <body/>
#: and <subject/>: namespace → the element names that count (None: any element of it).
CONTENT_PAYLOADS: Final[dict[str, frozenset[str] | None]] = {
    "eu.siacs.conversations.axolotl": None,  # OMEMO (legacy namespace)
    "urn:xmpp:omemo:2": None,  # XEP-0384
    "urn:xmpp:openpgp:0": None,  # XEP-0373
    "jabber:x:encrypted": None,  # XEP-0027
    "jabber:x:oob": None,  # XEP-0066 (file links)
    "urn:xmpp:sfs:0": None,  # XEP-0447 stateless file sharing
    "urn:xmpp:reactions:0": None,  # XEP-0444
    "urn:xmpp:message-retract:0": None,  # XEP-0424 (old)
    "urn:xmpp:message-retract:1": None,  # XEP-0424
    "urn:xmpp:fasten:0": None,  # XEP-0422 (moderation, old retraction)
    "jabber:x:conference": None,  # XEP-0249 direct MUC invitation
    "urn:xmpp:jingle-message:0": None,  # XEP-0353 call set-up
    "urn:xmpp:receipts": frozenset({"received"}),  # XEP-0184 receipt (not the request)
    "urn:xmpp:chat-markers:0": frozenset({"received", "displayed", "acknowledged"}),  # XEP-0333
}

#: Payloads that carry nothing worth storing on their own (a message of only these is "transient").
TRANSIENT_NAMESPACES: Final = frozenset({CHATSTATES, HINTS, STANZA_ID, DELAY})


def deliverable(sessions: list[Session]) -> list[Session]:
    """Available resources with non-negative priority (RFC 6121 §8.5.2.1)."""
    return [s for s in sessions if s.available and s.priority >= 0]


def highest_priority(sessions: list[Session]) -> list[Session]:
    """The resources sharing the highest priority."""
    if not sessions:
        return []
    top = max(s.priority for s in sessions)
    return [s for s in sessions if s.priority == top]


def bare_targets(sessions: list[Session], type_: str) -> list[Session]:
    """The sessions a message of ``type_`` to the bare JID goes to (RFC 6121 §8.5.2.1.1).

    Headlines go to every non-negative available resource; chat and normal messages to the "most
    available" ones, which we take to be those with the highest priority. Carbons uses this to know
    which resources already have the original.
    """
    targets = deliverable(sessions)
    if type_ == "headline" or len(targets) < 2:
        return targets
    return highest_priority(targets)


def has_hint(stanza: Element, name: str) -> bool:
    """Whether the message carries the XEP-0334 hint ``name`` (hints on errors are ignored, §5)."""
    if stanza.attrs.get("type") == "error":
        return False
    for child in stanza.children:
        if not isinstance(child, str) and child.name == name and child.ns == HINTS:
            return True
    return False


def is_archivable(stanza: Element) -> bool:
    """Whether a message carries content a user would want kept: the messages we give a stanza-id,
    that offline storage keeps and that an archive should keep.

    chat and normal (or no type): a <body/> or <subject/>, a payload of :data:`CONTENT_PAYLOADS`
    (encrypted bodies, file links, reactions, receipts, markers, invitations, …), or the XEP-0334
    <store/> hint. headline: only with a <body/>. groupchat (the room stamps those) and error: never.
    """
    type_ = stanza.attrs.get("type")
    if type_ is not None and type_ != "chat" and type_ != "normal":
        if type_ != "headline":
            return False
        return stanza.find("body", stanza.ns) is not None
    stanza_ns = stanza.ns
    for child in stanza.children:
        if isinstance(child, str):
            continue
        ns = child.ns
        name = child.name
        if ns == stanza_ns:
            if name == "body" or name == "subject":
                return True
        elif ns == HINTS:
            if name == "store":
                return True
        elif ns == MUC_USER:
            if child.find("invite", MUC_USER) is not None:
                return True  # XEP-0045 §7.8.2 mediated invitation
        elif ns in CONTENT_PAYLOADS:
            names = CONTENT_PAYLOADS[ns]
            if names is None or name in names:
                return True
    return False


def is_transient(stanza: Element) -> bool:
    """Whether a message holds nothing but notifications that lose their point later (chat states,
    hints, ids, <thread/>), or nothing at all. XEP-0085 §5.5: such messages are not stored offline."""
    stanza_ns = stanza.ns
    for child in stanza.children:
        if isinstance(child, str):
            continue
        ns = child.ns
        if ns == stanza_ns:
            if child.name != "thread":
                return False
        elif ns not in TRANSIENT_NAMESPACES:
            return False
    return True


def stanza_id(stanza: Element, by: str) -> str | None:
    """The id of the ``<stanza-id/>`` ``by`` assigned to this message, if any."""
    for child in stanza.children:
        if (
            not isinstance(child, str)
            and child.name == "stanza-id"
            and child.ns == STANZA_ID
            and child.attrs.get("by") == by
        ):
            return child.attrs.get("id")
    return None


def _same_jid(text: str | None, jid: str) -> bool:
    if text is None:
        return False
    if text == jid:
        return True
    try:
        return str(JID.parse(text)) == jid  # an unnormalised spelling of the same address
    except JIDError:
        return False


def assign_stanza_id(stanza: Element, by: str) -> str | None:
    """Strip stanza-ids claiming to be ``by``'s, then add ours if the message is archivable.

    XEP-0359 §5: an entity that assigns stanza-ids MUST remove those carrying its own 'by', whether
    or not it adds one; there is at most one per 'by'. Returns the id assigned (None: none).
    """
    children = stanza.children
    i = len(children) - 1
    while i >= 0:
        child = children[i]
        if (
            not isinstance(child, str)
            and child.name == "stanza-id"
            and child.ns == STANZA_ID
            and _same_jid(child.attrs.get("by"), by)
        ):
            del children[i]
        i -= 1
    if not is_archivable(stanza):
        return None
    new_id = time_ordered_id()
    children.append(Element("stanza-id", STANZA_ID, {"id": new_id, "by": by}))
    return new_id


class MessageDelivery(Module):
    """RFC 6121 §8.5 rules for message types chat, normal, headline, groupchat and error."""

    name = "message"
    xeps = (Xep(359, "0.7.0", note="stanza-id on messages delivered to or stored for local accounts"),)
    #: XEP-0359 §6: the assigning entity (the account) announces it follows the business rules.
    account_features = (STANZA_ID,)

    #: The last stanza given (or denied) a stanza-id: (stanza, by, id or None). The archive, next on
    #: the same chain, takes the id from here instead of searching the children again; an id of None
    #: means the message is not :func:`is_archivable`. Holding the stanza keeps ``is`` checks sound.
    last_assigned: tuple[Element, str, str | None] | None = None

    @hook(hooks.MESSAGE_BARE, priority=250)
    def assign_bare(self, event: StanzaEvent) -> bool:
        """Before anything delivers or stores it (carbons and offline storage see the id too)."""
        stanza = event.stanza
        by = event.to.bare_str
        self.last_assigned = (stanza, by, assign_stanza_id(stanza, by))
        return False

    @hook(hooks.DELIVER_MESSAGE, priority=500)
    def assign_direct(self, value: tuple[Session, StanzaEvent]) -> tuple[Session, StanzaEvent]:
        """Messages addressed to a bound full JID reach the session without the bare chain."""
        session, event = value
        to = event.to
        if to.resource is not None and to == session.jid:
            stanza = event.stanza
            by = session.jid.bare_str
            self.last_assigned = (stanza, by, assign_stanza_id(stanza, by))
        return value

    @hook(hooks.MESSAGE_BARE, priority=100)
    def to_bare(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        type_ = stanza.attrs.get("type", "normal")
        if type_ == "error":
            return True  # §8.5.2.1.5 / §8.5.2.2.5: silently ignored
        if type_ == "groupchat":
            # §8.5.2.1.3 / §8.5.2.2.1: never delivered to a bare JID
            raise StanzaError("service-unavailable")
        to = event.to
        targets = bare_targets(self.server.sessions.resources(to.domain, to.local or ""), type_)
        if not targets:
            return type_ == "headline"  # §8.5.2.2.4: headlines are dropped; others may go offline
        router = self.server.router
        if len(targets) == 1:
            router.to_session(targets[0], event)
            return True
        for session in targets:
            # §8.5.2.1: 'to' stays the bare JID; each session gets its own copy of the top level.
            copy = stanza.shallow_copy()
            router.to_session(session, StanzaEvent(copy, event.origin, event.to, event.frm))
        return True

    @hook(hooks.MESSAGE_FULL, priority=100)
    def to_unknown_resource(self, event: StanzaEvent) -> bool:
        """RFC 6121 §8.5.3.2.1: a full JID that matches no session."""
        type_ = event.stanza.attrs.get("type", "normal")
        if type_ == "chat":
            return False  # the router then handles it as if sent to the bare JID
        if type_ == "error" or type_ == "headline":
            return True  # silently ignored (an error is never answered with an error)
        raise StanzaError("service-unavailable")  # normal, groupchat
