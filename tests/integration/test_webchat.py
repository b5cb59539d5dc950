"""The web chat at /chat: the page and its files over HTTP, and Converse.js in a real browser.

The browser test drives Debian's chromium with Playwright (tests/js/webchat.mjs): it logs in through
/chat, chats both ways with a slixmpp client, uploads an image (XEP-0363) and sees it, joins a room,
and after a fresh login sees the conversation again from the archive (XEP-0313).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import zlib
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.clients import connect
from tests.support.web import http_url, web_server

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CHROMIUM = os.environ.get("ROOST_CHROMIUM", "/usr/bin/chromium")


def png(width: int, height: int) -> bytes:
    """A small valid PNG (solid colour), so the browser really decodes what it downloads."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x20\x80\xc0" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


async def test_chat_page_points_converse_at_this_server(tmp_path: Path) -> None:
    async with web_server(tmp_path) as running, aiohttp.ClientSession() as http:
        async with http.get(http_url(running, "/chat", tls=False)) as page:
            assert page.status == 200
            text = await page.text()
            assert page.headers["X-Content-Type-Options"] == "nosniff"
        host, port = running.server.addresses["http"]
        assert f'"websocket_url": "ws://{host}:{port}/xmpp-websocket"' in text
        assert f'"bosh_service_url": "http://{host}:{port}/http-bind"' in text  # the fallback
        assert '"muc_domain": "conference.localhost"' in text
        async with http.get(http_url(running, "/chat/dist/converse.min.js", tls=False)) as script:
            assert script.status == 200
            assert script.headers["Content-Type"].startswith("text/javascript")
        for bad in ("/chat/dist/../package.json", "/chat/dist/%2e%2e/package.json", "/chat/dist/.roost-lock"):
            async with http.get(http_url(running, bad, tls=False)) as refused:
                assert refused.status == 404, bad


async def test_chat_page_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "no-converse"
    empty.mkdir()
    async def status(extra: str, where: Path) -> tuple[int, str]:
        async with (
            web_server(where, extra) as running,
            aiohttp.ClientSession() as http,
            http.get(http_url(running, "/chat", tls=False)) as page,
        ):
            return page.status, await page.text()

    status_code, text = await status(f'[http]\nwebchat_assets = "{empty}"\n', tmp_path)
    assert status_code == 503 and "scripts/install-webchat" in text
    assert (await status("[http]\nwebchat = false\n", tmp_path / "off"))[0] == 404


async def test_converse_in_chromium(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip("Playwright is not installed: run scripts/install-node-clients")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser at {CHROMIUM}: run scripts/install-browser (Debian's chromium)")
    extra = "[muc]\nlock_new_rooms = false\n"
    async with web_server(tmp_path, extra) as running, aiohttp.ClientSession() as http:
        async with http.get(http_url(running, "/chat", tls=False)) as page:
            if page.status == 503:
                pytest.skip("Converse.js is not installed: run scripts/install-webchat")
        await running.add_user("alice@localhost", "pw-alice")
        await running.add_user("bob@localhost", "pw-bob")
        room = "lobby@conference.localhost"
        bob = await connect("bob@localhost/slix", "pw-bob", running.c2s_port, plugins=("xep_0045",))
        seen: list[Any] = []

        def answer(msg: Any) -> None:
            if msg["type"] == "chat" and msg["from"].bare == "alice@localhost" and msg["body"]:
                seen.append(msg)
                if msg["body"] == "hello from the browser":
                    bob.send_message(mto="alice@localhost", mbody="hello from slixmpp", mtype="chat")

        groupchat: list[str] = []
        bob.add_event_handler("message", answer)
        bob.add_event_handler("groupchat_message", lambda m: groupchat.append(f"{m['mucnick']}: {m['body']}"))
        await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=10)
        image = tmp_path / "picture.png"
        image.write_bytes(png(32, 24))
        args = [http_url(running, "/chat", tls=False), "alice", "pw-alice", "bob@localhost", room, str(image)]
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "webchat.mjs"), *args, cwd=JS_DIR, stdout=PIPE, stderr=PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            bob.disconnect()
        events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        print(err.decode())  # the browser's errors, shown when the test fails
        assert proc.returncode == 0, events
        assert [e["event"] for e in events] == ["logged-in", "chatted", "uploaded", "joined", "archive"]
        # Converse sent the upload URL as the message body; it serves the very bytes uploaded.
        urls = [m["body"] for m in seen if "/upload/" in m["body"]]
        assert len(urls) == 1 and events[2]["width"] == 32
        async with http.get(urls[0]) as got:
            assert got.status == 200 and await got.read() == image.read_bytes()
        assert "alice: hello room" in groupchat
        host, port = running.server.addresses["http"]
        assert events[-1]["origins"] == [f"http://{host}:{port}"]  # (WebSocket is not listed)
