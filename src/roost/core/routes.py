"""The route table: where an address lives — a local session, a remote link, or (later) another node.

Modules ask here instead of reading the session table, so that a session on another cluster node or
a domain behind a remote link looks no different to them. The router asks here for every stanza to a
domain the server does not serve (RFC 6120 §10.4):

* an **external component** (XEP-0114) owns its domain and every subdomain of it;
* a **service** registered by a module (``server.routes``: domain → deliver callable);
* **federation** (s2s), when enabled: any other domain, through one outgoing link per
  (local domain, remote domain) pair, queued while it connects.

A :class:`Link` is what the router writes to for a remote domain. It has authenticated the domains in
:attr:`Link.domains`; stanzas coming in on it must come from one of them (``Router.from_remote``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.hooks import StanzaEvent
    from roost.core.server import Server
    from roost.core.session import ClientSession

log = logging.getLogger("roost.routes")


class Link(Protocol):
    """A connection to a remote entity that carries stanzas both ways: an s2s stream or a component."""

    #: "s2s" or "component" (logs, the router's checks).
    kind: str
    #: Connection id for logs.
    id: str

    def send(self, stanza: Element) -> None:
        """Write one stanza (``from``/``to`` already set) to the peer."""
        ...

    def close(self, error: StreamError | None = None, reason: str = "") -> None:
        """End the link (with a stream error if given)."""
        ...

    def may_send_from(self, domain: str) -> bool:
        """Whether the peer authenticated ``domain`` (or a parent it may speak for) on this link."""
        ...

    def may_send_to(self, domain: str) -> bool:
        """Whether the peer may address ``domain`` on this link (s2s: only the domains we serve)."""
        ...


class RemoteRouter(Protocol):
    """Federation's side of the route table: takes stanzas for other domains (s2s out)."""

    def accepts(self, domain: str) -> bool:
        """Whether stanzas for ``domain`` are taken (federation on, domain not blocked)."""
        ...

    def route(self, event: StanzaEvent) -> None:
        """Queue or write ``event`` to the domain's link; failures bounce (RFC 6120 §10.4.3)."""
        ...


class RouteTable:
    """Resolves addresses for the router and the modules (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sessions = server.sessions
        self.hosts = server.hosts
        #: Connected external components by their domain.
        self._components: dict[str, Link] = {}
        #: Every live link (components and s2s, authenticated or not), for shutdown.
        self.links: set[Link] = set()
        #: Federation (s2s out), when enabled.
        self.remote: RemoteRouter | None = None

    # -- local sessions ----------------------------------------------------------------------------
    def session(self, jid: JID) -> ClientSession | None:
        """The local session bound to the full JID ``jid``, if any."""
        return self.sessions.get(jid)

    def resources(self, domain: str, username: str) -> list[ClientSession]:
        """The local sessions of an account (all its connected resources)."""
        return self.sessions.resources(domain, username)

    def is_online(self, domain: str, username: str) -> bool:
        return self.sessions.is_online(domain, username)

    def is_local(self, domain: str) -> bool:
        """Whether ``domain`` is served here (a user domain or a service host such as MUC)."""
        return domain in self.hosts

    # -- components --------------------------------------------------------------------------------
    def attach_component(self, domain: str, link: Link) -> Link | None:
        """``link`` now owns ``domain``; the link it replaces, if any (the caller closes it)."""
        old = self._components.get(domain)
        self._components[domain] = link
        return old if old is not link else None

    def detach_component(self, domain: str, link: Link) -> None:
        """``link`` is gone; forget it unless a newer link took its domain already."""
        if self._components.get(domain) is link:
            del self._components[domain]

    def components(self) -> Iterator[str]:
        """Domains of the connected components."""
        return iter(sorted(self._components))

    def component_for(self, domain: str) -> Link | None:
        """The component owning ``domain``: its own, or that of the nearest parent domain."""
        components = self._components
        if not components:
            return None
        found = components.get(domain)
        if found is not None:
            return found
        dot = domain.find(".")
        while dot >= 0:
            domain = domain[dot + 1 :]
            found = components.get(domain)
            if found is not None:
                return found
            dot = domain.find(".")
        return None

    # -- routability -------------------------------------------------------------------------------
    def is_routable(self, domain: str) -> bool:
        """Whether a stanza to ``domain`` can go anywhere: served here, a component or a service,
        or federation takes it (a domain whose link is still being dialled counts)."""
        if domain in self.hosts or domain in self.server.routes:
            return True
        if self.component_for(domain) is not None:
            return True
        remote = self.remote
        return remote is not None and remote.accepts(domain)

    def route_remote(self, event: StanzaEvent) -> bool:
        """Hand a stanza for a domain not served here to whoever owns it; False if nobody does."""
        domain = event.to.domain
        link = self.component_for(domain)
        if link is not None:
            link.send(event.stanza)
            return True
        service = self.server.routes.get(domain)
        if service is not None:
            service(event)
            return True
        remote = self.remote
        if remote is not None and remote.accepts(domain):
            remote.route(event)
            return True
        return False
