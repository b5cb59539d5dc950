"""The event bus: typed hooks with prioritised handlers (Prosody's model) and filters (ejabberd's).

* :meth:`EventBus.fire` / :meth:`EventBus.fire_sync` run the handlers of a :class:`FireHook` from
  the highest priority down; a handler that returns ``True`` claims the event and stops the chain.
* :meth:`EventBus.fold` passes a value through the filters of a :class:`FoldHook`; each returns the
  value (or a replacement) or ``None`` to drop it.

Both stay synchronous while the handlers answer synchronously (the stanza hot path: no coroutine,
no task). Any handler may return an awaitable when, this time, it must wait (e.g. for storage); the
chain then continues after it, in order, and the caller gets an awaitable of the result. Whether a
handler is a coroutine function is decided once, at registration.

Errors: a fire handler that raises anything but :class:`StanzaError` is logged and the chain goes
on. A filter that raises is the stanza's failure: the exception reaches the router, which answers
that stanza (never another session's) with an error.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from roost.core.hooks import FireHook, FoldHook, Hook, lookup
from roost.stanza.errors import StanzaError

log = logging.getLogger("roost.events")

Handler = Callable[[Any], Any]
T = TypeVar("T")


@dataclass(order=True, slots=True)
class _Entry:
    sort_key: tuple[int, int]
    handler: Handler = field(compare=False)
    is_async: bool = field(compare=False)


def _is_awaitable(value: object) -> bool:
    return hasattr(type(value), "__await__")


class EventBus:
    """Handlers by hook name."""

    def __init__(self, name: str = "global") -> None:
        self.name = name
        #: By the hook's canonical object (identity-hashed: a fast lookup on the hot path).
        self._handlers: dict[Hook[Any], list[_Entry]] = {}
        self._counter = 0

    def on(self, event: Hook[Any] | str, handler: Handler, priority: int = 0) -> Callable[[], None]:
        """Register ``handler``; returns a function that unregisters it (used on module unload)."""
        key = lookup(event)
        self._counter += 1
        entry = _Entry((-priority, self._counter), handler, inspect.iscoroutinefunction(handler))
        entries = self._handlers.setdefault(key, [])
        entries.append(entry)
        entries.sort()

        def remove() -> None:
            if entry in entries:
                entries.remove(entry)

        return remove

    def _by_name(self, event: Hook[Any] | str) -> list[_Entry] | None:
        """Handlers of a hook given by name (the hot path passes the hook objects themselves)."""
        return self._handlers.get(lookup(event)) if event.__class__ is str else None

    def has_handlers(self, event: Hook[Any] | str) -> bool:
        entries = self._handlers.get(event)  # type: ignore[arg-type]
        return bool(entries if entries is not None else self._by_name(event))

    def handler_count(self) -> int:
        """How many handlers are registered (a module unload leaves none of its own)."""
        return sum(len(entries) for entries in self._handlers.values())

    # -- fire ------------------------------------------------------------------------------------------
    async def fire(self, event: FireHook[T] | str, payload: T) -> bool:
        """Run handlers in priority order until one returns True; True if one claimed the event."""
        entries = self._handlers.get(event)  # type: ignore[arg-type]
        if entries is None:
            entries = self._by_name(event)
        for entry in tuple(entries or ()):
            try:
                result = entry.handler(payload)
                if entry.is_async or (result is not None and result.__class__ is not bool):
                    result = await result
            except Exception:
                log.exception("handler %r for %s failed", entry.handler, event)
                continue
            if result is True:
                return True
        return False

    def fire_sync(self, event: FireHook[T] | str, payload: T) -> bool | Awaitable[bool]:
        """Like :meth:`fire`, but without a coroutine while handlers answer synchronously (hot path).

        A synchronous handler may also return an awaitable when, this time, it must wait (e.g. for
        storage): the chain then continues asynchronously from there, in order. The caller gets
        either a bool or an awaitable of one. A :class:`StanzaError` reaches the caller (the router
        answers the stanza with it).
        """
        entries = self._handlers.get(event)  # type: ignore[arg-type]
        if entries is None:
            entries = self._by_name(event)
        if not entries:
            return False
        for i, entry in enumerate(entries):
            if entry.is_async:
                return self._fire_from(tuple(entries), payload, i, event)
            try:
                result = entry.handler(payload)
            except StanzaError:
                raise
            except Exception:
                log.exception("handler %r for %s failed", entry.handler, event)
                continue
            if result is True:
                return True
            if result is not None and result is not False:
                return self._resume(result, tuple(entries), payload, i + 1, event)
        return False

    async def _resume(
        self, pending: Awaitable[Any], entries: tuple[_Entry, ...], payload: Any, start: int, event: object
    ) -> bool:
        try:
            if await pending is True:
                return True
        except StanzaError:
            raise
        except Exception:
            log.exception("handler for %s failed", event)
        return await self._fire_from(entries, payload, start, event)

    async def _fire_from(self, entries: tuple[_Entry, ...], payload: Any, start: int, event: object) -> bool:
        for entry in entries[start:]:
            try:
                result = entry.handler(payload)
                if entry.is_async or (result is not None and result.__class__ is not bool):
                    result = await result
            except StanzaError:
                raise  # the router answers it, as for synchronous handlers
            except Exception:
                log.exception("handler %r for %s failed", entry.handler, event)
                continue
            if result is True:
                return True
        return False

    # -- fold ------------------------------------------------------------------------------------------
    def fold(self, event: FoldHook[T] | str, value: T) -> T | Awaitable[T | None] | None:
        """Pass ``value`` through every filter; ``None`` from one drops it.

        Synchronous while the filters are; a filter that returns an awaitable (or is a coroutine
        function) makes the rest of the chain run after it, and the caller gets an awaitable.
        """
        entries = self._handlers.get(event)  # type: ignore[arg-type]
        if entries is None:
            entries = self._by_name(event)
        if not entries:
            return value
        for i, entry in enumerate(entries):
            result = entry.handler(value)
            if result is value:
                continue
            if result is None:
                return None
            if entry.is_async or _is_awaitable(result):
                return self._fold_from(result, tuple(entries), i + 1)
            value = result
        return value

    async def _fold_from(self, pending: Awaitable[Any], entries: tuple[_Entry, ...], start: int) -> Any:
        value = await pending
        for entry in entries[start:]:
            if value is None:
                return None
            result = entry.handler(value)
            if entry.is_async or _is_awaitable(result):
                result = await result
            value = result
        return value
