"""In-memory backend: plain dicts with exactly the semantics of the SQL backend (for module tests).

Values are kept in their encoded JSON form and decoded on read, so callers get fresh copies and the same
errors (NaN, non-JSON objects) as from SQL; archive timestamps are kept as integer microseconds, as in SQL.
"""

from __future__ import annotations

import bisect
import builtins
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from roost.storage.api import (
    JSON,
    AccountExists,
    ArchiveItem,
    ArchiveQuery,
    NoSuchAccount,
    NoSuchItem,
    StoredCredentials,
    StoredCredentialsLike,
    bare_jid,
    credentials_by_hash,
    decode_json,
    encode_json,
    search_words,
    timestamp_to_us,
    us_to_timestamp,
)
from roost.storage.backend import QueuedAppend

_UserKey = tuple[str, str, str]  # (store, domain, user)


class MemoryAccounts:
    def __init__(self) -> None:
        self._accounts: dict[tuple[str, str], dict[str, StoredCredentials]] = {}

    async def create(self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]) -> None:
        creds = credentials_by_hash(credentials)
        if (domain, username) in self._accounts:
            raise AccountExists(f"{username}@{domain}")
        self._accounts[(domain, username)] = creds

    async def get_credentials(self, domain: str, username: str, hash_name: str) -> StoredCredentials | None:
        return self._accounts.get((domain, username), {}).get(hash_name)

    async def set_credentials(
        self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]
    ) -> None:
        creds = credentials_by_hash(credentials)
        if (domain, username) not in self._accounts:
            raise NoSuchAccount(f"{username}@{domain}")
        self._accounts[(domain, username)] = creds

    async def delete(self, domain: str, username: str) -> bool:
        return self._accounts.pop((domain, username), None) is not None

    async def exists(self, domain: str, username: str) -> bool:
        return (domain, username) in self._accounts

    async def list(self, domain: str | None = None) -> builtins.list[tuple[str, str]]:
        return sorted(key for key in self._accounts if domain is None or key[0] == domain)

    async def count(self, domain: str | None = None) -> int:
        return sum(1 for key in self._accounts if domain is None or key[0] == domain)


class MemoryKeyValue:
    def __init__(self, name: str, data: dict[_UserKey, str]) -> None:
        self._name = name
        self._data = data

    async def get(self, domain: str, user: str) -> JSON | None:
        text = self._data.get((self._name, domain, user))
        return None if text is None else decode_json(text)

    async def set(self, domain: str, user: str, value: JSON | None) -> None:
        if value is None:
            self._data.pop((self._name, domain, user), None)
        else:
            self._data[(self._name, domain, user)] = encode_json(value)

    async def set_users(self, domain: str, values: Mapping[str, JSON | None]) -> None:
        encoded = {user: None if value is None else encode_json(value) for user, value in values.items()}
        for user, text in encoded.items():
            if text is None:
                self._data.pop((self._name, domain, user), None)
            else:
                self._data[(self._name, domain, user)] = text


class MemoryMap:
    def __init__(self, name: str, data: dict[_UserKey, dict[str, str]]) -> None:
        self._name = name
        self._data = data

    async def get(self, domain: str, user: str, key: str) -> JSON | None:
        text = self._data.get((self._name, domain, user), {}).get(key)
        return None if text is None else decode_json(text)

    async def set(self, domain: str, user: str, key: str, value: JSON | None) -> None:
        await self.set_many(domain, user, {key: value})

    async def set_many(self, domain: str, user: str, items: Mapping[str, JSON | None]) -> None:
        # Encode everything first: one bad value changes nothing, as a rolled-back transaction would.
        encoded = {key: None if value is None else encode_json(value) for key, value in items.items()}
        entries = self._data.setdefault((self._name, domain, user), {})
        for key, text in encoded.items():
            if text is None:
                entries.pop(key, None)
            else:
                entries[key] = text
        if not entries:
            del self._data[(self._name, domain, user)]

    async def items(self, domain: str, user: str) -> dict[str, JSON]:
        entries = self._data.get((self._name, domain, user), {})
        return {key: decode_json(text) for key, text in entries.items()}

    async def delete_user(self, domain: str, user: str) -> None:
        self._data.pop((self._name, domain, user), None)


class _Entry(NamedTuple):
    ts_us: int
    seq: int
    item: ArchiveItem
    words: frozenset[str] = frozenset()

    @property
    def position(self) -> tuple[int, int]:
        return (self.ts_us, self.seq)


def _anchor(entries: Sequence[_Entry], item_id: str) -> tuple[int, int]:
    for entry in entries:  # chronological, so the earliest item wins if an id was stored twice
        if entry.item.id == item_id:
            return entry.position
    raise NoSuchItem(item_id)


def _filtered(entries: Sequence[_Entry], q: ArchiveQuery) -> Iterable[_Entry]:
    if q.ids is not None:
        present = {entry.item.id for entry in entries}
        for item_id in q.ids:
            if item_id not in present:
                raise NoSuchItem(item_id)
        wanted = set(q.ids)
    start = None if q.start is None else timestamp_to_us(q.start)
    end = None if q.end is None else timestamp_to_us(q.end)
    with_jid = q.with_jid
    with_is_bare = with_jid is not None and "/" not in with_jid
    words = None if q.text is None else frozenset(search_words(q.text))
    for entry in entries:
        if words is not None and (not words or not words <= entry.words):
            continue
        if start is not None and entry.ts_us < start:
            continue
        if end is not None and entry.ts_us > end:
            continue
        if with_jid is not None:
            if with_is_bare:
                if bare_jid(entry.item.with_jid) != with_jid:
                    continue
            elif entry.item.with_jid != with_jid:
                continue
        if q.ids is not None and entry.item.id not in wanted:
            continue
        yield entry


