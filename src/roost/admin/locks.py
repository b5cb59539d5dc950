"""Locked accounts: an operator's "this account may not log in for now", with the reason shown to its user.

A lock is one key-value row per account (store ``account_locks``), so it survives restarts and
works from the CLI without a running server. Unlike deletion it keeps every bit of the account's data;
unlocking gives the account back as it was (XEP-0133 §4.3/§4.4, disable/re-enable user).

Where it is enforced:

* SASL: the c2s driver reads :func:`lock_reason` with the credentials; once the client has proved the
  password, the stream refuses with ``<account-disabled/>`` (RFC 6120 §6.5.1) and the reason as text
  (someone without the password learns nothing of the lock).
* :class:`roost.modules.admin.AdminCommands` ends a locked account's session right after binding with
  a ``<not-authorized/>`` stream error whose text gives the reason (whatever way it logged in), and
  locking ends the account's current sessions the same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roost.storage.manager import StorageManager

STORE = "account_locks"
DEFAULT_REASON = "the account is locked by the server's administrators"


async def lock_reason(storage: StorageManager, domain: str, username: str) -> str | None:
    """Why the account is locked, or None when it is not."""
    row = await storage.keyvalue(STORE).get(domain, username)
    if not isinstance(row, dict):
        return None
    reason = row.get("reason")
    return reason if isinstance(reason, str) and reason else DEFAULT_REASON


async def lock(storage: StorageManager, domain: str, username: str, reason: str = "", by: str = "") -> None:
    """Lock the account (again, with a new reason, if it already is)."""
    row: dict[str, Any] = {"reason": reason or DEFAULT_REASON, "at": time.time(), "by": by}
    await storage.keyvalue(STORE).set(domain, username, row)


async def unlock(storage: StorageManager, domain: str, username: str) -> bool:
    """Unlock the account; False when it was not locked."""
    store = storage.keyvalue(STORE)
    if await store.get(domain, username) is None:
        return False
    await store.set(domain, username, None)
    return True
