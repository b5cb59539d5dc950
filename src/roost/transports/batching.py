"""Output batching: every connection written to during one event-loop turn is flushed once, together.

A routed stanza only appends bytes to its recipient's buffer; one callback per loop turn then writes
each touched connection with a single ``transport.write`` (one TLS record and one syscall for all
the stanzas it got in that turn). A MUC message to 100 occupants costs one scheduled callback, not 100.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("roost.transports")


class Flushable(Protocol):
    def flush_output(self) -> None: ...


class WriteBatcher:
    """Collects connections with pending output and flushes them at the end of the loop turn."""

    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._scheduled = False

    def schedule(self, conn: Flushable) -> None:
        self._pending.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        pending = self._pending
        self._pending = []
        for conn in pending:
            try:
                conn.flush_output()
            except Exception:
                log.exception("flushing output failed")
