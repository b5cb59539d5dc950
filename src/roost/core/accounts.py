"""The account service: creating, re-keying and removing accounts, the same way whoever asks — the
user in-band (XEP-0077), an operator through the CLI or the control socket, an admin command.

Creating fires ``USER_CREATED`` on the account's host (modules set up the new account's data);
removal fires ``USER_DELETED``. The order of a removal matters: first nobody can log in any more
(credentials gone), then the account's sessions
end with ``<not-authorized/>`` (XEP-0077 §3.2), their close handlers run (unavailable presence to
contacts, which still needs the roster), the modules hear ``USER_DELETED`` (forget caches, cancel
subscriptions), and only then is the account's data deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from roost.core import hooks
from roost.core.hooks import SessionEvent, UserEvent
from roost.core.session import Session
from roost.stanza.errors import StreamError
from roost.storage.api import StoredCredentialsLike
from roost.stream.sasl.plain import verify_password
from roost.stream.sasl.scram import ScramCredentials

if TYPE_CHECKING:
    from roost.core.host import Host
    from roost.core.server import Server

log = logging.getLogger(__name__)

#: How long removal waits for the account's sessions to be wound up before deleting its data.
SESSION_END_TIMEOUT = 10.0


class AccountService:
    """One per server; watches every host's session closes for the accounts being removed."""

    def __init__(self, server: Server) -> None:
        self.server = server
        #: (domain, username) → sessions whose close handlers are still awaited, and the event set then.
        self._removing: dict[tuple[str, str], tuple[set[Session], asyncio.Event]] = {}

    def attach(self, host: Host) -> None:
        # Lowest priority: runs after every other close handler of the session.
        host.bus.on(hooks.SESSION_CLOSED, self._session_wound_up, -1000)

    async def create(self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]) -> None:
        """Create the account (``AccountExists`` if it exists) and tell the host's modules."""
        await self.server.storage.accounts.create(domain, username, credentials)
        log.info("account %s@%s created", username, domain)
        host = self.server.hosts.get(domain)
        if host is not None:
            await host.bus.fire(hooks.USER_CREATED, UserEvent(domain, username))

    async def set_credentials(
        self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]
    ) -> None:
        """Replace the account's SCRAM keys (a new password); ``NoSuchAccount`` if there is none."""
        await self.server.storage.accounts.set_credentials(domain, username, credentials)
        # XEP-0484 §6: tokens issued under the old password are no longer trusted.
        await self.server.fast.revoke_all(domain, username)
        log.info("password of %s@%s changed", username, domain)

    async def password_matches(self, domain: str, username: str, password: str) -> bool:
        """Whether ``password`` is the account's, checked against its stored SCRAM keys (the first
        hash it has), off the event loop: the key derivation takes thousands of HMAC rounds."""
        accounts = self.server.storage.accounts
        for hash_name in ("SHA-256", "SHA-512", "SHA-1"):
            stored = await accounts.get_credentials(domain, username, hash_name)
            if stored is not None:
                creds = ScramCredentials(
                    stored.hash_name, stored.salt, stored.iterations, stored.stored_key, stored.server_key
                )
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, verify_password, password, creds)
        return False

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


#: The name the server and the control socket knew it by.
AccountRemoval = AccountService
