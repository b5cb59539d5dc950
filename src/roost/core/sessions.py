"""The table of bound sessions: who is online, with which resources."""

from __future__ import annotations

from collections.abc import Iterator

from roost.core.session import Session
from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.util.ids import random_bytes


class SessionManager:
    """Bound sessions by (domain, username) and resource."""

    def __init__(self, max_resources: int = 20) -> None:
        self._users: dict[tuple[str, str], dict[str, Session]] = {}
        self.max_resources = max_resources

    def __len__(self) -> int:
        return sum(len(r) for r in self._users.values())

    def __iter__(self) -> Iterator[Session]:
        for resources in list(self._users.values()):
            yield from list(resources.values())

    def get(self, jid: JID) -> Session | None:
        """The session bound to this full JID."""
        resources = self._users.get((jid.domain, jid.local or ""))
        if resources is None or jid.resource is None:
            return None
        return resources.get(jid.resource)

    def resources(self, domain: str, username: str) -> list[Session]:
        """All bound sessions of an account."""
        resources = self._users.get((domain, username))
        return list(resources.values()) if resources else []

    def is_online(self, domain: str, username: str) -> bool:
        return bool(self._users.get((domain, username)))

    def bind(self, session: Session, domain: str, username: str, resource: str | None) -> JID:
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
            raise ValueError("too many resources")
        jid = JID(username, domain, resource, prepared=True)
        if old is not None and old is not session:
            # Closing unbinds it (and announces it gone) before the new session takes the resource.
            old.close(StreamError("conflict", "replaced by a new session"), reason="replaced")
            self.unbind(old)
            resources = self._users.setdefault((domain, username), {})
        resources[resource] = session
        session.bind(jid)
        return jid

    def unbind(self, session: Session) -> bool:
        """Forget ``session``; False if it was not (or no longer) bound."""
        jid = session.jid
        key = (jid.domain, jid.local or "")
        resources = self._users.get(key)
        if not resources or resources.get(jid.resource or "") is not session:
            return False
        del resources[jid.resource or ""]
        if not resources:
            del self._users[key]
        return True
