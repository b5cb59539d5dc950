"""XEP-0199 XMPP Ping: the server answers pings addressed to it."""

from __future__ import annotations

from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.xml.ns import PING


class Ping(Module):
    """Answers ``<ping xmlns='urn:xmpp:ping'/>`` sent to the server (XEP-0199 §4.2)."""

    name = "ping"
    xeps = (Xep(199, "2.0.1"),)
    features = (PING,)

    @iq_handler("get", PING, "ping", to=Target.HOST)
    def pong(self, event: StanzaEvent) -> None:
        return None
