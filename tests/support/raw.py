"""A raw XMPP client for tests that need byte-level control (bad input, -PLUS, stream errors).

It parses what the server sends with Roost's own StreamParser (restarting it where the protocol
restarts the stream) and exposes received top-level elements one by one.
"""

from __future__ import annotations

import asyncio
import base64
import ssl

from roost.stream.sasl.scram import ScramClient, parse_mechanism
from roost.transports import tls
from roost.xml.element import Element
from roost.xml.ns import BIND, SASL, STREAM, TLS
from roost.xml.parser import StreamEnd, StreamOpen, StreamParser, XmlStreamError
from roost.xml.serializer import serialize

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)


class StreamClosed(Exception):
    """The server closed the stream or the connection."""


class RawClient:
    """One connection; call the coroutines in protocol order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, domain: str) -> None:
        self.reader = reader
        self.writer = writer
        self.domain = domain
        self.parser = StreamParser(max_stanza_bytes=10_000_000)
        self.queue: list[Element | StreamOpen | StreamEnd] = []
        self.features: Element | None = None
        self.jid: str | None = None

    @classmethod
    async def connect(cls, port: int, domain: str = "localhost", *, direct_tls: bool = False) -> RawClient:
        ctx = tls.client_context() if direct_tls else None
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        return cls(reader, writer, domain)

    # -- I/O --------------------------------------------------------------------------------------------
    def send_raw(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    def send(self, el: Element) -> None:
        self.send_raw(serialize(el, "jabber:client"))

    async def next(self, timeout: float = 5) -> Element | StreamOpen | StreamEnd:
        """The next top-level item from the server; StreamClosed on EOF."""
        while not self.queue:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise StreamClosed("connection closed")
            try:
                self.queue.extend(self.parser.feed(data))
            except XmlStreamError as e:  # pragma: no cover - the server sent bad XML
                raise AssertionError(f"server sent bad XML: {e}") from e
        return self.queue.pop(0)

    async def element(self, timeout: float = 5) -> Element:
        item = await self.next(timeout)
        if not isinstance(item, Element):
            raise AssertionError(f"expected an element, got {item!r}")
        return item

    async def stream_error(self, timeout: float = 5) -> str:
        """Read until a <stream:error/>; its condition."""
        while True:
            item = await self.next(timeout)
            if isinstance(item, Element) and item.ns == STREAM and item.name == "error":
                first = item.first()
                assert first is not None
                return first.name
            if isinstance(item, StreamEnd):
                raise AssertionError("stream closed without an error")

    async def closed(self, timeout: float = 5) -> bool:
        """True once the server has closed the connection."""
        try:
            while True:
                await self.next(timeout)
        except StreamClosed:
            return True

    def close(self) -> None:
        self.writer.close()

    # -- negotiation ----------------------------------------------------------------------------------------
    async def open(self) -> Element:
        """Send a stream header; return the features."""
        self.parser.reset()
        self.queue.clear()
        self.send_raw(HEADER.format(domain=self.domain))
        opened = await self.next()
        assert isinstance(opened, StreamOpen), opened
        features = await self.element()
        assert features.name == "features", features
        self.features = features
        return features

    async def starttls(self, context: ssl.SSLContext | None = None) -> None:
        """STARTTLS; with ``context`` (e.g. one that verifies), SNI names the stream's domain."""
        self.send_raw(f"<starttls xmlns='{TLS}'/>")
        proceed = await self.element()
        assert proceed.name == "proceed", proceed
        if context is None:
            await self.writer.start_tls(tls.client_context())
        else:
            await self.writer.start_tls(context, server_hostname=self.domain)
        await self.open()

    def mechanisms(self) -> list[str]:
        assert self.features is not None
        mechs = self.features.find("mechanisms", SASL)
        return [] if mechs is None else [m.text for m in mechs.elements("mechanism")]

    def tls_version(self) -> str:
        """The connection's TLS version as XEP-0515 writes it ("0304")."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return tls.TLS_VERSION_CODES[ssl_object.version() or ""]

    def channel_binding(self, cb_type: str) -> bytes:
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        return tls.channel_bindings(ssl_object, None)[cb_type]

    async def auth_scram(
        self, username: str, password: str, mechanism: str = "SCRAM-SHA-1", cb_type: str | None = None
    ) -> Element:
        """Run a SCRAM exchange; the final <success/> or <failure/> element."""
        parsed = parse_mechanism(mechanism)
        assert parsed is not None
        hash_name, plus = parsed
        cb_data = self.channel_binding(cb_type) if cb_type else b""
        client = ScramClient(hash_name, username, password, plus=plus, cb_type=cb_type, cb_data=cb_data)
        self._sasl("auth", client.first(), mechanism)
        challenge = await self.element()
        if challenge.name != "challenge":
            return challenge
        self._sasl("response", client.respond(base64.b64decode(challenge.text)))
        result = await self.element()
        if result.name == "success":
            client.verify(base64.b64decode(result.text))
        return result

    async def auth_plain(self, username: str, password: str) -> Element:
        self._sasl("auth", f"\0{username}\0{password}".encode(), "PLAIN")
        return await self.element()

    def _sasl(self, name: str, data: bytes, mechanism: str | None = None) -> None:
        el = Element(name, SASL, {"mechanism": mechanism} if mechanism else None)
        el.children.append(base64.b64encode(data).decode() or "=")
        self.send(el)

    async def bind(self, resource: str | None = None, iq_id: str = "bind1") -> Element:
        iq = Element("iq", "jabber:client", {"type": "set", "id": iq_id})
        bind = iq.add("bind", BIND)
        if resource is not None:
            bind.add("resource", text=resource)
        self.send(iq)
        reply = await self.element()
        if reply.attrs.get("type") == "result":
            jid_el = reply.find("bind", BIND)
            assert jid_el is not None
            self.jid = jid_el.find_text("jid")
        return reply

    @classmethod
    async def login(
        cls, port: int, username: str, password: str, resource: str | None = None, **kwargs: object
    ) -> RawClient:
        """STARTTLS + SCRAM-SHA-1 + bind."""
        client = await cls.connect(port)
        await client.open()
        await client.starttls()
        result = await client.auth_scram(username, password)
        assert result.name == "success", result
        await client.open()
        reply = await client.bind(resource)
        assert reply.attrs.get("type") == "result", reply
        return client
