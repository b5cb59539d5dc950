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
from roost.jid import JID, JIDError
from roost.util.ids import random_token
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
    """IQs the server sent (pings, module queries), awaiting their result or error.

    Ids are unpredictable, and a response resolves a query only if it comes from the entity the
    query was sent to: nobody else can answer on its behalf (a spoofed result for a caps or PEP
    query would otherwise poison what the server learns).
    """

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, asyncio.Future[Element]]] = {}

    def new_id(self) -> str:
        return "roost-" + random_token(12)

    def expect(self, iq_id: str, responder: str | JID) -> asyncio.Future[Element]:
        """A future resolved with the response to the IQ ``iq_id`` sent to ``responder``."""
        future: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = (str(responder), future)
        future.add_done_callback(lambda _: self._pending.pop(iq_id, None))
        return future

    def resolve(self, response: Element) -> bool:
        """Resolve the query ``response`` answers; False (and nothing resolved) if there is none or
        the response does not come from the queried entity."""
        iq_id = response.attrs.get("id", "")
        entry = self._pending.get(iq_id)
        if entry is None:
            return False
        responder, future = entry
        if not _same_entity(response.attrs.get("from"), responder):
            return False
        del self._pending[iq_id]
        if future.done():
            return False
        future.set_result(response)
        return True


def _same_entity(frm: str | None, responder: str) -> bool:
    if frm is None:
        return False
    if frm == responder:
        return True
    try:
        return str(JID.parse(frm)) == responder
    except JIDError:
        return False
