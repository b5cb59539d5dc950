"""Client state indication (XEP-0352 v1.0.0): what to hold back from an inactive client, without I/O.

XEP-0352 §3.2 leaves the optimisations to the server and asks that administrators can configure
them. Ours, while the client is inactive:

* presence updates (available and unavailable) are held, the latest per sender full JID, so a
  contact that changes status ten times costs one stanza when the client comes back;
* messages carrying only chat states (XEP-0085) and other transient payloads, and carbon copies of
  such messages, are held, the latest per contact;
* PubSub/PEP item notifications (XEP-0060 §7.1.2.1, XEP-0163: avatars, nicknames, moods, device
  lists, …) are held, the latest per sender, node and item (a retraction replaces a publication);
* optionally (off by default) groupchat messages are held too, all of them and in order, unless
  they mention the user's room nickname;
* everything else goes out at once: messages with a body or any other content, IQs, subscription
  requests and answers, errors, the user's own MUC presence (status 110). Before it, whatever is
  held is flushed, so the client sees stanzas in the order it would have without CSI (apart from
  the superseded updates it never sees).

On ``<active/>`` everything held is flushed (§5.1: before any later stanza of the client is
processed). The state is per stream: a resumed stream starts active (§5.2).

:class:`CsiQueue` is the policy, without I/O; the module puts one at the session's exit
(``ClientSession.csi``) while the client is inactive, and takes it away on ``<active/>``, so an
active session pays nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pydantic import Field

from roost.config.schema import ModuleOptions
from roost.core import hooks, sm
from roost.core.hooks import SessionEvent
from roost.core.modules import Module, Xep, hook
from roost.core.session import ClientSession
from roost.modules.message import is_transient
from roost.xml.element import Element
from roost.xml.ns import CSI

CARBONS: Final = "urn:xmpp:carbons:2"
FORWARD: Final = "urn:xmpp:forward:0"
MUC_USER: Final = "http://jabber.org/protocol/muc#user"
PUBSUB_EVENT: Final = "http://jabber.org/protocol/pubsub#event"

#: Key of a held stanza: what a later stanza replaces it by (an int for ones nothing replaces).
HeldKey = tuple[str, ...] | int


@dataclass(slots=True)
class CsiPolicy:
    """What is held while the client is inactive (the ``[csi]`` options)."""

    hold_presence: bool = True
    hold_chat_states: bool = True
    hold_groupchat: bool = False
    hold_pep: bool = True
    #: Past this many held stanzas everything is flushed (memory stays bounded).
    max_held: int = 500


class CsiQueue:
    """One session's hold-back queue (XEP-0352)."""

    __slots__ = ("_seq", "held", "inactive", "nicks", "policy")

    def __init__(self, policy: CsiPolicy) -> None:
        self.policy = policy
        self.inactive = False
        #: Held stanzas in the order they would have gone out; a replaced one moves to the end.
        self.held: dict[HeldKey, Element] = {}
        #: The user's nickname per room (bare room JID), learnt from its own presence (status 110).
        self.nicks: dict[str, str] = {}
        self._seq = 0

    def set_inactive(self) -> None:
        self.inactive = True

    def set_active(self) -> list[Element]:
        """The client is active again: what was held, to write now, in order."""
        self.inactive = False
        return self.flush()

    def flush(self) -> list[Element]:
        out = list(self.held.values())
        self.held.clear()
        return out

    def offer(self, stanza: Element) -> list[Element]:
        """A stanza on its way to the client: what to write now (nothing if it is held).

        Urgent stanzas come after everything held, so order is preserved.
        """
        self._learn_nick(stanza)
        if not self.inactive:
            return [stanza]
        key = self.hold_key(stanza)
        if key is None:
            if not self.held:
                return [stanza]
            out = self.flush()
            out.append(stanza)
            return out
        held = self.held
        if key in held:
            del held[key]  # the newer one replaces it, at the end
        held[key] = stanza
        if len(held) > self.policy.max_held:
            return self.flush()
        return []

    # -- classification -------------------------------------------------------------------------------
    def hold_key(self, stanza: Element) -> HeldKey | None:
        """What replaces this stanza while held; None if it must go out now."""
        name = stanza.name
        type_ = stanza.attrs.get("type")
        if name == "presence":
            if not self.policy.hold_presence or (type_ is not None and type_ != "unavailable"):
                return None  # subscription requests and answers, errors: at once
            if _is_own_muc_presence(stanza):
                return None  # the answer to a join or nick change the client is waiting for
            return ("presence", stanza.attrs.get("from", ""))
        if name != "message" or type_ == "error":
            return None
        if self.policy.hold_chat_states:
            if is_transient(stanza):
                return ("transient", stanza.attrs.get("from", ""), type_ or "normal")
            carbon = _transient_carbon(stanza)
            if carbon is not None:
                return carbon
        if self.policy.hold_pep and type_ != "groupchat":
            pep = _pep_key(stanza)
            if pep is not None:
                return pep
        if type_ == "groupchat" and self.policy.hold_groupchat:
            if stanza.find("body", stanza.ns) is None or self._mentions_me(stanza):
                return None
            self._seq += 1
            return self._seq
        return None

    def _mentions_me(self, stanza: Element) -> bool:
        room, _, _ = stanza.attrs.get("from", "").partition("/")
        nick = self.nicks.get(room)
        if not nick:
            return False
        body = stanza.find_text("body", stanza.ns) or ""
        return re.search(rf"(?<!\w){re.escape(nick)}(?!\w)", body, re.IGNORECASE) is not None

    def _learn_nick(self, stanza: Element) -> None:
        if stanza.name != "presence" or not self.policy.hold_groupchat:
            return
        if not _is_own_muc_presence(stanza):
            return
        room, _, nick = stanza.attrs.get("from", "").partition("/")
        if stanza.attrs.get("type") == "unavailable":
            self.nicks.pop(room, None)
        elif nick:
            self.nicks[room] = nick


