"""XMPP over WebSocket (RFC 7395) against a real server: login, chat with a TCP client, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest

from roost.stream.framing import FRAMING
from roost.stream.sasl.scram import ScramClient
from roost.transports import tls
from roost.xml.element import Element
from roost.xml.ns import CLIENT, SASL, STREAM
from tests.support.raw import RawClient
from tests.support.web import WsClient, http_url, web_server


def chat(to: str, text: str) -> Element:
    m = Element("message", CLIENT, {"to": to, "type": "chat", "id": "m1"})
    m.add("body", text=text)
    return m


async def test_websocket_login_and_chat_with_a_tcp_client(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw-alice")
        await running.add_user("bob@localhost", "pw-bob")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        bob = await RawClient.login(running.c2s_port, "bob", "pw-bob", "tcp")
        try:
            await ws.login("alice", "pw-alice", "web")
            assert ws.jid == "alice@localhost/web"
            await ws.send(chat("bob@localhost/tcp", "over the web"))
            got = await bob.element()
            assert got.attrs["from"] == "alice@localhost/web" and got.find_text("body") == "over the web"
            bob.send(chat("alice@localhost/web", "over TCP"))
            reply = await ws.element()
            assert reply.name == "message" and reply.find_text("body") == "over TCP"
            assert reply.attrs["from"] == "bob@localhost/tcp"
            # RFC 7395 §3.6: <close/> is answered with <close/>, then the WebSocket closes.
            await ws.send(f'<close xmlns="{FRAMING}"/>')
            closing = await ws.element()
            assert (closing.name, closing.ns) == ("close", FRAMING)
            assert await ws.closed() is not None
        finally:
            bob.close()
            await ws.aclose()


async def test_host_unknown_gets_open_then_error_then_close_each_its_own_message(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        try:
            await ws.send(f'<open xmlns="{FRAMING}" to="elsewhere.example" version="1.0"/>')
            opened = await ws.element()
            assert opened.name == "open"
            error = await ws.element()  # RFC 7395 §3.5
            assert (error.name, error.ns) == ("error", STREAM) and error.first().name == "host-unknown"  # type: ignore[union-attr]
            closing = await ws.element()
            assert closing.name == "close"
            assert await ws.closed() is not None
        finally:
            await ws.aclose()


async def test_subprotocol_xmpp_is_required(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await WsClient.connect(http_url(running, "/xmpp-websocket"), protocols=("chat",))
        assert e.value.status == 400


async def test_oversized_message_is_a_policy_violation(tmp_path: Path) -> None:
    async with web_server(tmp_path, "[c2s]\nmax_stanza_bytes = 4096\n") as running:
        await running.add_user("alice@localhost", "pw")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        try:
            await ws.login("alice", "pw")
            await ws.send(chat("alice@localhost", "x" * 5000))
            error = await ws.element()
            assert error.name == "error" and error.first().name == "policy-violation"  # type: ignore[union-attr]
            assert (await ws.element()).name == "close"
        finally:
            await ws.aclose()


async def test_binary_messages_are_refused(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        try:
            await ws.open()
            await ws.ws.send_bytes(b"<presence/>")
            error = await ws.element()
            assert error.name == "error" and error.first().name == "bad-format"  # type: ignore[union-attr]
        finally:
            await ws.aclose()


async def test_plain_http_with_encryption_required_is_sent_to_the_secure_endpoint(tmp_path: Path) -> None:
    # plain_loopback off: this loopback client stands for one on another machine.
    extra = '[http]\npublic_url = "https://xmpp.example.org"\nplain_loopback = false\n'
    async with web_server(tmp_path, extra) as running:
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket", tls=False))
        try:
            await ws.send(f'<open xmlns="{FRAMING}" to="localhost" version="1.0"/>')
            closing = await ws.element()  # RFC 7395 §3.6.1
            assert closing.name == "close"
            assert closing.attrs["see-other-uri"] == "wss://xmpp.example.org/xmpp-websocket"
            assert await ws.closed() is not None
        finally:
            await ws.aclose()


async def test_plain_http_from_this_machine_logs_in_but_a_proxied_remote_one_not(tmp_path: Path) -> None:
    """[http] plain_loopback (on by default): the embedded default's http://localhost:5280/chat."""
    async with web_server(tmp_path, '[http]\ntrusted_proxies = ["127.0.0.1"]\n') as running:
        await running.add_user("alice@localhost", "pw")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket", tls=False))
        try:
            await ws.login("alice", "pw", "local")
            assert ws.jid == "alice@localhost/local"
        finally:
            await ws.aclose()
        # Through a (trusted) proxy over plain HTTP, the client is remote: refused.
        headers = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "http"}
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket", tls=False), headers=headers)
        try:
            await ws.send(f'<open xmlns="{FRAMING}" to="localhost" version="1.0"/>')
            while (element := await ws.element()).name != "error":
                pass
            assert element.first().name == "policy-violation"  # type: ignore[union-attr]
        finally:
            await ws.aclose()


