"""In-band registration before authentication (XEP-0077 §3.1.1), receiving role.

Offered where authentication is (over TLS when encryption is required) and where the driver's
policy allows it for the domain. The ``jabber:iq:register`` IQ is handed to the driver
(:class:`RegisterRequest`) and its answer written (:meth:`PreAuthRegister.reply`); any other stanza
before authentication still ends the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.stream.core import Feature, Stream, StreamEvent
from roost.stream.events import RegisterRequest
from roost.xml.element import Element
from roost.xml.ns import REGISTER, REGISTER_FEATURE


class PreAuthRegister(Feature):
    """The ``iq-register`` stream feature and the registration IQs before authentication."""

    __slots__ = ("allowed", "pending", "require_encryption")

    def __init__(self, allowed: Callable[[str], bool], *, require_encryption: bool = True) -> None:
        self.allowed = allowed
        self.require_encryption = require_encryption
        self.pending = False

    def may_register(self, stream: Stream) -> bool:
        if stream.authenticated or (self.require_encryption and not stream.secure):
            return False
        return stream.domain is not None and self.allowed(stream.domain)

    def cache_key(self, stream: Stream) -> Hashable:
        return self.may_register(stream)

    def advertise(self, stream: Stream) -> Element | None:
        return Element("register", REGISTER_FEATURE) if self.may_register(stream) else None  # XEP-0077 §8

    def handle(self, stream: Stream, iq: Element) -> list[StreamEvent] | None:
        if iq.name != "iq" or iq.ns != stream.content_ns or not self.may_register(stream):
            return None
        payload = iq.first()
        if payload is None or payload.ns != REGISTER or payload.name != "query":
            return None
        to = iq.attrs.get("to")
        if to is not None and to != stream.domain:
            return None  # only the server itself takes requests before authentication
        type_ = iq.attrs.get("type")
        if type_ in ("result", "error"):
            return []
        if type_ not in ("get", "set") or "id" not in iq.attrs:
            stream.send(error_reply(iq, StanzaError("bad-request", "an IQ get or set with an 'id'")))
            return []
        if sum(1 for _ in iq.elements()) != 1:
            # RFC 6120 §8.2.3
            stream.send(error_reply(iq, StanzaError("bad-request", "an IQ get/set carries one payload")))
            return []
        assert stream.domain is not None
        self.pending = True
        stream.wait(self)
        return [RegisterRequest(iq, stream.domain)]

    def reply(self, stream: Stream, answer: Element) -> list[StreamEvent]:
        """The driver's answer to :class:`RegisterRequest` (an IQ result or error)."""
        if not self.pending:
            return []
        self.pending = False
        stream.send(answer)
        return stream.resume()
