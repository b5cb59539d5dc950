"""Removing an account while the server runs, the same way whoever asks (the user in-band, an operator).

The order matters: first nobody can log in any more (credentials gone), then the account's sessions
end with ``<not-authorized/>`` (XEP-0077 §3.2), their close handlers run (unavailable presence to
contacts, which still needs the roster), the modules hear ``USER_DELETED`` (forget caches, cancel
subscriptions), and only then is the account's data deleted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from roost.core import hooks
from roost.core.hooks import SessionEvent, UserEvent
from roost.core.session import Session
from roost.stanza.errors import StreamError

if TYPE_CHECKING:
    from roost.core.host import Host
    from roost.core.server import Server

log = logging.getLogger(__name__)

#: How long removal waits for the account's sessions to be wound up before deleting its data.
SESSION_END_TIMEOUT = 10.0


class AccountRemoval:
    """One per server; watches every host's session closes for the accounts being removed."""

    def __init__(self, server: Server) -> None:
        self.server = server
        #: (domain, username) → sessions whose close handlers are still awaited, and the event set then.
        self._removing: dict[tuple[str, str], tuple[set[Session], asyncio.Event]] = {}

    def attach(self, host: Host) -> None:
        # Lowest priority: runs after every other close handler of the session.
        host.bus.on(hooks.SESSION_CLOSED, self._session_wound_up, -1000)

    async def remove(self, domain: str, username: str) -> bool:
        """Remove the account now (False: there is no such account)."""
        if not await self.server.storage.accounts.delete(domain, username):
            return False
        await self.wind_up(domain, username)
        return True

    async def wind_up(self, domain: str, username: str) -> None:
        """After the credentials are gone: end the sessions, tell the modules, delete the data."""
        key = (domain, username)
        sessions = self.server.sessions.resources(domain, username)
        if sessions:
            ended = asyncio.Event()
            self._removing[key] = (set(sessions), ended)
            for session in sessions:
                # XEP-0077 §3.2: "the server SHOULD then return a <not-authorized/> stream error and
                # terminate all active sessions for the entity".
                removed = StreamError("not-authorized", "the account has been removed")
                session.close(removed, reason="account-removed")
            try:
                await asyncio.wait_for(ended.wait(), SESSION_END_TIMEOUT)
            except TimeoutError:
                log.warning("sessions of %s@%s did not wind up in time", username, domain)
            finally:
                self._removing.pop(key, None)
        host = self.server.hosts.get(domain)
        if host is not None:
            # Handlers may still read the account's data (e.g. a roster, to cancel subscriptions).
            await host.bus.fire(hooks.USER_DELETED, UserEvent(domain, username))
        await self.server.storage.delete_user(domain, username)
        log.info("account %s@%s removed with all of its data", username, domain)

    def _session_wound_up(self, event: SessionEvent) -> None:
        jid = event.session.jid
        removing = self._removing.get((jid.domain, jid.local or ""))
        if removing is not None:
            pending, ended = removing
            pending.discard(event.session)
            if not pending:
                ended.set()