def _is_own_muc_presence(stanza: Element) -> bool:
    """XEP-0045 §7.2.3: the occupant's own presence carries status code 110."""
    x = stanza.find("x", MUC_USER)
    if x is None:
        return False
    return any(status.attrs.get("code") == "110" for status in x.elements("status", MUC_USER))


def _pep_key(stanza: Element) -> tuple[str, ...] | None:
    """An item notification (publish or retract) without a body: keyed by sender, node and items.

    Purges, node deletions and configuration or subscription notices go out at once.
    """
    event = stanza.find("event", PUBSUB_EVENT)
    if event is None or stanza.find("body", stanza.ns) is not None:
        return None
    items = event.find("items", PUBSUB_EVENT)
    node = items.attrs.get("node") if items is not None else None
    if items is None or not node or sum(1 for _ in event.elements()) != 1:
        return None
    ids = sorted(item.attrs.get("id", "") for item in items.elements())
    if not ids or "" in ids:
        return None
    return ("pep", stanza.attrs.get("from", ""), node, *ids)


def _transient_carbon(stanza: Element) -> tuple[str, ...] | None:
    """A carbon copy (XEP-0280) of a chat-state-only message: keyed by direction and the other party."""
    wrapper = stanza.first()
    if wrapper is None or wrapper.ns != CARBONS or wrapper.name not in ("received", "sent"):
        return None
    if any(not isinstance(c, str) and c is not wrapper and c.ns == stanza.ns for c in stanza.children):
        return None  # a body or other content beside the wrapper: not a plain carbon
    forwarded = wrapper.find("forwarded", FORWARD)
    inner = forwarded.find("message") if forwarded is not None else None
    if inner is None or inner.attrs.get("type") == "error" or not is_transient(inner):
        return None
    other = inner.attrs.get("from" if wrapper.name == "received" else "to", "")
    return ("carbon", wrapper.name, other)


