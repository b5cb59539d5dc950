"""The HTTP listeners: host-meta, routing errors, trusted proxies, shutdown of web sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from roost.stream.framing import FRAMING
from roost.xml.ns import STREAM
from tests.support.web import BoshClient, WsClient, http_url, parse_one, web_server


async def test_host_meta_xml_and_json_advertise_both_transports(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running, aiohttp.ClientSession() as http:
        base = http_url(running)
        host = base.split("://", 1)[1]
        async with http.get(base + "/.well-known/host-meta", ssl=False) as r:
            assert r.status == 200 and r.content_type == "application/xrd+xml"
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            xrd = parse_one((await r.read()).split(b"?>", 1)[1])
        links = {link.attrs["rel"]: link.attrs["href"] for link in xrd.elements()}
        assert links == {
            "urn:xmpp:alt-connections:websocket": f"wss://{host}/xmpp-websocket",
            "urn:xmpp:alt-connections:xbosh": f"https://{host}/http-bind",
        }
        async with http.get(base + "/.well-known/host-meta.json", ssl=False) as r:
            data = await r.json()
        assert {link["rel"]: link["href"] for link in data["links"]} == links


async def test_host_meta_follows_public_url_and_disabled_transports(tmp_path: Path) -> None:
    extra = '[http]\npublic_url = "https://chat.example.org/xmpp"\nbosh = false\n'
    async with web_server(tmp_path, extra) as running, aiohttp.ClientSession() as http:
        async with http.get(http_url(running, "/.well-known/host-meta.json"), ssl=False) as r:
            data = await r.json()
        assert data["links"] == [
            {
                "rel": "urn:xmpp:alt-connections:websocket",
                "href": "wss://chat.example.org/xmpp/xmpp-websocket",
            }
        ]
        async with http.post(http_url(running, "/http-bind"), data=b"<body/>", ssl=False) as r:
            assert r.status == 404


async def test_unknown_path_and_wrong_method(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running, aiohttp.ClientSession() as http:
        async with http.get(http_url(running, "/nothing-here"), ssl=False) as r:
            assert r.status == 404
        async with http.post(http_url(running, "/.well-known/host-meta"), ssl=False) as r:
            assert r.status == 405
        async with http.get(http_url(running, "/xmpp-websocket"), ssl=False) as r:
            assert r.status == 426  # not a WebSocket handshake


async def _peer_of(running, jid: str) -> str:  # type: ignore[no-untyped-def]
    from roost.jid import JID

    session = running.server.sessions.get(JID.parse(jid))
    assert session is not None
    return str(session.peer)


async def test_trusted_proxy_reports_the_client_address_and_tls(tmp_path: Path) -> None:
    # Plain HTTP from the proxy, which says the client came over https: allowed although
    # c2s.require_encryption is on; the session's address is the client's.
    extra = '[http]\ntrusted_proxies = ["127.0.0.1"]\n'
    async with web_server(tmp_path, extra) as running:
        await running.add_user("alice@localhost", "pw")
        headers = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket", tls=False), headers=headers)
        try:
            await ws.login("alice", "pw", "proxied")
            assert await _peer_of(running, "alice@localhost/proxied") == "198.51.100.7"
        finally:
            await ws.aclose()


async def test_proxy_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        headers = {"X-Forwarded-For": "198.51.100.7", "Forwarded": "for=198.51.100.8;proto=https"}
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"), headers=headers)
        try:
            await ws.login("alice", "pw", "direct")
            assert await _peer_of(running, "alice@localhost/direct") == "127.0.0.1"
        finally:
            await ws.aclose()


async def test_shutdown_ends_websocket_and_bosh_sessions_with_system_shutdown(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        await running.add_user("bob@localhost", "pw")
        ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
        bosh = await BoshClient.start(http_url(running, "/http-bind"))
        try:
            await ws.login("alice", "pw")
            await bosh.login("bob", "pw")
            held = asyncio.ensure_future(bosh.post(bosh.body()))
            await asyncio.sleep(0.2)
            stopping = asyncio.ensure_future(running.server.stop())
            error = await ws.element()
            assert (error.name, error.ns) == ("error", STREAM)
            assert error.first().name == "system-shutdown"  # type: ignore[union-attr]
            closing = await ws.element()
            assert (closing.name, closing.ns) == ("close", FRAMING)
            _, body = await asyncio.wait_for(held, 5)
            assert body is not None and body.attrs["type"] == "terminate"
            assert body.attrs["condition"] == "remote-stream-error"
            [stream_error] = list(body.elements())
            assert stream_error.first().name == "system-shutdown"  # type: ignore[union-attr]
            await asyncio.wait_for(stopping, 10)
        finally:
            await ws.aclose()
            await bosh.aclose()


async def test_cors_only_for_listed_origins(tmp_path: Path) -> None:
    extra = '[http]\ncors_origins = ["https://app.example"]\n'
    async with web_server(tmp_path, extra) as running, aiohttp.ClientSession() as http:
        url = http_url(running, "/.well-known/host-meta.json")
        async with http.get(url, ssl=False, headers={"Origin": "https://app.example"}) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert r.headers["Vary"] == "Origin"
        async with http.get(url, ssl=False, headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_closed_websocket_and_bosh_sessions_leave_no_roost_garbage(tmp_path: Path) -> None:
    """Like TCP connections (test_no_cycles.py): freed by reference counting, no cycle for the collector."""
    import gc

    from roost.core.c2s import C2SDriver
    from roost.core.session import ClientSession
    from roost.stream.c2s import C2SStream

    kinds = (C2SDriver, ClientSession, C2SStream)
    async with web_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        gc.collect()
        gc.disable()
        try:
            for i in range(3):
                ws = await WsClient.connect(http_url(running, "/xmpp-websocket"))
                await ws.login("alice", "pw", f"ws{i}")
                await ws.send(f'<close xmlns="{FRAMING}"/>')
                await ws.closed()
                await ws.aclose()
                bosh = await BoshClient.start(http_url(running, "/http-bind"))
                await bosh.login("alice", "pw", f"bosh{i}")
                await bosh.post(bosh.body(type="terminate"))
                await bosh.aclose()
            for _ in range(50):
                if not running.server.connections:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]
            assert alive == []
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            garbage = sorted(
                {type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("roost.")}
            )
            assert garbage == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
