"""The table of bound client sessions, and the one place their lives begin and end.

Binding puts a session in the table (RFC 6120 §7); :meth:`SessionManager.announce` then fires the
host's ``session/bound`` event, and :meth:`SessionManager.end` takes it out and fires
``session/closed`` — nothing else fires them, whatever the transport (TCP, WebSocket, BOSH, the
test harness, the benchmark). A session detached for stream-management resumption stays in the
table and fires nothing until it is resumed or ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING

from roost.core import hooks, sm
from roost.core.session import ClientSession, SessionState
from roost.jid import JID
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError, StreamError
from roost.util.ids import random_bytes

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.xml.element import Element


class SessionManager:
    """Bound sessions by (domain, username) and resource."""

    def __init__(self, server: Server, max_resources: int = 20) -> None:
        self.server = server
        self._users: dict[tuple[str, str], dict[str, ClientSession]] = {}
        self.max_resources = max_resources

    def __len__(self) -> int:
        return sum(len(r) for r in self._users.values())

    def __iter__(self) -> Iterator[ClientSession]:
        for resources in list(self._users.values()):
            yield from list(resources.values())

    def get(self, jid: JID) -> ClientSession | None:
        """The session bound to this full JID."""
        resources = self._users.get((jid.domain, jid.local or ""))
        if resources is None or jid.resource is None:
            return None
        return resources.get(jid.resource)

    def resources(self, domain: str, username: str) -> list[ClientSession]:
        """All bound sessions of an account."""
        resources = self._users.get((domain, username))
        return list(resources.values()) if resources else []

    def is_online(self, domain: str, username: str) -> bool:
        return bool(self._users.get((domain, username)))

    def accounts_online(self) -> int:
        return len(self._users)

    # -- life cycle ------------------------------------------------------------------------------------
    def bind(self, session: ClientSession, domain: str, username: str, resource: str | None) -> JID:
        """Bind ``session``; a clash with an existing resource replaces the older session.

        RFC 6120 §7.7.2.2: of the allowed policies we terminate the existing session with a
        <conflict/> stream error and give the resource to the new one. A server-generated resource
        never clashes. Raises ``ValueError`` when the account has too many resources.
        """
        resources = self._users.setdefault((domain, username), {})
        if resource is None:
            resource = random_bytes(6).hex()
            while resource in resources:
                resource = random_bytes(6).hex()
        old = resources.get(resource)
        if old is None and len(resources) >= self.max_resources:
            if not resources:
                del self._users[(domain, username)]
            raise ValueError("too many resources")
        jid = JID(username, domain, resource, prepared=True)
        if old is not None and old is not session:
            # Closing ends it (and announces it gone) before the new session takes the resource.
            old.close(StreamError("conflict", "replaced by a new session"), reason="replaced")
            self.end(old, "replaced")
            resources = self._users.setdefault((domain, username), {})
        resources[resource] = session
        session.bind(jid)
        return jid

    def announce(self, session: ClientSession) -> Awaitable[bool] | None:
        """Fire ``session/bound``; the session's own stanzas should wait for what it returns (the
        modules load its state: roster, blocklist, privacy settings)."""
        host = self.server.hosts.get(session.jid.domain)
        if host is None or not host.bus.has_handlers(hooks.SESSION_BOUND):
            return None
        return host.bus.fire(hooks.SESSION_BOUND, hooks.SessionEvent(session))

    def end(self, session: ClientSession, reason: str) -> bool:
        """Take a session out of the table and fire ``session/closed`` (once); False if it was not
        bound (a connection that never got that far)."""
        if session.state is SessionState.CLOSED:
            return False
        was_bound = session.bound
        session.state = SessionState.CLOSED
        session.connection = None
        session.closer = None
        if not was_bound or not self._unbind(session):
            return False
        session.log.info("session closed (%s)", reason)
        host = self.server.hosts.get(session.jid.domain)
        if host is not None and host.bus.has_handlers(hooks.SESSION_CLOSED):
            self.server.spawn(
                host.bus.fire(hooks.SESSION_CLOSED, hooks.SessionEvent(session, reason)),
                f"{session.id}-closed",
            )
        return True

    def undeliverable(self, session: ClientSession, stanza: Element) -> None:
        """A stanza reached ``session`` after it ended: its delivery waited on a filter (storage),
        or queued behind one that did, while the client logged out. Dropping it would lose a message
        the sender was never told about, so it is handled as if sent to an unavailable resource
        (RFC 6121 §8.5.3.2): a message goes to the account's other resources or offline storage, an
        IQ request is answered with an error; presence is moot."""
        name = stanza.name
        if name == "presence" or not session.jid_str:
            return  # (a session that never bound has no address to deliver to)
        service = sm.service_for(self.server, session.jid.domain)
        if service is not None:  # the same path as a stream's unacknowledged stanzas (XEP-0198 §4)
            service.reroute(session, [(stanza, time.time())])
            return
        type_ = stanza.attrs.get("type", "normal" if name == "message" else "")
        if name == "message" and type_ in ("chat", "normal"):
            self.server.router.route(stanza)  # the full JID is unbound now: §8.5.3.2.1
        elif name == "iq" and type_ in ("get", "set"):
            self.server.router.route(error_reply(stanza, StanzaError("service-unavailable")))

    def _unbind(self, session: ClientSession) -> bool:
        jid = session.jid
        key = (jid.domain, jid.local or "")
        resources = self._users.get(key)
        if not resources or resources.get(jid.resource or "") is not session:
            return False
        del resources[jid.resource or ""]
        if not resources:
            del self._users[key]
        return True
