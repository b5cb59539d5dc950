"""Storage: stores by kind (accounts, key-value, map, archive) over memory, SQLite or PostgreSQL."""

from roost.storage.api import (
    JSON,
    AccountExists,
    AccountStore,
    ArchiveItem,
    ArchiveQuery,
    ArchiveStore,
    KeyValueStore,
    MapStore,
    NoSuchAccount,
    NoSuchItem,
    StorageError,
    StoredCredentials,
    StoredCredentialsLike,
)
from roost.storage.manager import StorageManager

__all__ = [
    "JSON",
    "AccountExists",
    "AccountStore",
    "ArchiveItem",
    "ArchiveQuery",
    "ArchiveStore",
    "KeyValueStore",
    "MapStore",
    "NoSuchAccount",
    "NoSuchItem",
    "StorageError",
    "StorageManager",
    "StoredCredentials",
    "StoredCredentialsLike",
]