async def test_plain_http_allowed_when_encryption_is_not_required(tmp_path: Path) -> None:
    async with web_server(tmp_path, "[c2s]\nrequire_encryption = false\n") as running:
        await running.add_user("alice@localhost", "pw")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket", tls=False))
        try:
            await ws.login("alice", "pw", "plain")
            assert ws.jid == "alice@localhost/plain"
        finally:
            await ws.aclose()


JS_DIR = Path(__file__).resolve().parents[1] / "js"


async def test_xmpp_js_client_logs_in_and_chats_over_websocket(tmp_path: Path) -> None:
    """A real library client: @xmpp/client (xmpp.js) from npm, installed by scripts/install-node-clients."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (scripts/install-node-clients installs it)")
    assert (JS_DIR / "node_modules" / "@xmpp" / "client").is_dir(), "run scripts/install-node-clients"
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw-alice")
        await running.add_user("bob@localhost", "pw-bob")
        bob = await RawClient.login(running.c2s_port, "bob", "pw-bob", "tcp")
        url = http_url(running, "/xmpp-websocket").replace("https://", "wss://")
        env = {**os.environ, "NODE_TLS_REJECT_UNAUTHORIZED": "0", "NODE_NO_WARNINGS": "1"}
        args = [url, "localhost", "alice", "pw-alice", "js", "bob@localhost/tcp", "hello from xmpp.js"]
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "chat.mjs"), *args, cwd=JS_DIR, env=env, stdout=PIPE, stderr=PIPE
        )
        try:
            first = await bob.element(timeout=20)
            assert first.name == "presence" or first.name == "message"
            while first.name != "message":
                first = await bob.element(timeout=20)
            # xmpp.js logs in with SASL2 and Bind2 (XEP-0386): its resource is the tag "js" and a
            # server-generated part.
            alice = first.attrs["from"]
            assert alice.startswith("alice@localhost/js/") and first.find_text("body") == "hello from xmpp.js"
            bob.send(chat(alice, "hi from TCP"))
            echo = await bob.element(timeout=20)
            while echo.name != "message":
                echo = await bob.element(timeout=20)
            assert echo.find_text("body") == "echo: hi from TCP"
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            bob.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        assert proc.returncode == 0, (out, err)
        assert [e["event"] for e in events] == ["online", "message", "offline"], events
        assert events[0]["jid"] == alice
        assert events[1] == {"event": "message", "from": "bob@localhost/tcp", "body": "hi from TCP"}


async def test_scram_plus_binds_to_the_websocket_tls_connection(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        try:
            features = await ws.open()
            mechanisms = [m.text for m in features.find("mechanisms", SASL).elements("mechanism")]  # type: ignore[union-attr]
            assert "SCRAM-SHA-256-PLUS" in mechanisms  # TLS ends in the server: channel binding works
            ssl_object = ws.ws.get_extra_info("ssl_object")
            assert ssl_object is not None
            cb_data = tls.channel_bindings(ssl_object, None)["tls-exporter"]
            client = ScramClient("SHA-256", "alice", "pw", plus=True, cb_type="tls-exporter", cb_data=cb_data)
            auth = Element("auth", SASL, {"mechanism": "SCRAM-SHA-256-PLUS"})
            auth.children.append(base64.b64encode(client.first()).decode())
            await ws.send(auth)
            challenge = await ws.element()
            response = Element("response", SASL)
            response.children.append(
                base64.b64encode(client.respond(base64.b64decode(challenge.text))).decode()
            )
            await ws.send(response)
            success = await ws.element()
            assert success.name == "success", success
            client.verify(base64.b64decode(success.text))
        finally:
            await ws.aclose()


async def test_message_over_the_websocket_limit_closes_with_1009(tmp_path: Path) -> None:
    extra = "[c2s]\nmax_stanza_bytes = 4096\n[http]\nwebsocket_max_message_bytes = 2048\n"
    async with web_server(tmp_path, extra) as running:
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        try:
            await ws.open()
            await ws.send("<presence xmlns='jabber:client'><status>" + "x" * 3000 + "</status></presence>")
            assert await ws.closed() == 1009  # RFC 6455 §7.4.1: message too big
        finally:
            await ws.aclose()


async def test_two_elements_in_one_message_end_the_stream(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        try:
            await ws.login("alice", "pw")
            # RFC 7395 §3.3.3: one element per message.
            await ws.send("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>")
            error = await ws.element()
            assert error.name == "error" and error.first().name == "not-well-formed"  # type: ignore[union-attr]
            assert (await ws.element()).name == "close"
        finally:
            await ws.aclose()
