"""Stream management on the HTTP transports: a WebSocket session resumed after its connection
dropped (on WebSocket again, or on TCP: one session, any connection), and acks over BOSH."""

from __future__ import annotations

import base64
from pathlib import Path

from roost.jid import JID
from roost.stream.sasl.scram import ScramClient
from roost.xml.element import Element
from roost.xml.ns import CLIENT, SASL, SM
from tests.support.im import eventually
from tests.support.raw import RawClient
from tests.support.server import RunningServer
from tests.support.web import BoshClient, WsClient, http_url, web_server

EXTRA = "[sm]\nack_every = 0\nack_after_seconds = 0\n"


def chat(to: str, n: int) -> Element:
    m = Element("message", CLIENT, {"to": to, "type": "chat", "id": f"m{n}"})
    m.add("body", text=f"message {n}")
    return m


async def ws_authenticated(running: RunningServer, username: str, password: str) -> WsClient:
    """A WebSocket client that has authenticated and restarted, not bound."""
    ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
    await ws.open()
    client = ScramClient("SHA-256", username, password)
    await ws.send(_sasl("auth", client.first(), "SCRAM-SHA-256"))
    challenge = await ws.element()
    await ws.send(_sasl("response", client.respond(base64.b64decode(challenge.text))))
    assert (await ws.element()).name == "success"
    features = await ws.open()
    assert features.find("sm", SM) is not None
    return ws


def _sasl(name: str, data: bytes, mechanism: str | None = None) -> Element:
    el = Element(name, SASL, {"mechanism": mechanism} if mechanism else None)
    el.children.append(base64.b64encode(data).decode() or "=")
    return el


async def detached(running: RunningServer, jid: str) -> None:
    async def check() -> bool:
        session = running.server.sessions.get(JID.parse(jid))
        return session is not None and session.connection is None

    await eventually(check)


async def test_websocket_session_resumed_on_websocket_then_on_tcp(tmp_path: Path) -> None:
    async with web_server(tmp_path, EXTRA) as running:
        await running.add_user("alice@localhost", "pw-alice")
        await running.add_user("bob@localhost", "pw-bob")
        bob = await RawClient.login(running.c2s_port, "bob", "pw-bob", "tcp")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        await ws.login("alice", "pw-alice", "web")
        await ws.send(Element("enable", SM, {"resume": "true"}))
        enabled = await ws.element()
        assert enabled.name == "enabled" and enabled.attrs["resume"] == "true"
        sm_id = enabled.attrs["id"]
        for n in range(3):
            bob.send(chat("alice@localhost/web", n))
        assert (await ws.element()).attrs["id"] == "m0"
        await ws.send(Element("a", SM, {"h": "1"}))
        await ws.aclose()  # the WebSocket goes away without <close/>: not a logout
        await detached(running, "alice@localhost/web")
        bob.send(chat("alice@localhost/web", 3))

        # Resumed over WebSocket: m1 and m2 (written to the dead connection, maybe) and m3.
        again = await ws_authenticated(running, "alice", "pw-alice")
        await again.send(Element("resume", SM, {"previd": sm_id, "h": "1"}))
        resumed = await again.element()
        assert resumed.name == "resumed" and resumed.attrs["previd"] == sm_id
        got = [await again.element() for _ in range(3)]
        assert [m.attrs["id"] for m in got] == ["m1", "m2", "m3"]
        await again.aclose()
        await detached(running, "alice@localhost/web")

        # And over TCP: the same session, a third connection, nothing acked since h=1.
        tcp = await RawClient.connect(running.c2s_port)
        await tcp.open()
        await tcp.starttls()
        assert (await tcp.auth_scram("alice", "pw-alice")).name == "success"
        await tcp.open()
        tcp.send(Element("resume", SM, {"previd": sm_id, "h": "4"}))
        resumed = await tcp.element()
        assert resumed.name == "resumed"
        tcp.send(chat("bob@localhost/tcp", 9))
        from_alice = await bob.element()
        assert from_alice.attrs["from"] == "alice@localhost/web" and from_alice.attrs["id"] == "m9"
        tcp.close()
        bob.close()


async def test_acks_over_bosh(tmp_path: Path) -> None:
    async with web_server(tmp_path, EXTRA) as running:
        await running.add_user("alice@localhost", "pw-alice")
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            await bosh.create()
            features = await bosh.next("features")
            client = ScramClient("SHA-256", "alice", "pw-alice")
            await bosh.request(_sasl("auth", client.first(), "SCRAM-SHA-256"))
            challenge = await bosh.next("challenge")
            await bosh.request(_sasl("response", client.respond(base64.b64decode(challenge.text))))
            await bosh.next("success")
            features = await bosh.restart(to="localhost")
            assert features.find("sm", SM) is not None
            iq = Element("iq", CLIENT, {"type": "set", "id": "b"})
            iq.add("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            await bosh.request(iq)
            assert (await bosh.next("iq")).attrs["type"] == "result"
            await bosh.request(Element("enable", SM))
            assert (await bosh.next("enabled")).ns == SM
            ping = Element("iq", CLIENT, {"type": "get", "id": "p", "to": "localhost"})
            ping.add("ping", "urn:xmpp:ping")
            await bosh.request(ping, Element("r", SM))
            # The <a/> goes out as soon as the <r/> is read (§4): maybe before the pong.
            got = {el.name: el for el in [await bosh.next(), await bosh.next()]}
            assert got["iq"].attrs["id"] == "p" and got["a"].attrs["h"] == "1"
        finally:
            await bosh.aclose()
