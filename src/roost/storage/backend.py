"""The internal contract between ``StorageManager`` and a backend (memory or SQL).

Modules never see this: they get ``AccountStore``/``KeyValueStore``/``MapStore`` straight from the backend,
and an ``ArchiveStore`` whose appends the manager batches before handing them to ``append_archive``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from roost.storage.api import AccountStore, ArchiveItem, ArchiveQuery, KeyValueStore, MapStore


class QueuedAppend(NamedTuple):
    """An archive item on its way through the batching writer (immutable: the database thread reads it;
    a named tuple, not a frozen dataclass, for the hot path's sake — see ``ArchiveItem``)."""

    store: str
    domain: str
    user: str
    item: ArchiveItem
    search: str = ""


class ArchiveBackend(Protocol):
    """``ArchiveStore`` without ``append``: the manager owns the write path."""

    async def query(
        self, domain: str, user: str, q: ArchiveQuery
    ) -> tuple[builtins.list[ArchiveItem], bool]: ...
    async def count(self, domain: str, user: str, q: ArchiveQuery | None = None) -> int: ...
    async def delete(self, domain: str, user: str, ids: Sequence[str] | None = None) -> int: ...
    async def pop_all(self, domain: str, user: str) -> builtins.list[ArchiveItem]: ...
    async def delete_user(self, domain: str, user: str) -> None: ...
    async def ends(self, domain: str, user: str) -> tuple[ArchiveItem | None, ArchiveItem | None]: ...
    async def replace(
        self, domain: str, user: str, item_id: str, payload: str, *, search: str = ""
    ) -> bool: ...
    async def trim(
        self,
        domain: str,
        user: str,
        *,
        before: float | None = None,
        keep: int | None = None,
        batch: int = 1000,
    ) -> int: ...
    async def expire(
        self, before: float, *, batch: int = 1000, spare: Sequence[tuple[str, str]] = ()
    ) -> int: ...
    async def owners(
        self, after: tuple[str, str] | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, str]]: ...


class Backend(Protocol):
    @property
    def accounts(self) -> AccountStore: ...
    def keyvalue(self, name: str) -> KeyValueStore: ...
    def map(self, name: str) -> MapStore: ...
    def archive(self, name: str) -> ArchiveBackend: ...

    async def append_archive(self, entries: Sequence[QueuedAppend]) -> None:
        """Write all entries in one transaction, in order (so append order breaks timestamp ties)."""
        ...

    async def delete_user(self, domain: str, username: str) -> None:
        """Remove the account and every store's data of that user in one transaction."""
        ...

    async def close(self) -> None: ...
