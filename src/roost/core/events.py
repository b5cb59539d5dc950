"""The event bus: named events with prioritised handlers (Prosody's model) and filters (ejabberd's).

Two ways to use it:

* :meth:`EventBus.fire` runs handlers from the highest priority down; a handler that returns ``True``
  claims the event and stops the chain. Async handlers are awaited in turn; a claimed event stops there.
* :meth:`EventBus.fold` passes a value through every filter; each returns the value (possibly a new
  one) or ``None`` to drop it. Filters are synchronous: they run on the stanza hot path.

Whether a handler is async is decided once, at registration, not on every call.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from roost.core import hooks
from roost.stanza.errors import StanzaError

log = logging.getLogger("roost.events")

Handler = Callable[[Any], Any]


@dataclass(order=True, slots=True)
class _Entry:
    sort_key: tuple[int, int]
    handler: Handler = field(compare=False)
    is_async: bool = field(compare=False)


class EventBus:
    """Handlers by event name."""

    def __init__(self, name: str = "global") -> None:
        self.name = name
        self._handlers: dict[str, list[_Entry]] = {}
        self._counter = 0

    def on(self, event: str, handler: Handler, priority: int = 0) -> Callable[[], None]:
        """Register ``handler``; returns a function that unregisters it (used on module unload)."""
        if event not in hooks.ALL:
            raise KeyError(f"unknown hook {event!r}; hook names are declared in roost.core.hooks")
        self._counter += 1
        entry = _Entry((-priority, self._counter), handler, inspect.iscoroutinefunction(handler))
        entries = self._handlers.setdefault(event, [])
        entries.append(entry)
        entries.sort()

        def remove() -> None:
            if entry in entries:
                entries.remove(entry)

        return remove

    def has_handlers(self, event: str) -> bool:
        return bool(self._handlers.get(event))

    async def fire(self, event: str, payload: Any) -> bool:
        """Run handlers in priority order until one returns True; True if one claimed the event."""
        for entry in tuple(self._handlers.get(event, ())):
            try:
                result = entry.handler(payload)
                if entry.is_async:
                    result = await result
            except Exception:
                log.exception("handler %r for %s failed", entry.handler, event)
                continue
            if result is True:
                return True
        return False

    def fire_sync(self, event: str, payload: Any) -> bool | Awaitable[bool]:
        """Like :meth:`fire`, but without a coroutine while handlers answer synchronously (hot path).

        A synchronous handler may also return an awaitable when, this time, it must wait (e.g. for
        storage): the chain then continues asynchronously from there, in order. The caller gets
        either a bool or an awaitable of one.
        """
        entries = self._handlers.get(event)
        if not entries:
            return False
        for i, entry in enumerate(entries):
            if entry.is_async:
                return self._fire_from(event, payload, i)
            try:
                result = entry.handler(payload)
            except StanzaError:
                raise  # the router answers it
            except Exception:
                log.exception("handler %r for %s failed", entry.handler, event)
                continue
            if result is True:
                return True
            if result is not None and result is not False:
                return self._resume(result, event, payload, i + 1)
        return False

    async def _resume(self, pending: Awaitable[Any], event: str, payload: Any, start: int) -> bool:
        if await pending is True:
            return True
        return await self._fire_from(event, payload, start)

    async def _fire_from(self, event: str, payload: Any, start: int) -> bool:
        for entry in tuple(self._handlers.get(event, ()))[start:]:
            try:
                result = entry.handler(payload)
                if entry.is_async or (result is not None and not isinstance(result, bool)):
                    result = await result
            except StanzaError:
                raise  # the router answers it, as for synchronous handlers
            except Exception:
                log.exception("handler %r for %s failed", entry.handler, event)
                continue
            if result is True:
                return True
        return False

    def fold(self, event: str, value: Any) -> Any:
        """Pass ``value`` through every filter; ``None`` from one drops it."""
        entries = self._handlers.get(event)
        if not entries:
            return value
        for entry in entries:
            value = entry.handler(value)
            if value is None:
                return None
        return value
