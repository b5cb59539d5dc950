"""Two streams joined in memory: an initiating and a receiving one (h11's ``ConnectionPair``).

For tests of both roles without sockets: :meth:`StreamPair.pump` moves what each side writes to the
other until both are quiet, and returns the events each side produced; the test answers the
driver's events itself (credentials, bind, TLS via :meth:`StreamPair.tls`). The pair plays the
transport for every framing: bytes for XML streams, one message per element for WebSocket, and
``<body/>`` wrappers (with the session request and ``xmpp:restart``) for BOSH.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from roost.stream.core import Closed, Stream, StreamEvent
from roost.stream.events import NeedTls
from roost.stream.features.tls import StartTls
from roost.stream.framing import HTTPBIND, BoshFraming, WebSocketFraming, XmlFraming

_BODY_OPEN = ("<body xmlns='" + HTTPBIND + "'>").encode()
_BODY_TERMINATE = ("<body xmlns='" + HTTPBIND + "' type='terminate'>").encode()


@dataclass(slots=True)
class Side:
    """One end: its stream, the events it produced so far, and whether its transport is closed."""

    stream: Stream
    events: list[StreamEvent] = field(default_factory=list)
    closed: bool = False
    #: Everything this side wrote, item by item (for assertions about the wire).
    wire: list[bytes] = field(default_factory=list)


class StreamPair:
    """An initiating and a receiving stream of the same framing, connected."""

    def __init__(self, initiating: Stream, receiving: Stream) -> None:
        if type(initiating.framing) is not type(receiving.framing):
            raise ValueError("both streams need the same framing")
        self.initiating = Side(initiating)
        self.receiving = Side(receiving)

    def pump(self, limit: int = 1000) -> tuple[list[StreamEvent], list[StreamEvent]]:
        """Move output both ways until nothing moves; the (initiating, receiving) events of this call."""
        start_i, start_r = len(self.initiating.events), len(self.receiving.events)
        for _ in range(limit):
            moved = self._move(self.initiating, self.receiving) | self._move(self.receiving, self.initiating)
            if not moved:
                break
        else:  # pragma: no cover - a protocol loop is a bug in the streams
            raise RuntimeError("the streams never went quiet")
        return self.initiating.events[start_i:], self.receiving.events[start_r:]

    def tls(self, bindings: Mapping[str, bytes] | None = None) -> tuple[list[StreamEvent], list[StreamEvent]]:
        """Both sides asked for TLS: pretend the handshake happened (with ``bindings``), then pump."""
        bindings = {"tls-exporter": b"e" * 32} if bindings is None else bindings
        for side in (self.initiating, self.receiving):
            starttls = side.stream.feature(StartTls)
            if starttls is None:
                raise ValueError("a stream without STARTTLS cannot do TLS")
            side.events.extend(starttls.established(side.stream, bindings))
        return self.pump()

    def _move(self, src: Side, dst: Side) -> bool:
        stream = src.stream
        framing = stream.framing
        moved = False
        header = framing.take_header() if isinstance(framing, BoshFraming) else None
        if header is not None:
            moved = True
            self._deliver(dst, [], header)
        items = stream.items_to_send()
        just_closed = False
        if not src.closed:
            closing = next((e for e in src.events if isinstance(e, Closed)), None)
            if closing is not None:
                # The driver writes the final bytes after everything else, then closes the transport.
                src.closed = just_closed = True
                items.extend(closing.final_items)
        if items or just_closed:
            moved = True
            src.wire.extend(items)
            self._deliver(dst, items, None, end=just_closed)
        return moved

    def _deliver(
        self, dst: Side, items: list[bytes], header: Mapping[str, str] | None, end: bool = False
    ) -> None:
        if dst.closed:
            return
        stream = dst.stream
        framing = stream.framing
        if isinstance(framing, (XmlFraming, WebSocketFraming)):
            for item in items:
                dst.events.extend(stream.receive_data(item))
        elif isinstance(framing, BoshFraming):
            if header is not None:
                dst.events.extend(stream.receive_items([BoshFraming.open_item(header)]))
            if items or end:
                body = (_BODY_TERMINATE if end else _BODY_OPEN) + b"".join(items) + b"</body>"
                dst.events.extend(stream.receive_data(body))


__all__ = ["NeedTls", "Side", "StreamPair"]
