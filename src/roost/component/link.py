"""External components (XEP-0114): a TCP connection carrying a ``jabber:component:accept`` stream.

The stream and its handshake are sans-IO (:mod:`roost.stream.features.component`); this is the thin
driver around them (:class:`~roost.transports.link.StreamConnection`): once the component proved its
secret, a :class:`~roost.core.routes.Link` in the route table for its domain and every subdomain of
it. A component that connects again replaces its old link, which ends with ``<conflict/>`` (RFC 6120
§4.9.3.3). Its stanzas go through ``Router.from_remote`` in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from roost.stanza.errors import StreamError
from roost.stream.core import Stream, StreamEvent
from roost.stream.features.component import ComponentAuthenticated, ComponentHandshake
from roost.stream.framing import XmlFraming
from roost.transports.link import StreamConnection
from roost.xml.element import Element
from roost.xml.ns import COMPONENT

if TYPE_CHECKING:
    from roost.core.server import Server

log = logging.getLogger("roost.component")


class ComponentConnection(StreamConnection):
    """One component's TCP connection: the stream driver and, once authenticated, its link."""

    kind = "component"

    def __init__(self, server: Server) -> None:
        super().__init__(server, "comp")
        #: The component's domain, once it completed the handshake.
        self.domain: str | None = None
        secrets = {domain: entry.secret for domain, entry in server.config.components.items()}
        self.stream = Stream(
            XmlFraming(server.config.c2s.max_stanza_bytes),
            [ComponentHandshake(secrets.get)],
            content_ns=COMPONENT,
            domains=frozenset(secrets),
            versionless=True,
        )

    def describe(self) -> str:
        return f"component {self.domain or '?'} ({self.peer})"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        log.debug("%s: component connection from %s", self.id, self.peer)

    def _event(self, event: StreamEvent) -> None:
        if isinstance(event, ComponentAuthenticated):
            self.domain = event.domain
            old = self.server.route_table.attach_component(event.domain, self)
            log.info("component %s connected from %s (%s)", event.domain, self.peer, self.id)
            if old is not None:
                log.info("component %s: the new connection replaces %s", event.domain, old.id)
                old.close(StreamError("conflict", "replaced by a new connection"), reason="replaced")

    def _route(self, stanza: Element) -> Awaitable[None] | None:
        return self.server.router.from_remote(self, stanza)

    def _lost(self) -> None:
        if self.domain is not None:
            self.server.route_table.detach_component(self.domain, self)
            log.info("component %s disconnected (%s)", self.domain, self.id)

    # -- Link --------------------------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        if self.closed or self.stream.closed:
            return
        self.stream.send(stanza)
        self._flush_stream()

    def may_send_from(self, domain: str) -> bool:
        # XEP-0114: the component speaks for its domain and the subdomains routed to it.
        own = self.domain
        return own is not None and (domain == own or domain.endswith("." + own))

    def may_send_to(self, domain: str) -> bool:
        return True
