"""XMPP over BOSH (XEP-0124/0206) against a real server: login, chat with a TCP client, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from roost.stream.bosh import HTTPBIND, XBOSH
from roost.xml.element import Element
from roost.xml.ns import CLIENT, SASL, STREAM
from roost.xml.serializer import serialize
from tests.support.raw import RawClient
from tests.support.web import BoshClient, http_url, web_server


def chat(to: str, text: str) -> Element:
    m = Element("message", CLIENT, {"to": to, "type": "chat"})
    m.add("body", text=text)
    return m


async def test_bosh_login_and_chat_with_a_tcp_client(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw-alice")
        await running.add_user("bob@localhost", "pw-bob")
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        bob = await RawClient.login(running.c2s_port, "bob", "pw-bob", "tcp")
        try:
            await bosh.login("alice", "pw-alice", "web")
            assert bosh.jid == "alice@localhost/web"
            # The client keeps one request held (hold=1); sending a stanza frees it (XEP-0124 §8) and
            # the new request is held until something arrives for the client.
            poll = asyncio.ensure_future(bosh.request())
            await asyncio.sleep(0.2)
            assert not poll.done()
            sent = asyncio.ensure_future(bosh.request(chat("bob@localhost/tcp", "over BOSH")))
            freed = await asyncio.wait_for(poll, 2)
            assert list(freed.elements()) == []
            got = await bob.element()
            assert got.attrs["from"] == "alice@localhost/web" and got.find_text("body") == "over BOSH"
            await asyncio.sleep(0.2)
            assert not sent.done()
            bob.send(chat("alice@localhost/web", "over TCP"))
            body = await asyncio.wait_for(sent, 2)
            [message] = list(body.elements())
            assert message.find_text("body") == "over TCP" and message.attrs["from"] == "bob@localhost/tcp"
            # XEP-0124 §13: terminate, with a last unavailable presence that still reaches bob.
            unavailable = Element("presence", CLIENT, {"type": "unavailable", "to": "bob@localhost/tcp"})
            status, last = await bosh.post(bosh.body(unavailable, type="terminate"))
            assert status == 200 and last is not None and last.attrs.get("type") == "terminate"
            presence = await bob.element()
            assert presence.name == "presence" and presence.attrs.get("type") == "unavailable"
            status, after = await bosh.post(bosh.body())
            assert after is not None and after.attrs.get("condition") == "item-not-found"
        finally:
            bob.close()
            await bosh.aclose()


async def test_creation_response_has_the_session_attributes(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            body = await bosh.create(wait="600", hold="3")
            attrs = body.attrs
            assert (
                attrs["sid"] and attrs["wait"] == "60" and attrs["hold"] == "1" and attrs["requests"] == "2"
            )
            assert attrs["{" + XBOSH + "}restartlogic"] == "true" and attrs["from"] == "localhost"
            assert attrs["authid"] and attrs["ver"] == "1.11" and attrs["ack"] == str(bosh.rid)
            features = body.first()
            assert features is not None and (features.name, features.ns) == ("features", STREAM)
            assert features.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") is None  # XEP-0206 §4
            mechanisms = [m.text for m in features.find("mechanisms", SASL).elements("mechanism")]  # type: ignore[union-attr]
            # A BOSH session spans several TLS connections: nothing to bind SCRAM-*-PLUS to.
            assert "SCRAM-SHA-256" in mechanisms and not any(m.endswith("-PLUS") for m in mechanisms)
        finally:
            await bosh.aclose()


async def test_unknown_sid_is_item_not_found(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            bosh.sid = "no-such-session"
            status, body = await bosh.post(bosh.body())
            assert status == 200 and body is not None
            assert (body.attrs.get("type"), body.attrs.get("condition")) == ("terminate", "item-not-found")
        finally:
            await bosh.aclose()


async def test_rid_outside_the_window_ends_the_session(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            await bosh.login("alice", "pw")
            assert running.server.sessions.is_online("localhost", "alice")
            bosh.rid += 10
            _, body = await bosh.post(bosh.body())
            assert body is not None and body.attrs.get("condition") == "item-not-found"
            for _ in range(50):
                if not running.server.sessions.is_online("localhost", "alice"):
                    break
                await asyncio.sleep(0.05)
            assert not running.server.sessions.is_online("localhost", "alice")
        finally:
            await bosh.aclose()


async def test_unknown_domain_and_missing_to(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            _, body = await bosh.post(bosh.body(to="elsewhere.example", ver="1.11", wait="5", hold="1"))
            assert body is not None and body.attrs.get("condition") == "host-unknown"
            _, body = await bosh.post(bosh.body(ver="1.11"))
            assert body is not None and body.attrs.get("condition") == "improper-addressing"
        finally:
            await bosh.aclose()


async def test_malformed_body_is_bad_request(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            _, body = await bosh.post(b"<body xmlns='" + HTTPBIND.encode() + b"' rid='1'><unclosed></body>")
            assert body is not None and body.attrs.get("condition") == "bad-request"
            async with bosh.session.get(bosh.url, ssl=False) as response:
                assert response.status == 200  # a page for people who open the URL
        finally:
            await bosh.aclose()


async def test_wrong_password_fails_like_on_tcp(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "right")
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            await bosh.create()
            await bosh.next("features")
            plain = Element("auth", "urn:ietf:params:xml:ns:xmpp-sasl", {"mechanism": "PLAIN"})
            plain.children.append("AGFsaWNlAHdyb25n")  # \0alice\0wrong
            await bosh.request(plain)
            failure = await bosh.next("failure")
            assert failure.first().name == "not-authorized", serialize(failure)  # type: ignore[union-attr]
        finally:
            await bosh.aclose()


async def test_cors_preflight_and_headers(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            async with bosh.session.options(
                bosh.url, ssl=False, headers={"Origin": "https://app.example"}
            ) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
                assert "POST" in r.headers["Access-Control-Allow-Methods"]
        finally:
            await bosh.aclose()


async def test_inactivity_ends_the_session_and_the_xmpp_session(tmp_path: Path) -> None:
    async with web_server(tmp_path, "[http]\nbosh_inactivity = 5\n") as running:
        await running.add_user("alice@localhost", "pw")
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            await bosh.login("alice", "pw")
            body = await bosh.request()  # answered empty after the 1 s wait asked for at creation
            assert list(body.elements()) == []
            assert running.server.sessions.is_online("localhost", "alice")
            await asyncio.sleep(5.5)  # XEP-0124 §10: no request for longer than 'inactivity'
            assert not running.server.sessions.is_online("localhost", "alice")
            _, after = await bosh.post(bosh.body())
            assert after is not None and after.attrs.get("condition") == "item-not-found"
        finally:
            await bosh.aclose()


JS_DIR = Path(__file__).resolve().parents[1] / "js"


async def test_strophe_js_client_logs_in_and_chats_over_bosh(tmp_path: Path) -> None:
    """A real library client: Strophe.js from npm over BOSH, installed by scripts/install-node-clients."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (scripts/install-node-clients installs it)")
    assert (JS_DIR / "node_modules" / "strophe.js").is_dir(), "run scripts/install-node-clients"
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw-alice")
        await running.add_user("bob@localhost", "pw-bob")
        bob = await RawClient.login(running.c2s_port, "bob", "pw-bob", "tcp")
        env = {**os.environ, "NODE_TLS_REJECT_UNAUTHORIZED": "0", "NODE_NO_WARNINGS": "1"}
        args = [
            http_url(running, "/http-bind"),
            "alice@localhost/strophe",
            "pw-alice",
            "bob@localhost/tcp",
            "hi",
        ]
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "bosh-chat.mjs"), *args, cwd=JS_DIR, env=env, stdout=PIPE, stderr=PIPE
        )
        try:
            got = await bob.element(timeout=20)
            while got.name != "message":
                got = await bob.element(timeout=20)
            assert got.attrs["from"] == "alice@localhost/strophe" and got.find_text("body") == "hi"
            bob.send(chat("alice@localhost/strophe", "hello Strophe"))
            echo = await bob.element(timeout=20)
            while echo.name != "message":
                echo = await bob.element(timeout=20)
            assert echo.find_text("body") == "echo: hello Strophe"
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            bob.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        assert proc.returncode == 0, (out, err)
        assert [e["event"] for e in events] == ["online", "message", "offline"], events
        assert events[0]["jid"] == "alice@localhost/strophe"
        assert events[1] == {"event": "message", "from": "bob@localhost/tcp", "body": "hello Strophe"}
