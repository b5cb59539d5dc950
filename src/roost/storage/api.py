"""Storage protocols: what modules may ask of storage, independent of the backend.

Modules never see SQL. They open a store by kind through the ``StorageManager``:

* ``AccountStore`` – accounts and their SCRAM credentials (one set per hash).
* ``KeyValueStore`` – one JSON document per (domain, user); user ``""`` is host-wide data.
* ``MapStore`` – JSON values per (domain, user, key).
* ``ArchiveStore`` – an ordered, append-mostly log per (domain, user): MAM, offline messages, MUC history.

Every backend (memory, SQLite, PostgreSQL) passes the same contract suite in ``tests/storage``.
"""

from __future__ import annotations

import builtins
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeAlias

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None

HASH_NAMES = frozenset({"SHA-1", "SHA-256", "SHA-512"})


class StorageError(Exception):
    """The storage layer could not do what was asked (backend down, closed, schema too new …)."""


class AccountExists(StorageError):
    """``create`` was called for an account that already exists."""


class NoSuchAccount(StorageError):
    """The operation needs an existing account."""


class NoSuchItem(StorageError):
    """An archive query referred to an id that is not in that archive.

    XEP-0313 §4.1.1 and §6.1 (v1.1): an unknown UID in 'after-id', 'before-id', 'ids' or the RSM
    <after/>/<before/> MUST be answered with item-not-found, so the store tells the caller instead of
    returning an empty page.
    """

    def __init__(self, item_id: str) -> None:
        super().__init__(f"no archive item with id {item_id!r}")
        self.item_id = item_id


class StoredCredentialsLike(Protocol):
    """Anything shaped like SCRAM stored credentials (``StoredCredentials``, ``ScramCredentials`` …)."""

    @property
    def hash_name(self) -> str: ...
    @property
    def salt(self) -> bytes: ...
    @property
    def iterations(self) -> int: ...
    @property
    def stored_key(self) -> bytes: ...
    @property
    def server_key(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    """SCRAM credentials for one hash (RFC 5802 §3): never the password itself."""

    hash_name: str  # "SHA-1" | "SHA-256" | "SHA-512"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_like(cls, creds: StoredCredentialsLike) -> StoredCredentials:
        """Copy and validate any credentials-shaped object."""
        if creds.hash_name not in HASH_NAMES:
            raise ValueError(f"unknown SCRAM hash {creds.hash_name!r}; expected one of {sorted(HASH_NAMES)}")
        iterations = creds.iterations
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"SCRAM iteration count must be a positive int, not {creds.iterations!r}")
        return cls(
            hash_name=creds.hash_name,
            salt=bytes(creds.salt),
            iterations=creds.iterations,
            stored_key=bytes(creds.stored_key),
            server_key=bytes(creds.server_key),
        )


def credentials_by_hash(credentials: Sequence[StoredCredentialsLike]) -> dict[str, StoredCredentials]:
    """Validate a credential set: known hashes, at most one entry per hash."""
    result: dict[str, StoredCredentials] = {}
    for creds in credentials:
        stored = StoredCredentials.from_like(creds)
        if stored.hash_name in result:
            raise ValueError(f"two credentials for {stored.hash_name}")
        result[stored.hash_name] = stored
    return result


class AccountStore(Protocol):
    """Accounts by (domain, username); usernames arrive already PRECIS-normalized."""

    async def create(self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]) -> None:
        """Create the account; raises ``AccountExists``."""
        ...

    async def get_credentials(self, domain: str, username: str, hash_name: str) -> StoredCredentials | None:
        """The credentials for one hash, or None if the account or that hash is missing."""
        ...

    async def set_credentials(
        self, domain: str, username: str, credentials: Sequence[StoredCredentialsLike]
    ) -> None:
        """Replace all of the account's credentials; raises ``NoSuchAccount``."""
        ...

    async def delete(self, domain: str, username: str) -> bool:
        """Delete the account (not its store data: see ``StorageManager.delete_user``); True if it existed."""
        ...

    async def exists(self, domain: str, username: str) -> bool: ...

    async def list(self, domain: str | None = None) -> builtins.list[tuple[str, str]]:
        """(domain, username) pairs, sorted."""
        ...

    async def count(self, domain: str | None = None) -> int: ...


