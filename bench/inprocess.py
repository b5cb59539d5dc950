"""Shared pieces of the in-process micro-benchmarks (no sockets): a session that only counts bytes."""

from __future__ import annotations

from roost.core.server import Server
from roost.core.session import Session, new_session_id


class CountingSession(Session):
    """A bound session whose transport counts what it would have written."""

    __slots__ = ("bytes", "stanzas")

    def __init__(self, server: Server) -> None:
        super().__init__(server, new_session_id("bench"))
        self.bytes = 0
        self.stanzas = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.stanzas += 1

    def close(self, error: object = None, reason: str = "logout") -> None:
        self.server.sessions.unbind(self)
