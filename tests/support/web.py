"""Raw WebSocket (RFC 7395) and BOSH (XEP-0124/0206) clients on aiohttp, and a server with HTTP listeners.

The clients speak the framing by hand (SCRAM via Roost's own client side), so tests see exactly
what travels: every WebSocket message, every ``<body/>``.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from roost.app import create_server
from roost.config.loader import load_config
from roost.stream.bosh import HTTPBIND, XBOSH
from roost.stream.framing import FRAMING
from roost.stream.sasl.scram import ScramClient
from roost.xml.element import Element
from roost.xml.ns import BIND, CLIENT, SASL
from roost.xml.parser import StreamParser
from roost.xml.serializer import serialize
from tests.support.server import RunningServer


def write_web_config(tmp_path: Path, extra: str = "", *, server: str = "") -> Path:
    """A roost.toml with c2s, http and https listeners on free ports (``server``: more [server] keys)."""
    data_dir = tmp_path / "data"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["localhost"]
data_dir = "{data_dir}"
{server}

[[listen]]
kind = "c2s"
address = "127.0.0.1:0"

[[listen]]
kind = "http"
address = "127.0.0.1:0"

[[listen]]
kind = "https"
address = "127.0.0.1:0"

[storage]
url = "sqlite:///{data_dir / "roost.db"}"

{extra}
"""
    )
    return path


@asynccontextmanager
async def web_server(tmp_path: Path, extra: str = "", *, server: str = "") -> AsyncIterator[RunningServer]:
    config = load_config(write_web_config(tmp_path, extra, server=server))
    roost = create_server(config)
    await roost.start()
    running = RunningServer(roost, config.server.data_dir)
    try:
        yield running
    finally:
        await running.stop()


def http_url(running: RunningServer, path: str = "", *, tls: bool = True) -> str:
    kind = "https" if tls else "http"
    host, port = running.server.addresses[kind]
    return f"{kind}://{host}:{port}{path}"


def parse_one(data: bytes | str) -> Element:
    """One standalone element (a WebSocket message, a BOSH body)."""
    raw = data.encode() if isinstance(data, str) else data
    parser = StreamParser(10_000_000, root=("urn:test", "w"))
    parser.feed(b"<w xmlns='urn:test'>")
    items = [i for i in parser.feed(raw + b"</w>") if isinstance(i, Element)]
    assert len(items) == 1, f"expected one element in {raw!r}"
    return items[0]


def _sasl(name: str, data: bytes, mechanism: str | None = None) -> Element:
    el = Element(name, SASL, {"mechanism": mechanism} if mechanism else None)
    el.children.append(base64.b64encode(data).decode() or "=")
    return el


def bind_iq(resource: str | None) -> Element:
    iq = Element("iq", CLIENT, {"type": "set", "id": "bind1"})
    bind = iq.add("bind", BIND)
    if resource is not None:
        bind.add("resource", text=resource)
    return iq


class WsClient:
    """One XMPP-over-WebSocket connection."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.jid = ""

    @classmethod
    async def connect(
        cls, url: str, protocols: tuple[str, ...] = ("xmpp",), headers: dict[str, str] | None = None
    ) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, protocols=protocols, ssl=False, headers=headers)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def aclose(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def send(self, el: Element | str) -> None:
        await self.ws.send_str(el if isinstance(el, str) else serialize(el))

    async def message(self, timeout: float = 5) -> str:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"not a text message: {msg.type!r} {msg.data!r}")
        return str(msg.data)

    async def element(self, timeout: float = 5) -> Element:
        return parse_one(await self.message(timeout))

    async def open(self, to: str = "localhost") -> Element:
        """Send <open/>; return the features."""
        await self.send(f'<open xmlns="{FRAMING}" to="{to}" version="1.0"/>')
        opened = await self.element()
        assert (opened.name, opened.ns) == ("open", FRAMING), opened
        features = await self.element()
        assert features.name == "features", features
        return features

    async def closed(self, timeout: float = 5) -> int | None:
        """Read until the WebSocket closes; its close code."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return int(msg.data)  # the code in the server's close frame
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code
            if msg.type is aiohttp.WSMsgType.ERROR:
                return self.ws.close_code

    async def login(self, username: str, password: str, resource: str | None = None) -> None:
        features = await self.open()
        assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is None  # RFC 7395 §3.9
        client = ScramClient("SHA-256", username, password)
        await self.send(_sasl("auth", client.first(), "SCRAM-SHA-256"))
        challenge = await self.element()
        assert challenge.name == "challenge", challenge
        await self.send(_sasl("response", client.respond(base64.b64decode(challenge.text))))
        success = await self.element()
        assert success.name == "success", success
        client.verify(base64.b64decode(success.text))
        features = await self.open()  # RFC 7395 §3.7: restart with a new <open/>
        assert features.find("bind", BIND) is not None
        await self.send(bind_iq(resource))
        reply = await self.element()
        assert reply.attrs.get("type") == "result", reply
        self.jid = reply.find("bind", BIND).find_text("jid")  # type: ignore[union-attr]


