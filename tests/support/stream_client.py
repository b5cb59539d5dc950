"""A client for tests driven by Roost's own initiating stream (roost.stream.client) over a real socket.

The socket, TLS (memory BIOs, as the server does it) and the event loop are here; the protocol is all
in the sans-IO stream, so this exercises the client role against the real server.
"""

from __future__ import annotations

import asyncio

from roost.stream.client import C2SClientStream, ClientSettings
from roost.stream.core import Closed, Established, StreamEvent
from roost.stream.events import NeedTls
from roost.transports import tls
from roost.transports.tls_layer import TlsLayer
from roost.xml.element import Element


class StreamClient:
    """One connection; :meth:`login` negotiates, :meth:`send`/:meth:`next_stanza` exchange stanzas."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: C2SClientStream
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.stream = stream
        self.tls: TlsLayer | None = None
        self.events: list[StreamEvent] = []
        self.stanzas: list[Element] = []

    @classmethod
    async def connect(cls, port: int, settings: ClientSettings) -> StreamClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, C2SClientStream(settings))
        client.stream.open()
        client.flush()
        return client

    def flush(self) -> None:
        out = self.stream.data_to_send()
        if out:
            self.writer.write(self.tls.encrypt(out) if self.tls is not None else out)

    def send(self, stanza: Element) -> None:
        self.stream.send(stanza)
        self.flush()

    async def _read(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            raise ConnectionError("the server closed the connection")
        if self.tls is not None:
            data, out, completed = self.tls.receive(data)
            if out:
                self.writer.write(out)
            if completed:
                self._handle(self.stream.tls_established(tls.channel_bindings(self.tls.obj, None)))
            if not data:
                return
        self._handle(self.stream.receive_data(data))

    def _handle(self, events: list[StreamEvent]) -> None:
        for event in events:
            if isinstance(event, Element):
                self.stanzas.append(event)
                continue
            self.events.append(event)
            if isinstance(event, NeedTls):
                self.tls = TlsLayer(tls.client_context(), server_side=False, server_hostname="localhost")
                self.writer.write(self.tls.start())
            elif isinstance(event, Closed):
                self.flush()
                self.writer.write(self.tls.encrypt(event.final) if self.tls is not None else event.final)
        self.flush()

    async def login(self, timeout: float = 10) -> StreamEvent:
        """Negotiate until established or closed; that last event."""
        while True:
            for event in self.events:
                if isinstance(event, (Established, Closed)):
                    return event
            await self._read(timeout)

    async def next_stanza(self, timeout: float = 5) -> Element:
        while not self.stanzas:
            await self._read(timeout)
        return self.stanzas.pop(0)

    def close(self) -> None:
        self._handle(self.stream.close())
        self.writer.close()