class MemoryArchive:
    def __init__(self, name: str, data: dict[_UserKey, list[_Entry]]) -> None:
        self._name = name
        self._data = data

    def _entries(self, domain: str, user: str) -> list[_Entry]:
        return self._data.get((self._name, domain, user), [])

    async def query(self, domain: str, user: str, q: ArchiveQuery) -> tuple[builtins.list[ArchiveItem], bool]:
        entries = self._entries(domain, user)
        after = None if q.after_id is None else _anchor(entries, q.after_id)
        before = None if q.before_id is None else _anchor(entries, q.before_id)
        matching = [
            entry
            for entry in _filtered(entries, q)
            if (after is None or entry.position > after) and (before is None or entry.position < before)
        ]
        limit = max(q.limit, 0)
        page = matching[max(len(matching) - limit, 0) :] if q.reverse and limit else matching[:limit]
        return [entry.item for entry in page], len(matching) <= limit

    async def count(self, domain: str, user: str, q: ArchiveQuery | None = None) -> int:
        entries = self._entries(domain, user)
        return len(entries) if q is None else sum(1 for _ in _filtered(entries, q))

    async def delete(self, domain: str, user: str, ids: Sequence[str] | None = None) -> int:
        key = (self._name, domain, user)
        entries = self._data.get(key, [])
        if ids is None:
            self._data.pop(key, None)
            return len(entries)
        doomed = set(ids)
        kept = [entry for entry in entries if entry.item.id not in doomed]
        if kept:
            self._data[key] = kept
        else:
            self._data.pop(key, None)
        return len(entries) - len(kept)

    async def pop_all(self, domain: str, user: str) -> builtins.list[ArchiveItem]:
        return [entry.item for entry in self._data.pop((self._name, domain, user), [])]

    async def delete_user(self, domain: str, user: str) -> None:
        self._data.pop((self._name, domain, user), None)

    async def ends(self, domain: str, user: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        entries = self._entries(domain, user)
        if not entries:
            return None, None
        return entries[0].item, entries[-1].item

    async def replace(self, domain: str, user: str, item_id: str, payload: str, *, search: str = "") -> bool:
        entries = self._entries(domain, user)
        found = False
        for i, entry in enumerate(entries):
            if entry.item.id == item_id:
                item = entry.item._replace(payload=payload)
                entries[i] = entry._replace(item=item, words=frozenset(search_words(search)))
                found = True
        return found

    async def trim(
        self,
        domain: str,
        user: str,
        *,
        before: float | None = None,
        keep: int | None = None,
        batch: int = 1000,
    ) -> int:
        key = (self._name, domain, user)
        entries = self._data.get(key, [])
        doomed = 0
        if keep is not None:
            doomed = max(len(entries) - keep, 0)
        if before is not None:
            cutoff = timestamp_to_us(before)
            doomed = max(doomed, sum(1 for entry in entries if entry.ts_us < cutoff))
        doomed = min(doomed, batch)
        if doomed:
            del entries[:doomed]
            if not entries:
                del self._data[key]
        return doomed

    async def expire(self, before: float, *, batch: int = 1000, spare: Sequence[tuple[str, str]] = ()) -> int:
        cutoff = timestamp_to_us(before)
        spared = set(spare)
        oldest = sorted(
            (entry.position, key)
            for key, entries in self._data.items()
            if key[0] == self._name and (key[1], key[2]) not in spared
            for entry in entries
            if entry.ts_us < cutoff
        )[:batch]
        for key in {key for _, key in oldest}:
            entries = self._data[key]
            gone = {position for position, k in oldest if k == key}
            kept = [entry for entry in entries if entry.position not in gone]
            if kept:
                self._data[key] = kept
            else:
                del self._data[key]
        return len(oldest)

    async def owners(
        self, after: tuple[str, str] | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, str]]:
        found = sorted(
            (key[1], key[2])
            for key, entries in self._data.items()
            if key[0] == self._name and entries and (after is None or (key[1], key[2]) > after)
        )
        return found[:limit]


class MemoryBackend:
    """All stores in dicts; every operation is atomic because none of them awaits."""

    def __init__(self) -> None:
        self._accounts = MemoryAccounts()
        self._kv: dict[_UserKey, str] = {}
        self._maps: dict[_UserKey, dict[str, str]] = {}
        self._archives: dict[_UserKey, list[_Entry]] = {}
        self._seq = itertools.count(1)

    @property
    def accounts(self) -> MemoryAccounts:
        return self._accounts

    def keyvalue(self, name: str) -> MemoryKeyValue:
        return MemoryKeyValue(name, self._kv)

    def map(self, name: str) -> MemoryMap:
        return MemoryMap(name, self._maps)

    def archive(self, name: str) -> MemoryArchive:
        return MemoryArchive(name, self._archives)

    async def append_archive(self, entries: Sequence[QueuedAppend]) -> None:
        for queued in entries:
            ts_us = timestamp_to_us(queued.item.timestamp)
            item = queued.item._replace(timestamp=us_to_timestamp(ts_us))
            log = self._archives.setdefault((queued.store, queued.domain, queued.user), [])
            entry = _Entry(ts_us, next(self._seq), item, frozenset(search_words(queued.search)))
            bisect.insort(log, entry, key=lambda entry: entry.position)

    async def delete_user(self, domain: str, username: str) -> None:
        await self._accounts.delete(domain, username)
        for data in (self._kv, self._maps, self._archives):
            for key in [key for key in data if key[1] == domain and key[2] == username]:
                del data[key]

    async def close(self) -> None:
        pass
