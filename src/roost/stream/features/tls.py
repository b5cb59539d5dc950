"""STARTTLS (RFC 6120 §5), both roles.

The handshake itself is the driver's (it owns the socket): the feature emits :class:`NeedTls` and
holds the stream until the driver calls :meth:`StartTls.established`.
"""

from __future__ import annotations

from collections.abc import Mapping

from roost.stanza.errors import StreamError
from roost.stream.core import Feature, Phase, Role, Stream, StreamEvent
from roost.stream.events import NeedTls
from roost.xml.element import Element
from roost.xml.ns import TLS

_PROCEED = b"<proceed xmlns='" + TLS.encode() + b"'/>"
_STARTTLS = b"<starttls xmlns='" + TLS.encode() + b"'/>"


class StartTls(Feature):
    """``<starttls/>``: offered (receiving) or used (initiating) while the stream is not encrypted."""

    __slots__ = ("available", "pending", "required")

    def __init__(self, *, available: bool = True, required: bool = True) -> None:
        self.available = available
        self.required = required
        self.pending = False

    def advertise(self, stream: Stream) -> Element | None:
        if stream.secure or not self.available or stream.authenticated:
            return None
        tls = Element("starttls", TLS)
        if self.required:
            tls.add("required")
        return tls

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != TLS:
            return None
        if stream.role is Role.INITIATING:
            if el.name == "proceed":
                return self._begin(stream)
            # RFC 6120 §5.4.2.2: <failure/>, and the receiving entity closes the stream.
            return stream.close()
        if el.name != "starttls" or stream.authenticated:
            return None
        if stream.secure or not self.available:
            return stream.close(StreamError("unsupported-feature", "TLS is not available here"))
        stream.send_raw(_PROCEED)
        return self._begin(stream)

    def _begin(self, stream: Stream) -> list[StreamEvent]:
        # Whatever followed <starttls/> (or <proceed/>) in the clear is discarded (STARTTLS command
        # injection); the next bytes the parser sees belong to the new stream inside TLS. The
        # initiating side's new header waits until the handshake is done.
        stream.discard_input()
        stream.wait(self, Phase.WAIT_HEADER)
        self.pending = True
        return [NeedTls()]

    def established(self, stream: Stream, channel_bindings: Mapping[str, bytes]) -> list[StreamEvent]:
        """The driver finished the handshake: restart the stream (RFC 6120 §5.4.3.3)."""
        if not self.pending:
            return []
        self.pending = False
        stream.secure = True
        stream.channel_bindings = channel_bindings
        stream.restart(discard_input=False)
        # A header already held (decrypted with the handshake's last bytes) is processed now.
        return stream.resume(Phase.WAIT_HEADER)

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        if stream.secure or not self.available:
            return None
        if features.find("starttls", TLS) is None:
            if self.required and not stream.authenticated:
                # We insist on encryption and the peer does not offer it: go no further.
                return stream.close(StreamError("policy-violation", "encryption is required"))
            return None
        stream.send_raw(_STARTTLS)
        return []
