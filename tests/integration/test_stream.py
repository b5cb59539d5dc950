"""Stream negotiation rules of RFC 6120 §4–§7 as seen on the wire."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.xml.element import Element
from roost.xml.ns import BIND, SESSION, STREAM, TLS
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server, start_server

NS_DECLS = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"


@pytest.fixture(autouse=True)
async def romeo(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (f"<stream:stream {NS_DECLS} to='elsewhere.example' version='1.0'>", "host-unknown"),
        (f"<stream:stream {NS_DECLS} version='1.0'>", "host-unknown"),
        (
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' "
            "to='localhost' version='1.0'>",
            "bad-namespace-prefix",
        ),
        (f"<stream:stream {NS_DECLS} to='localhost' version='2.0'>", "unsupported-version"),
        (f"<stream:stream {NS_DECLS} to='localhost'>", "unsupported-version"),
        (
            f"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream {NS_DECLS} to='localhost'>",
            "unsupported-encoding",
        ),
    ],
    ids=["other-host", "no-to", "server-ns", "wrong-stream-ns", "prefix", "v2", "no-version", "latin1"],
)
async def test_bad_stream_header(server: RunningServer, header: str, condition: str) -> None:
    raw = await RawClient.connect(server.c2s_port)
    raw.send_raw(header)
    # RFC 6120 §4.9.1.2: the server opens its own stream first, then sends the error.
    assert await raw.stream_error() == condition
    assert await raw.closed()


async def test_features_require_starttls_first(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    features = await raw.open()
    starttls = features.find("starttls", TLS)
    assert starttls is not None and starttls.find("required", TLS) is not None
    assert raw.mechanisms() == []  # nothing else is offered before TLS when encryption is required


async def test_post_auth_features_offer_bind_and_optional_session(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    assert (await raw.auth_scram("romeo", "s3cret")).name == "success"
    features = await raw.open()
    assert features.find("bind", BIND) is not None
    session = features.find("session", SESSION)
    assert session is not None and session.find("optional", SESSION) is not None


async def test_server_generated_resource_and_legacy_session(server: RunningServer) -> None:
    raw = await RawClient.login(server.c2s_port, "romeo", "s3cret", None)
    assert (
        raw.jid is not None
        and raw.jid.startswith("romeo@localhost/")
        and len(raw.jid) > len("romeo@localhost/")
    )
    iq = Element("iq", "jabber:client", {"type": "set", "id": "s1"})
    iq.add("session", SESSION)
    raw.send(iq)
    reply = await raw.element()
    assert reply.attrs["type"] == "result" and reply.attrs["id"] == "s1"


async def test_bad_resource_is_bad_request_and_retry_works(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    assert (await raw.auth_scram("romeo", "s3cret")).name == "success"
    await raw.open()
    reply = await raw.bind("bad\u200bresource", iq_id="b1")  # zero-width space: not PRECIS
    assert reply.attrs["type"] == "error"
    assert reply.find("error") is not None and reply.find("error").find("bad-request") is not None  # type: ignore[union-attr]
    ok = await raw.bind("good", iq_id="b2")
    assert ok.attrs["type"] == "result" and raw.jid == "romeo@localhost/good"


async def test_stanza_to_other_entity_before_bind_closes(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    assert (await raw.auth_scram("romeo", "s3cret")).name == "success"
    await raw.open()
    raw.send_raw("<message to='juliet@localhost'><body>too early</body></message>")
    assert await raw.stream_error() == "not-authorized"


async def test_client_closing_stream_gets_closing_tag(server: RunningServer) -> None:
    raw = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    raw.send_raw("</stream:stream>")
    assert await raw.closed()
    await asyncio.sleep(0.05)
    assert (
        server.server.sessions.get(__import__("roost.jid", fromlist=["JID"]).JID.parse("romeo@localhost/r"))
        is None
    )


async def test_idle_session_is_pinged_and_closed_when_dead(tmp_path: Path) -> None:
    idle = "[c2s]\nidle_ping_seconds = 0.3\nping_timeout_seconds = 0.4\n"
    async with running_server(tmp_path / "idle", idle) as running:
        await running.add_user("romeo@localhost", "s3cret")
        raw = await RawClient.login(running.c2s_port, "romeo", "s3cret", "sleepy")
        ping = await raw.element(timeout=5)
        assert (
            ping.name == "iq"
            and ping.attrs["type"] == "get"
            and ping.find("ping", "urn:xmpp:ping") is not None
        )
        # a client that answers stays connected …
        raw.send(
            Element("iq", "jabber:client", {"type": "result", "id": ping.attrs["id"], "to": "localhost"})
        )
        ping2 = await raw.element(timeout=5)
        assert ping2.find("ping", "urn:xmpp:ping") is not None
        # … one that does not is closed with <connection-timeout/>
        assert await raw.stream_error(timeout=5) == "connection-timeout"


async def test_unauthenticated_connection_times_out(tmp_path: Path) -> None:
    async with running_server(tmp_path / "auth", "[c2s]\nauth_timeout_seconds = 0.5\n") as running:
        raw = await RawClient.connect(running.c2s_port)
        await raw.open()
        assert await raw.stream_error(timeout=5) == "connection-timeout"


async def test_shutdown_sends_system_shutdown(tmp_path: Path) -> None:
    running = await start_server(tmp_path / "shutdown")
    await running.add_user("romeo@localhost", "s3cret")
    raw = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
    await running.stop()
    assert await raw.stream_error() == "system-shutdown"
    assert await raw.closed()


async def test_stream_error_element_shape(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    raw.send_raw(f"<stream:stream {NS_DECLS} to='nowhere.example' version='1.0'>")
    await raw.next()  # our stream header
    error = await raw.element()
    assert error.ns == STREAM and error.name == "error"
    assert error.find("host-unknown", "urn:ietf:params:xml:ns:xmpp-streams") is not None


async def test_a_tls_client_on_the_starttls_port_is_logged_and_closed(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    import ssl as ssl_module

    from roost.transports import tls as tls_module

    caplog.set_level("INFO", logger="roost")
    context = tls_module.client_context()
    with pytest.raises((ssl_module.SSLError, ConnectionError, OSError)):
        await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.c2s_port, ssl=context, server_hostname="localhost"),
            10,
        )
    for _ in range(50):
        if "TLS client connected to the STARTTLS port" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "TLS client connected to the STARTTLS port" in caplog.text
