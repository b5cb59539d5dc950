"""Persistence of pubsub nodes and items on the map store, with writes batched off the hot path.

Two map stores, keyed by (domain, owner): ``owner`` is the account's username for PEP and "" for a
service domain.

* ``pubsub_nodes``: node name → meta-data (configuration, affiliations, subscriptions).
* ``pubsub_items``: ``["node", "item id"]`` (JSON text) → ``{"xml", "publisher", "ts"}``.

An operation's :class:`~roost.modules.pubsub.engine.Outcome` is queued with :meth:`NodeStore.record`
and written within a few milliseconds together with others (one ``set_many`` per owner and store); a
publish never waits for the disk. Loading an owner first writes what is still queued for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from roost.modules.pubsub.engine import Item, Node, Outcome, PubSubService
from roost.storage.api import JSON
from roost.storage.manager import StorageManager
from roost.xml.fragment import FragmentError, parse_element
from roost.xml.serializer import serialize

log = logging.getLogger("roost.mod.pubsub.store")

Owner = tuple[str, str]  # (domain, owner username or "")
_DELAY = 0.02
#: Upper bound when reading a stored payload back (far above any configurable payload limit).
_MAX_STORED_BYTES = 16 * 1024 * 1024


def item_key(node: str, item_id: str) -> str:
    return json.dumps([node, item_id], ensure_ascii=False, separators=(",", ":"))


class NodeStore:
    """Loads services' nodes and writes their changes in batches."""

    def __init__(
        self, storage: StorageManager, spawn: Callable[[Coroutine[Any, Any, None], str], object]
    ) -> None:
        self.meta = storage.map("pubsub_nodes")
        self.items = storage.map("pubsub_items")
        self._spawn = spawn
        self._meta_pending: dict[Owner, dict[str, JSON | None]] = {}
        self._items_pending: dict[Owner, dict[str, JSON | None]] = {}
        self._lock = asyncio.Lock()
        self._scheduled = False

    # -- reading ------------------------------------------------------------------------------------------
    async def load(self, owner: Owner, service: PubSubService) -> None:
        """Fill ``service`` with the stored nodes of ``owner``."""
        if owner in self._meta_pending or owner in self._items_pending:
            await self.flush()
        domain, user = owner
        metas = await self.meta.items(domain, user)
        for name, data in metas.items():
            if not isinstance(data, dict):
                continue
            try:
                service.nodes[name] = Node.from_json(name, data)
            except (KeyError, TypeError, ValueError):
                log.exception("stored pubsub node %r of %s@%s is unreadable; skipped", name, user, domain)
        loaded: dict[str, list[Item]] = {}
        for key, value in (await self.items.items(domain, user)).items():
            item = self._item(key, value)
            if item is not None and item[0] in service.nodes:
                loaded.setdefault(item[0], []).append(item[1])
        for name, items in loaded.items():
            items.sort(key=lambda i: i.timestamp)
            service.nodes[name].items = {i.id: i for i in items}

    def _item(self, key: str, value: JSON) -> tuple[str, Item] | None:
        try:
            node, item_id = json.loads(key)
            if not isinstance(value, dict):
                raise TypeError("not an object")
            xml, ts = value.get("xml"), value.get("ts", 0)
            payload = parse_element(xml, _MAX_STORED_BYTES) if isinstance(xml, str) else None
            if not isinstance(ts, int | float):
                raise TypeError("bad timestamp")
            return str(node), Item(str(item_id), payload, str(value.get("publisher", "")), float(ts))
        except (ValueError, FragmentError, TypeError):
            log.warning("stored pubsub item %r is unreadable; skipped", key)
            return None

    # -- writing ------------------------------------------------------------------------------------------
    def record(self, owner: Owner, service: PubSubService, outcome: Outcome) -> None:
        """Queue what ``outcome`` changed."""
        if not outcome.changed:
            return
        meta = self._meta_pending.setdefault(owner, {})
        items = self._items_pending.setdefault(owner, {})
        for name in outcome.meta:
            node = service.nodes.get(name)
            if node is not None:
                meta[name] = node.meta_json()
        for (name, item_id), item in outcome.items.items():
            items[item_key(name, item_id)] = None if item is None else _item_json(item)
        for name in outcome.deleted:
            meta[name] = None
            self._spawn(self._delete_items(owner, name, service), f"pubsub-drop-{name}")
        self._schedule()

    async def _delete_items(self, owner: Owner, name: str, service: PubSubService) -> None:
        """A deleted node's items (read their keys; spare those of a node created again since)."""
        await self.flush()
        domain, user = owner
        again = service.nodes.get(name)
        keep = {item_key(name, i) for i in again.items} if again is not None else set()
        keys = [k for k in (await self.items.items(domain, user)) if _node_of(k) == name and k not in keep]
        if keys:
            await self.items.set_many(domain, user, dict.fromkeys(keys))

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._spawn(self._later(), "pubsub-writer")

    async def _later(self) -> None:
        await asyncio.sleep(_DELAY)
        self._scheduled = False
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued (in order: a flush already running finishes first)."""
        async with self._lock:
            while self._meta_pending or self._items_pending:
                meta, self._meta_pending = self._meta_pending, {}
                items, self._items_pending = self._items_pending, {}
                for (domain, user), changes in meta.items():
                    if changes:
                        await self.meta.set_many(domain, user, changes)
                for (domain, user), changes in items.items():
                    if changes:
                        await self.items.set_many(domain, user, changes)

    async def delete_owner(self, owner: Owner) -> None:
        """Every node and item of ``owner`` (account deletion)."""
        await self.flush()
        domain, user = owner
        await self.meta.delete_user(domain, user)
        await self.items.delete_user(domain, user)


def _item_json(item: Item) -> dict[str, JSON]:
    return {
        "xml": serialize(item.payload) if item.payload is not None else None,
        "publisher": item.publisher,
        "ts": item.timestamp,
    }


def _node_of(key: str) -> str | None:
    try:
        node = json.loads(key)[0]
    except (ValueError, IndexError, TypeError):
        return None
    return str(node)
