"""The IQ table: request handlers by (type, payload namespace, payload name, target).

RFC 6120 §8.2.3: every IQ get/set gets exactly one result or error. A handler returns the result
payload (an Element), None for an empty result, or raises StanzaError; anything else it raises is
logged and answered with internal-server-error, and no other session notices.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable

from roost.core.hooks import StanzaEvent
from roost.xml.element import Element


class Target(enum.Enum):
    """Whom an IQ is addressed to."""

    HOST = "host"  #: the server domain itself
    SELF = "self"  #: the requester's own account (no 'to', or its own bare JID)
    ACCOUNT = "account"  #: any local account's bare JID (including one's own)


IqResult = Element | None
IqHandler = Callable[[StanzaEvent], IqResult | Awaitable[IqResult]]


class IqTable:
    """Handlers keyed by (type, ns, name, target)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str, str, Target], tuple[IqHandler, bool]] = {}

    def register(
        self, type_: str, ns: str, name: str, target: Target, handler: IqHandler
    ) -> Callable[[], None]:
        key = (type_, ns, name, target)
        if key in self._handlers:
            raise ValueError(f"an IQ handler for {key} is already registered")
        self._handlers[key] = (handler, inspect.iscoroutinefunction(handler))

        def remove() -> None:
            if self._handlers.get(key, (None,))[0] is handler:
                del self._handlers[key]

        return remove

    def lookup(
        self, type_: str, payload: Element, targets: tuple[Target, ...]
    ) -> tuple[IqHandler, bool] | None:
        for target in targets:
            entry = self._handlers.get((type_, payload.ns, payload.name, target))
            if entry is not None:
                return entry
        return None

    def namespaces(self) -> set[str]:
        return {key[1] for key in self._handlers}

    def has(self, ns: str, target: Target) -> bool:
        return any(k[1] == ns and k[3] is target for k in self._handlers)


class IqTracker:
    """IQs the server sent (pings, module queries), awaiting their result or error."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[Element]] = {}
        self._counter = 0

    def new_id(self) -> str:
        self._counter += 1
        return f"roost-{self._counter:x}"

    def expect(self, iq_id: str) -> asyncio.Future[Element]:
        """A future resolved with the response to the IQ with ``iq_id``."""
        future: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = future
        future.add_done_callback(lambda _: self._pending.pop(iq_id, None))
        return future

    def resolve(self, response: Element) -> bool:
        future = self._pending.pop(response.attrs.get("id", ""), None)
        if future is None or future.done():
            return False
        future.set_result(response)
        return True
