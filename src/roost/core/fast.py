"""FAST tokens (XEP-0484): issued per account and client installation, stored hashed, rotated.

One record per (account, user-agent id) in the ``fast_tokens`` map store: the client's software and
device (for listing), and at most two live tokens — the newest, and the one before it until the
newest is used (§4.3: a client that missed the new token can still log in). Only SHA-256 of a token
is stored (see :mod:`roost.stream.features.sasl2` for why that still verifies the HMAC).

Invalidation: on request (``<fast invalidate='true'/>``, an admin revoking a device), for the whole
account when its password changes (:meth:`roost.core.accounts.AccountService.set_credentials`),
and a token used makes every older one of that client invalid (§4.3).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roost.stream.features.sasl2 import TOKEN_BYTES, StoredToken, UserAgent, ht_key
from roost.util.datetime import format_datetime

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.storage.api import MapStore

DAY = 86400.0
#: How stale a device's "last used" may get before a login writes it again: a phone reconnects
#: many times an hour, and a write per reconnect would buy the operator nothing.
LAST_USED_PRECISION = 600.0


@dataclass(frozen=True, slots=True)
class Device:
    """A client installation that holds FAST tokens (what ``roost user sessions`` lists)."""

    client_id: str
    software: str
    device: str
    tokens: tuple[StoredToken, ...]
    last_used: float


def _token_json(token: StoredToken) -> dict[str, Any]:
    return {"key": token.key.hex(), "mechanism": token.mechanism, "expiry": token.expiry}


def _token(value: Any) -> StoredToken | None:
    try:
        return StoredToken(bytes.fromhex(value["key"]), str(value["mechanism"]), float(value["expiry"]))
    except (KeyError, TypeError, ValueError):
        return None


def _tokens(record: Any) -> list[StoredToken]:
    stored = record.get("tokens") if isinstance(record, dict) else None
    if not isinstance(stored, list):
        return []
    return [t for t in map(_token, stored) if t is not None]


class FastTokens:
    """The token store of one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        #: One read-modify-write at a time per client record (a login's token use runs beside the
        #: next login's rotation).
        self._locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def _lock(self, domain: str, username: str, client_id: str) -> asyncio.Lock:
        key = (domain, username, client_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    @property
    def store(self) -> MapStore:
        return self.server.storage.map("fast_tokens")

    @property
    def lifetime(self) -> float:
        return self.server.config.c2s.fast_token_days * DAY

    @property
    def rotate(self) -> float:
        return self.server.config.c2s.fast_rotate_days * DAY

    async def _record(self, domain: str, username: str, client_id: str) -> dict[str, Any]:
        value = await self.store.get(domain, username, client_id)
        return dict(value) if isinstance(value, dict) else {}

    async def lookup(self, domain: str, username: str, client_id: str) -> list[StoredToken]:
        """The client's live (not expired) tokens."""
        record = await self._record(domain, username, client_id)
        now = time.time()
        return [t for t in _tokens(record) if t.expiry > now]

    async def issue(
        self, domain: str, username: str, agent: UserAgent, mechanism: str, keep: StoredToken | None = None
    ) -> tuple[str, float]:
        """A new token for the client. ``keep``: the token this login used, valid until the new one
        is used (§4.3); every other earlier token was never used and is dropped."""
        async with self._lock(domain, username, agent.id):
            return await self._issue(domain, username, agent, mechanism, keep)

    async def _issue(
        self, domain: str, username: str, agent: UserAgent, mechanism: str, keep: StoredToken | None
    ) -> tuple[str, float]:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expiry = time.time() + self.lifetime
        record = await self._record(domain, username, agent.id)
        # §4.3: "SHOULD invalidate any tokens previously generated that have not been used".
        kept = [t for t in _tokens(record) if keep is not None and t.key == keep.key]
        new = StoredToken(ht_key(token), mechanism, expiry)
        record.update(
            software=agent.software or record.get("software", ""),
            device=agent.device or record.get("device", ""),
            tokens=[_token_json(t) for t in (*kept, new)],
            last_used=time.time(),  # issued in a login of this device
        )
        await self.store.set(domain, username, agent.id, record)
        return token, expiry

    async def used(self, domain: str, username: str, client_id: str, token: StoredToken) -> None:
        """A login with ``token``: every token of this client that expires earlier is invalid (§4.3)."""
        async with self._lock(domain, username, client_id):
            record = await self._record(domain, username, client_id)
            if not record:
                return  # revoked meanwhile
            tokens = _tokens(record)
            live = [t for t in tokens if t.expiry >= token.expiry]
            now = time.time()
            last = record.get("last_used")
            recent = isinstance(last, (int, float)) and now - last < LAST_USED_PRECISION
            if len(live) == len(tokens) and recent:
                return  # nothing to drop, and "last used" is fresh enough: no write
            record["tokens"] = [_token_json(t) for t in live]
            record["last_used"] = now
            await self.store.set(domain, username, client_id, record)

    def due(self, token: StoredToken) -> bool:
        """Whether a token just used should be replaced in the ``<success/>`` (close to expiry)."""
        return token.expiry - time.time() < self.rotate

    async def invalidate(
        self, domain: str, username: str, client_id: str, token: StoredToken | None = None
    ) -> bool:
        """Drop one token of a client, or all of them (the device is forgotten); whether any was."""
        async with self._lock(domain, username, client_id):
            return await self._invalidate(domain, username, client_id, token)

    async def _invalidate(
        self, domain: str, username: str, client_id: str, token: StoredToken | None
    ) -> bool:
        record = await self._record(domain, username, client_id)
        if not record:
            return False
        if token is None:
            await self.store.set(domain, username, client_id, None)
            return True
        tokens = _tokens(record)
        left = [t for t in tokens if t.key != token.key]
        record["tokens"] = [_token_json(t) for t in left]
        await self.store.set(domain, username, client_id, record)
        return len(left) < len(tokens)

    async def revoke_all(self, domain: str, username: str) -> None:
        """Every token of the account (its password changed, or it is removed)."""
        await self.store.delete_user(domain, username)

    async def devices(self, domain: str, username: str) -> list[Device]:
        """The account's clients with tokens, most recently used first."""
        now = time.time()
        devices = []
        for client_id, value in (await self.store.items(domain, username)).items():
            if not isinstance(value, dict):
                continue
            tokens = tuple(t for t in _tokens(value) if t.expiry > now)
            devices.append(
                Device(
                    client_id,
                    str(value.get("software", "")),
                    str(value.get("device", "")),
                    tokens,
                    float(value.get("last_used", 0.0)),  # type: ignore[arg-type]
                )
            )
        devices.sort(key=lambda d: -d.last_used)
        return devices


def expiry_text(expiry: float) -> str:
    """XEP-0082 DateTime of an expiry (the ``<token expiry=''/>`` attribute)."""
    return format_datetime(expiry)