# -- the module ----------------------------------------------------------------------------------------
class CsiOptions(ModuleOptions):
    """Options of [csi] (XEP-0352 §3.2: administrators choose the optimisations)."""

    hold_presence: bool = Field(
        True,
        description="While a client is inactive, hold presence updates for it (the latest per sender "
        "resource) until it is active again or something urgent goes out.",
        examples=[True],
    )
    hold_chat_states: bool = Field(
        True,
        description="While a client is inactive, hold messages carrying only chat states (XEP-0085) "
        "and carbon copies of them (the latest per contact).",
        examples=[True],
    )
    hold_groupchat: bool = Field(
        False,
        description="While a client is inactive, hold groupchat messages too (all of them, in order), "
        "except those mentioning the user's nickname in that room.",
        examples=[True],
    )
    hold_pep: bool = Field(
        True,
        description="While a client is inactive, hold PubSub/PEP item notifications (avatars, nicknames, "
        "device lists, …), the latest per contact, node and item.",
        examples=[False],
    )
    max_held: int = Field(
        500,
        ge=1,
        le=100_000,
        description="When this many stanzas are held for one session, they are all written.",
        examples=[200],
    )


class CsiExit:
    """The session's exit filter while the client is inactive."""

    __slots__ = ("queue",)

    def __init__(self, queue: CsiQueue) -> None:
        self.queue = queue

    def on_send(self, session: ClientSession, stanza: Element) -> bool:
        out = self.queue.offer(stanza)
        if len(out) == 1 and out[0] is stanza:
            return False  # goes out now, through the rest of the exit
        if out:
            _write_past(session, out)
        return True


def _write_past(session: ClientSession, stanzas: list[Element]) -> None:
    """Write stanzas through the session's exit without CSI looking at them again."""
    held = session.csi
    session.csi = None
    try:
        for stanza in stanzas:
            session.send(stanza)
    finally:
        if session.csi is None:
            session.csi = held


class ClientStateIndication(Module):
    """Holds back what an inactive client can do without (see the module docstring)."""

    name = "csi"
    xeps = (Xep(352, "1.0.0", note="presence and chat states held while inactive; configurable"),)
    Options = CsiOptions
    options: CsiOptions

    async def start(self) -> None:
        opts = self.options
        self.policy = CsiPolicy(
            opts.hold_presence, opts.hold_chat_states, opts.hold_groupchat, opts.hold_pep, opts.max_held
        )

    def stream_features(self) -> tuple[Element, ...]:
        return (Element("csi", CSI),)

    @hook(sm.CLIENT_STATE)
    def client_state(self, event: sm.ClientStateEvent) -> bool:
        if event.active:
            self.activate(event.session)
        else:
            session = event.session
            current = session.csi
            if not isinstance(current, CsiExit):
                current = CsiExit(CsiQueue(self.policy))
                session.csi = current
            current.queue.set_inactive()
        return True

    #: XEP-0386 §3.3: a Bind2 request may start the session inactive.
    bind2_inline = (CSI,)

    @hook(hooks.BIND2_INLINE)
    def bind2(self, event: hooks.Bind2Event) -> None:
        """"If the client included a XEP-0352 <active/> or <inactive/> element, the session must
        begin in that state" (active is where every session begins)."""
        if event.request.find("inactive", CSI) is not None:
            self.client_state(sm.ClientStateEvent(event.session, False))

    @hook(sm.SESSION_RESUMED)
    def resumed(self, event: SessionEvent) -> None:
        """XEP-0352 §5.2: a resumed stream starts active; what was held goes out now."""
        self.activate(event.session)

    def activate(self, session: ClientSession) -> None:
        current = session.csi
        if not isinstance(current, CsiExit):
            return
        session.csi = None
        for stanza in current.queue.set_active():
            session.send(stanza)
