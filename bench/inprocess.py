"""Shared pieces of the in-process micro-benchmarks (no sockets): a session whose connection counts bytes.

The sessions live the production way: ``SessionManager.bind`` + ``announce`` to start, ``end`` to stop.
"""

from __future__ import annotations

from roost.core.server import Server
from roost.core.session import ClientSession, new_session_id
from roost.xml.ns import CLIENT


class CountingConnection:
    """A connection that counts what it would have written."""

    kind = "bench"
    peer = "127.0.0.1"
    stanza_ns: str | None = CLIENT
    secure = True

    def __init__(self) -> None:
        self.bytes = 0
        self.stanzas = 0

    def send_stanza(self, data: bytes) -> None:
        self.bytes += len(data)
        self.stanzas += 1

    def send_raw(self, data: bytes) -> None:
        self.send_stanza(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class CountingSession(ClientSession):
    """A session whose connection counts bytes (``bytes``, ``stanzas``)."""

    __slots__ = ("counter",)

    def __init__(self, server: Server) -> None:
        self.counter = CountingConnection()
        super().__init__(server, new_session_id("bench"), self.counter)

    @property
    def bytes(self) -> int:
        return self.counter.bytes

    @property
    def stanzas(self) -> int:
        return self.counter.stanzas


async def bind(server: Server, user: str, resource: str, domain: str = "localhost") -> CountingSession:
    """Bind a counting session and wait for the modules' ``session/bound`` work, as a login does."""
    session = CountingSession(server)
    manager = server.sessions
    manager.bind(session, domain, user, resource)
    ready = manager.announce(session)
    if ready is not None:
        await ready
    return session
