"""The XEP-0114 component handshake, both roles, on a versionless ``jabber:component:accept`` stream.

The component opens a stream ``to`` its own domain; the server answers with its header (carrying the
stream id) and no features; the component proves it knows the shared secret by sending
``<handshake>hex(SHA-1(stream id + secret))</handshake>``; the server answers ``<handshake/>`` and
stanzas flow (XEP-0114 §3). Errors (§3.2): an unknown domain is ``<host-unknown/>`` (the core checks
the header's ``to`` against the configured component domains), a wrong digest ``<not-authorized/>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from roost.stanza.errors import StreamError
from roost.stream.core import Event, Feature, Stream, StreamEvent
from roost.xml.element import Element
from roost.xml.ns import COMPONENT


@dataclass(frozen=True, slots=True)
class ComponentAuthenticated(Event):
    """Receiving role: the component proved its secret; route ``domain`` (and subdomains) to it."""

    domain: str


def handshake_digest(stream_id: str, secret: str) -> str:
    """XEP-0114 §3: lower-case hex SHA-1 of the stream id followed by the secret."""
    return hashlib.sha1((stream_id + secret).encode()).hexdigest()


class ComponentHandshake(Feature):
    """Receiving role: checks the ``<handshake/>`` against the domain's secret."""

    def __init__(self, secret_for: Callable[[str], str | None]) -> None:
        self.secret_for = secret_for

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.name != "handshake" or el.ns != COMPONENT or stream.authenticated:
            return None
        domain = stream.domain or ""
        secret = self.secret_for(domain)
        given = (el.text or "").strip().lower()
        if secret is None or not hmac.compare_digest(handshake_digest(stream.stream_id, secret), given):
            return stream.close(StreamError("not-authorized", "the handshake does not match the secret"))
        stream.authenticated = True
        stream.send(Element("handshake", COMPONENT))
        return [*stream.establish(), ComponentAuthenticated(domain)]


class ComponentHandshakeClient(Feature):
    """Initiating role (a component connecting to a server): sends the digest, waits for the answer."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        if stream.authenticated:
            return None
        handshake = Element("handshake", COMPONENT)
        handshake.children.append(handshake_digest(stream.stream_id, self.secret))
        stream.send(handshake)
        return []

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.name != "handshake" or el.ns != COMPONENT:
            return None
        stream.authenticated = True
        return stream.establish()