class BoshClient:
    """One BOSH session: numbered requests, one at a time or several at once."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.rid = random.randint(1_000_000, 2**40)
        self.sid = ""
        self.jid = ""
        self.inbox: list[Element] = []

    @classmethod
    async def start(cls, url: str) -> BoshClient:
        return cls(url, aiohttp.ClientSession())

    async def aclose(self) -> None:
        await self.session.close()

    def body(self, *payloads: Element | str, **attrs: str) -> bytes:
        self.rid += 1
        wrapper = Element("body", HTTPBIND, {"rid": str(self.rid), **({"sid": self.sid} if self.sid else {})})
        for key, value in attrs.items():
            wrapper.attrs[key.replace("__", ":") if key.startswith("xml__") else key] = value
        text = serialize(wrapper)
        if payloads:
            inner = "".join(p if isinstance(p, str) else serialize(p) for p in payloads)
            text = text[:-2] + ">" + inner + "</body>"
        return text.encode()

    async def post(self, data: bytes, timeout: float = 10) -> tuple[int, Element | None]:
        async with self.session.post(
            self.url,
            data=data,
            ssl=False,
            headers={"Content-Type": "text/xml; charset=utf-8"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            raw = await response.read()
            if response.status != 200:
                return response.status, None
            return 200, parse_one(raw)

    async def request(self, *payloads: Element | str, **attrs: str) -> Element:
        status, body = await self.post(self.body(*payloads, **attrs))
        assert status == 200 and body is not None, status
        assert body.attrs.get("type") != "terminate", serialize(body)
        self.inbox.extend(c for c in body.elements())
        return body

    async def create(self, to: str = "localhost", **attrs: str) -> Element:
        params = {"to": to, "wait": "1", "hold": "1", "ver": "1.11", "xml__lang": "en"}
        params.update(attrs)
        data = self.body(**params).replace(
            b"<body ", f'<body xmlns:xmpp="{XBOSH}" xmpp:version="1.0" '.encode(), 1
        )
        status, body = await self.post(data)
        assert status == 200 and body is not None
        self.sid = body.attrs.get("sid", "")
        self.inbox.extend(c for c in body.elements())
        return body

    async def next(self, name: str | None = None, timeout: float = 10) -> Element:
        """The next payload from the server (polling with empty requests as needed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.inbox:
            assert loop.time() < deadline, "nothing arrived"
            await self.request()
        el = self.inbox.pop(0)
        if name is not None:
            assert el.name == name, serialize(el)
        return el

    async def restart(self, **attrs: str) -> Element:
        """XEP-0206 §5; 'to' and 'xml:lang' only if given (they SHOULD be there, but may not)."""
        data = self.body(**attrs)
        data = data.replace(b"<body ", f'<body xmlns:xmpp="{XBOSH}" xmpp:restart="true" '.encode(), 1)
        status, body = await self.post(data)
        assert status == 200 and body is not None
        self.inbox.extend(c for c in body.elements())
        return await self.next("features")

    async def login(self, username: str, password: str, resource: str | None = None) -> None:
        await self.create()
        features = await self.next("features")
        assert features.find("mechanisms", SASL) is not None
        client = ScramClient("SHA-256", username, password)
        await self.request(_sasl("auth", client.first(), "SCRAM-SHA-256"))
        challenge = await self.next("challenge")
        await self.request(_sasl("response", client.respond(base64.b64decode(challenge.text))))
        success = await self.next("success")
        client.verify(base64.b64decode(success.text))
        features = await self.restart()
        assert features.find("bind", BIND) is not None
        await self.request(bind_iq(resource))
        reply = await self.next("iq")
        assert reply.attrs.get("type") == "result", serialize(reply)
        self.jid = reply.find("bind", BIND).find_text("jid")  # type: ignore[union-attr]
