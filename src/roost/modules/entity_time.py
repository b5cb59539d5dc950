"""XEP-0202 Entity Time of the server."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from roost.core.hooks import StanzaEvent
from roost.core.iq import Target
from roost.core.modules import Module, Xep, iq_handler
from roost.util.datetime import format_datetime, format_tzo
from roost.xml.element import Element
from roost.xml.ns import TIME


class EntityTime(Module):
    """Answers ``<time xmlns='urn:xmpp:time'/>`` with the server's UTC time and offset."""

    name = "time"
    xeps = (Xep(202, "2.0"),)
    features = (TIME,)

    @iq_handler("get", TIME, "time", to=Target.HOST)
    def time(self, event: StanzaEvent) -> Element:
        now = datetime.now(UTC)
        result = Element("time", TIME)
        result.add("tzo", text=format_tzo(-time.altzone if time.localtime().tm_isdst > 0 else -time.timezone))
        result.add("utc", text=format_datetime(now))
        return result
