"""XEP-0012 Last Activity: the server's uptime (§5)."""

from __future__ import annotations

import time

from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.xml.element import Element
from roost.xml.ns import LAST


class LastActivity(Module):
    """Answers jabber:iq:last queries to the server with the seconds since it started."""

    name = "last"
    xeps = (Xep(12, "2.0"),)
    features = (LAST,)

    @iq_handler("get", LAST, "query", to=Target.HOST)
    def uptime(self, event: StanzaEvent) -> Element:
        seconds = int(time.time() - self.server.started_at)
        return Element("query", LAST, {"seconds": str(seconds)})