class KeyValueStore(Protocol):
    """One JSON document per (domain, user); user ``""`` is host-wide."""

    async def get(self, domain: str, user: str) -> JSON | None: ...

    async def set(self, domain: str, user: str, value: JSON | None) -> None:
        """Store the document; None deletes it. Raises ValueError for values JSON cannot carry."""
        ...

    async def set_users(self, domain: str, values: Mapping[str, JSON | None]) -> None:
        """Store several users' documents (user → value, None deletes) in one transaction."""
        ...


class MapStore(Protocol):
    """JSON values per (domain, user, key)."""

    async def get(self, domain: str, user: str, key: str) -> JSON | None: ...

    async def set(self, domain: str, user: str, key: str, value: JSON | None) -> None:
        """Store the value; None deletes the key."""
        ...

    async def set_many(self, domain: str, user: str, items: Mapping[str, JSON | None]) -> None:
        """Set (or, for None, delete) several keys in one transaction."""
        ...

    async def items(self, domain: str, user: str) -> dict[str, JSON]: ...

    async def delete_user(self, domain: str, user: str) -> None:
        """Remove every key of that user in this store."""
        ...


class ArchiveItem(NamedTuple):
    """One archived stanza.

    ``timestamp`` is unix seconds; stores keep microsecond precision, so a read-back item carries the
    timestamp rounded to the microsecond. ``with_jid`` is the counterpart (MAM 'with'); ``kind`` is a free
    tag such as "chat", "groupchat" or "offline".

    Immutable. A named tuple rather than a frozen dataclass: two are made per archived 1:1 message on
    the delivery hot path, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field)
    cost twice as much.
    """

    id: str
    timestamp: float
    with_jid: str
    payload: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """Filter plus one page of an archive (XEP-0313 with XEP-0059 RSM).

    Filters: ``with_jid`` — a bare JID matches every item whose with_jid has that bare JID (any resource),
    a full JID only that exact JID (XEP-0313 §4.1.1); ``start``/``end`` — inclusive bounds on the timestamp;
    ``ids`` — only these items.
    Paging: ``after_id``/``before_id`` bound the range exclusively (both may be given); ``limit`` items are
    taken from its start, or with ``reverse`` (RSM <before/>: newest first) from its end. Pages are always
    returned in chronological order. Unknown ids raise ``NoSuchItem``.
    """

    with_jid: str | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: Sequence[str] | None = None
    limit: int = 50
    reverse: bool = False
    #: Full-text filter (XEP-0431): only items whose search text holds every word of it (case-folded).
    #: A text with no words matches nothing.
    text: str | None = None


class ArchiveStore(Protocol):
    """Ordered log per (domain, user), chronological by (timestamp, append order).

    ``search`` (on append and replace) is the item's searchable text (a message body): indexed for
    ``ArchiveQuery.text`` (SQLite FTS5, PostgreSQL tsvector), never returned.
    """

    async def append(self, domain: str, user: str, item: ArchiveItem, *, search: str = "") -> None:
        """Queue the item; it is durable once ``StorageManager.flush()`` returns.

        Raises ValueError/TypeError at once for items no backend could store, so that nothing queued
        can fail permanently later. Waits while the write queue is full (back-pressure).
        """
        ...

    def offer(self, domain: str, user: str, item: ArchiveItem, *, search: str = "") -> bool:
        """Queue the item without ever waiting: False (nothing queued) when the write queue is full.

        For the delivery hot path, which must not stall behind a slow database. Bad items raise as
        with ``append``.
        """
        ...

    async def query(self, domain: str, user: str, q: ArchiveQuery) -> tuple[builtins.list[ArchiveItem], bool]:
        """One page in chronological order and the RSM 'complete' flag.

        complete is True when no matching item lies beyond the page in the direction of travel (after it
        going forward, before it with ``reverse``). Items still queued for that user are written first.
        """
        ...

    async def count(self, domain: str, user: str, q: ArchiveQuery | None = None) -> int:
        """Size of the whole result set for the filters of ``q`` (RSM <count/>); paging fields are ignored."""
        ...

    async def delete(self, domain: str, user: str, ids: Sequence[str] | None = None) -> int:
        """Delete these items (None: all of that user's items here); returns how many went."""
        ...

    async def pop_all(self, domain: str, user: str) -> builtins.list[ArchiveItem]:
        """Remove and return all of that user's items, chronologically, in one transaction."""
        ...

    async def delete_user(self, domain: str, user: str) -> None: ...

    async def ends(self, domain: str, user: str) -> tuple[ArchiveItem | None, ArchiveItem | None]:
        """The first and the last item of that archive (XEP-0313 §7.1 metadata); (None, None) if empty."""
        ...

    async def replace(self, domain: str, user: str, item_id: str, payload: str, *, search: str = "") -> bool:
        """Replace the payload (and search text) of the item(s) with that id: a moderation tombstone.
        False when there is no such item."""
        ...

    async def trim(
        self,
        domain: str,
        user: str,
        *,
        before: float | None = None,
        keep: int | None = None,
        batch: int = 1000,
    ) -> int:
        """Delete at most ``batch`` of the oldest items of one archive that are older than ``before`` or
        beyond the newest ``keep`` (``keep=0``: all of them). Returns how many went: call again while
        it returns ``batch`` (retention in short transactions, never one long lock)."""
        ...

    async def expire(self, before: float, *, batch: int = 1000, spare: Sequence[tuple[str, str]] = ()) -> int:
        """Delete at most ``batch`` items older than ``before`` across every archive of this store,
        except the (domain, user) archives in ``spare``; returns how many went."""
        ...

    async def owners(
        self, after: tuple[str, str] | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, str]]:
        """(domain, user) pairs that have items in this store, sorted, after ``after`` (keyset walk)."""
        ...


