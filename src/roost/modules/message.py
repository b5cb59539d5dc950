"""Delivery of messages addressed to an account's bare JID (RFC 6121 §8.5.2).

Runs first in the ``message/bare`` chain. When no resource can take the message it leaves it
unclaimed, so that offline storage (lower priority) may keep it; if nothing does, the router answers
``service-unavailable`` (§8.5.2.2.1).
"""

from __future__ import annotations

from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.core.modules import Module, hook
from roost.core.session import Session
from roost.stanza.errors import StanzaError


def deliverable(sessions: list[Session]) -> list[Session]:
    """Available resources with non-negative priority (RFC 6121 §8.5.2.1)."""
    return [s for s in sessions if s.available and s.priority >= 0]


def highest_priority(sessions: list[Session]) -> list[Session]:
    """The resources sharing the highest priority."""
    if not sessions:
        return []
    top = max(s.priority for s in sessions)
    return [s for s in sessions if s.priority == top]


class MessageDelivery(Module):
    """RFC 6121 §8.5.2 rules for message types chat, normal, headline, groupchat and error."""

    name = "message"

    @hook(hooks.MESSAGE_BARE, priority=100)
    def to_bare(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        type_ = stanza.attrs.get("type", "normal")
        if type_ == "error":
            return True  # §8.5.2.1.5 / §8.5.2.2.5: silently ignored
        if type_ == "groupchat":
            # §8.5.2.1.3: never delivered to a bare JID
            raise StanzaError("service-unavailable")
        to = event.to
        targets = deliverable(self.server.sessions.resources(to.domain, to.local or ""))
        if not targets:
            return type_ == "headline"  # §8.5.2.2.4: headlines are dropped; others may go offline
        if type_ != "headline":
            # chat (§8.5.2.1.2) and normal (§8.5.2.1.1): the highest-priority resource(s).
            targets = highest_priority(targets)
        router = self.server.router
        if len(targets) == 1:
            router.to_session(targets[0], event)
            return True
        for session in targets:
            copy = stanza.shallow_copy()
            router.to_session(session, StanzaEvent(copy, event.origin, event.to, event.frm))
        return True
