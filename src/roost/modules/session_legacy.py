"""RFC 3921 session establishment, answered for old clients (RFC 6121 Appendix E: a no-op)."""

from __future__ import annotations

from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, iq_handler
from roost.xml.ns import SESSION


class LegacySession(Module):
    """Answers ``<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>`` with an empty result."""

    name = "session"

    @iq_handler("set", SESSION, "session", to=Target.HOST)
    def session_host(self, event: StanzaEvent) -> None:
        return None

    @iq_handler("set", SESSION, "session", to=Target.SELF)
    def session_self(self, event: StanzaEvent) -> None:
        return None
