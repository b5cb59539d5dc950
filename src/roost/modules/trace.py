"""Stanza traces in the log at debug level (``--log-level debug``): every stanza in and out of a session.

Message bodies, subjects and threads are replaced by their length unless ``[log] trace_bodies = true``:
a debug log is often shared when asking for help, and people's messages have no place in it.
Passwords and SASL data are masked as in every log line (:mod:`roost.util.logging`). The filters are
registered only while debug logging is on, so traces cost nothing otherwise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.core.modules import Module
from roost.core.session import Session
from roost.xml.ns import CLIENT
from roost.xml.serializer import serialize

log = logging.getLogger("roost.trace")

_PRIVATE_TEXT = re.compile(r"(<(body|subject|thread)\b[^>]*>)([^<]*)(</\2>)")


def _mask(text: str) -> str:
    return _PRIVATE_TEXT.sub(lambda m: f"{m.group(1)}[{len(m.group(3))} characters]{m.group(4)}", text)


class StanzaTrace(Module):
    """Logs each stanza a session sends or receives, at debug level."""

    name = "trace"

    async def start(self) -> None:
        self._undo: list[Callable[[], None]] = []
        if not log.isEnabledFor(logging.DEBUG):
            return
        bus = self.host.bus
        # Highest priority for what comes in (as the client sent it), lowest for what goes out (as
        # the client gets it).
        for pre in (hooks.PRE_MESSAGE, hooks.PRE_PRESENCE, hooks.PRE_IQ):
            self._undo.append(bus.on(pre, self._inbound, 100_000))
        for deliver in (hooks.DELIVER_MESSAGE, hooks.DELIVER_PRESENCE, hooks.DELIVER_IQ):
            self._undo.append(bus.on(deliver, self._outbound, -100_000))

    async def stop(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()

    def _text(self, stanza: Any) -> str:
        text = serialize(stanza, CLIENT)
        return text if self.server.config.log.trace_bodies else _mask(text)

    def _inbound(self, event: StanzaEvent) -> StanzaEvent:
        origin = event.origin
        log.debug("in  %s: %s", origin.jid_str if origin is not None else "?", self._text(event.stanza))
        return event

    def _outbound(self, value: tuple[Session, StanzaEvent]) -> tuple[Session, StanzaEvent]:
        session, event = value
        log.debug("out %s: %s", session.jid_str, self._text(event.stanza))
        return value