# --- helpers shared by every backend, so that they agree on edge cases -------------------------------


def encode_json(value: JSON) -> str:
    """Serialize a JSON value the one way every backend stores it.

    NaN/Infinity and non-JSON objects raise ValueError/TypeError; text that is not valid Unicode (lone
    surrogates) raises ValueError, because no SQL backend can store it.
    """
    text = _ENCODER.encode(value)
    check_text(text, "value")
    return text


# One encoder for all values: json.dumps with options builds a new JSONEncoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def decode_json(text: str) -> JSON:
    value: JSON = json.loads(text)
    return value


def check_text(text: str, what: str) -> None:
    """Refuse strings an SQL backend cannot store: lone surrogates and NUL (PostgreSQL rejects U+0000)."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{what} contains U+0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode: {exc.reason}") from None


def timestamp_to_us(timestamp: float) -> int:
    """Unix seconds → integer microseconds, the stored form (exact and index-friendly in every SQL engine)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
        raise ValueError(f"timestamp must be a finite number of seconds, not {timestamp!r}")
    return round(timestamp * 1_000_000)


def us_to_timestamp(us: int) -> float:
    return us / 1_000_000


def check_archive_item(item: ArchiveItem) -> None:
    """Validate before queueing: the writer must never hold an item that can only fail."""
    # Fast path for the usual item (every archived message passes here twice): one NUL scan and an
    # O(1) ASCII test over the joined text instead of four checks; anything unusual takes the full,
    # explaining checks below.
    if (
        type(item) is ArchiveItem
        and item.id
        and type(item.timestamp) is float
        and math.isfinite(item.timestamp)
    ):
        try:
            joined = item.id + item.with_jid + item.payload + item.kind
        except TypeError:
            pass
        else:
            if type(joined) is str and "\x00" not in joined and joined.isascii():
                return
    if not isinstance(item, ArchiveItem):
        raise TypeError(f"expected ArchiveItem, not {type(item).__name__}")
    check_text(item.id, "archive item id")
    if not item.id:
        raise ValueError("archive item id must not be empty")
    timestamp_to_us(item.timestamp)
    check_text(item.with_jid, "archive item with_jid")
    check_text(item.payload, "archive item payload")
    check_text(item.kind, "archive item kind")


def bare_jid(jid: str) -> str:
    """The bare part of a JID string: everything before the first '/'.

    Neither localpart nor domainpart may contain '/' (RFC 7622 §3.3.1, §3.2), so the first slash starts
    the resource.
    """
    return jid.split("/", 1)[0]


#: Runs of letters and digits (not '_', which FTS5's unicode61 tokenizer treats as a separator).
_WORD = re.compile(r"[^\W_]+")


def search_words(text: str) -> builtins.list[str]:
    """The words of a search text or query: NFC, case-folded, in order, without repeats.

    Every backend tokenizes roughly like this (FTS5 unicode61, PostgreSQL's 'simple' parser), so a
    query of whole words finds the same items everywhere.
    """
    return list(dict.fromkeys(_WORD.findall(unicodedata.normalize("NFC", text).casefold())))
