"""XEP-0363 HTTP upload against a real server: slixmpp asks for slots, aiohttp PUTs and GETs."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slixmpp.exceptions import IqError
from slixmpp.jid import JID as SJID

from roost.modules.upload.module import UploadRuntime, find_runtime
from tests.support.clients import Client, connect
from tests.support.server import RunningServer, running_server
from tests.support.web import http_url, web_server

NS = "urn:xmpp:http:upload:0"
UPLOAD = SJID("upload.localhost")


@asynccontextmanager
async def uploader(tmp_path: Path, extra: str = "") -> AsyncIterator[tuple[RunningServer, Client]]:
    async with web_server(tmp_path, extra) as running:
        await running.add_user("alice@localhost", "pw-alice")
        client = await connect("alice@localhost", "pw-alice", running.c2s_port)
        client.register_plugin("xep_0363")
        try:
            yield running, client
        finally:
            client.disconnect()


def runtime(running: RunningServer) -> UploadRuntime:
    found = find_runtime(running.server)
    assert found is not None
    return found


async def slot(client: Client, name: str, size: int, ctype: str | None = "image/png") -> tuple[str, str]:
    iq = await client.plugin["xep_0363"].request_slot(UPLOAD, name, size, ctype)
    return iq["http_upload_slot"]["put"]["url"], iq["http_upload_slot"]["get"]["url"]


async def slot_error(client: Client, name: str, size: int, ctype: str | None = "image/png") -> Any:
    with pytest.raises(IqError) as caught:
        await client.plugin["xep_0363"].request_slot(UPLOAD, name, size, ctype)
    return caught.value.iq["error"]


async def put(url: str, data: bytes, ctype: str = "image/png", **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.put(url, data=data, headers={"Content-Type": ctype, **headers}) as r,
    ):
        return r.status, await r.text()


async def test_upload_and_download_with_slixmpp(tmp_path: Path) -> None:
    async with uploader(tmp_path) as (running, client):
        items = await client.plugin["xep_0030"].get_items(jid="localhost")
        assert "upload.localhost" in [i[0] for i in items["disco_items"]["items"]]
        info = await client.plugin["xep_0030"].get_info(jid="upload.localhost")
        assert NS in info["disco_info"]["features"]
        form = info["disco_info"]["form"]
        values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form.xml}
        assert values == {"FORM_TYPE": NS, "max-file-size": str(100 * 1024 * 1024)}

        data = os.urandom(200_000)
        url = await client.plugin["xep_0363"].upload_file(
            "holiday picture.png",
            size=len(data),
            content_type="image/png",
            input_file=io.BytesIO(data),
            domain=SJID("localhost"),
        )
        assert url.startswith(http_url(running, "/upload/", tls=False))
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert r.status == 200
                assert await r.read() == data
                assert r.headers["Content-Type"] == "image/png"
                assert r.headers["Content-Length"] == str(len(data))
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
                assert r.headers["Content-Disposition"].startswith('inline; filename="holiday picture.png"')
                assert "max-age=" in r.headers["Cache-Control"]
                etag = r.headers["ETag"]
            async with http.get(url, headers={"Range": "bytes=100-199"}) as r:
                assert r.status == 206 and await r.read() == data[100:200]
                assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            async with http.get(url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304
            async with http.head(url) as r:
                assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
            # The slot is used: it cannot be written again.
            put_url, _ = await slot(client, "x.png", 3)
            assert (await put(put_url, b"abc"))[0] == 201
            assert (await put(put_url, b"xyz"))[0] == 409


async def test_slot_refusals_name_the_limit(tmp_path: Path) -> None:
    extra = """
[upload]
max_file_size = 1000
allowed_content_types = ["image/*"]
quota_files = 2
"""
    async with uploader(tmp_path, extra) as (_running, client):
        error = await slot_error(client, "big.png", 1001)
        assert error["condition"] == "not-acceptable" and error["type"] == "modify"
        too_large = error.xml.find(f"{{{NS}}}file-too-large")
        assert too_large is not None and too_large.findtext(f"{{{NS}}}max-file-size") == "1000"
        assert "1000 bytes" in error["text"]
        error = await slot_error(client, "page.html", 10, "text/html")
        assert error["condition"] == "not-acceptable" and "text/html" in error["text"]
        error = await slot_error(client, "x.png", 0)
        assert error["condition"] == "bad-request"
        await slot(client, "1.png", 10)
        await slot(client, "2.png", 10)
        error = await slot_error(client, "3.png", 10)
        assert error["condition"] == "not-allowed" and "2 files" in error["text"]


async def test_daily_quota_and_slot_rate(tmp_path: Path) -> None:
    extra = """
[upload]
daily_quota_bytes = 100
slots_per_minute = 3
"""
    async with uploader(tmp_path, extra) as (_running, client):
        await slot(client, "a.png", 60)
        error = await slot_error(client, "b.png", 60)
        assert error["condition"] == "resource-constraint" and error["type"] == "wait"
        assert "100 bytes a day" in error["text"]
        assert error.xml.find(f"{{{NS}}}retry").get("stamp")
        await slot(client, "c.png", 10)
        await slot(client, "d.png", 10)
        error = await slot_error(client, "e.png", 1)
        assert error["condition"] == "resource-constraint" and "3 a minute" in error["text"]


async def test_bad_puts_leave_nothing(tmp_path: Path) -> None:
    async with uploader(tmp_path) as (running, client):
        put_url, get_url = await slot(client, "a.png", 10)
        assert (await put(put_url, b"x" * 9))[0] == 400
        assert (await put(put_url, b"x" * 11))[0] == 413
        status, text = await put(put_url, b"x" * 10, "text/html")
        assert status == 400 and "image/png" in text
        assert (await put(put_url.replace("?v=", "?v=1"), b"x" * 10))[0] == 403
        assert (await put(put_url.split("?")[0], b"x" * 10))[0] == 403
        files = runtime(running).files
        assert [p.name for p in files.iterdir()] == []
        async with aiohttp.ClientSession() as http, http.get(get_url) as r:
            assert r.status == 404
        # An expired URL (signed with a past expiry) is refused even with the right signature.
        rt = runtime(running)
        slot_id = put_url.split("/upload/")[1].split("/")[0]
        meta = rt.pending[slot_id]
        old = rt.signer.put_token(slot_id, meta.filename, meta.size, meta.content_type, 1000)
        status, text = await put(put_url.split("?")[0] + "?v=" + old, b"x" * 10)
        assert status == 403 and "expired" in text
        assert (await put(put_url, b"x" * 10))[0] == 201


async def test_forged_and_traversal_urls_are_not_found(tmp_path: Path) -> None:
    async with uploader(tmp_path) as (running, client):
        put_url, get_url = await slot(client, "a.png", 3)
        assert (await put(put_url, b"abc"))[0] == 201
        slot_id = get_url.split("/upload/")[1].split("/")[0]
        forged = slot_id[:-1] + ("A" if slot_id[-1] != "A" else "B")
        base = http_url(running, "", tls=False)
        async with aiohttp.ClientSession() as http:
            for path in (
                f"/upload/{forged}/a.png",
                "/upload/../upload/secret",
                "/upload/secret",
                "/upload/%2e%2e/secret",
                f"/upload/{slot_id}/../../secret",
                f"/upload/{slot_id}%2f..%2fsecret",
                f"/upload/{slot_id}.json/x",
            ):
                async with http.get(base + path) as r:
                    body = await r.read()
                    assert r.status in (400, 404), path
                    assert runtime(running).signer._key.hex().encode() not in body


async def test_slow_uploader_is_cut_off(tmp_path: Path) -> None:
    extra = """
[upload]
idle_timeout_seconds = 0.5
max_concurrent_per_user = 1
"""
    async with uploader(tmp_path, extra) as (running, client):
        put_url, _ = await slot(client, "slow.png", 100_000)
        host, port = running.server.addresses["http"]
        path = put_url.split(str(port), 1)[1]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
            f"Content-Length: 100000\r\n\r\n".encode()
            + b"x" * 1000
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        # While it hangs, the same user may not start another upload.
        other, _ = await slot(client, "other.png", 3)
        assert (await put(other, b"abc"))[0] == 429
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert b" 408 " in status_line
        writer.close()
        files = runtime(running).files
        assert [p.name for p in files.iterdir()] == []
        assert (await put(other, b"abc"))[0] == 201


async def test_disk_floor_refuses_slots(tmp_path: Path) -> None:
    extra = """
[upload]
min_free_disk_mb = 1000000000
"""
    async with uploader(tmp_path, extra) as (_running, client):
        error = await slot_error(client, "a.png", 10)
        assert error["condition"] == "resource-constraint" and error["type"] == "wait"
        assert "1000000000 MiB" in error["text"]


async def test_expiry_and_account_deletion_remove_files(tmp_path: Path) -> None:
    extra = """
[upload]
expire_after_days = 0.00002
cleanup_interval_seconds = 0.2
"""
    async with uploader(tmp_path, extra) as (running, client):
        put_url, get_url = await slot(client, "a.png", 3)
        assert (await put(put_url, b"abc"))[0] == 201
        files = runtime(running).files
        assert len(list(files.iterdir())) == 2  # the file and its record
        await asyncio.sleep(2.5)
        assert list(files.iterdir()) == []
        async with aiohttp.ClientSession() as http, http.get(get_url) as r:
            assert r.status == 404

    async with uploader(tmp_path / "2") as (running, client):
        put_url, get_url = await slot(client, "a.png", 3)
        assert (await put(put_url, b"abc"))[0] == 201
        await running.server.accounts.remove("localhost", "alice")
        assert list(runtime(running).files.iterdir()) == []


async def test_files_and_urls_survive_a_restart(tmp_path: Path) -> None:
    async with uploader(tmp_path) as (running, client):
        put_url, get_url = await slot(client, "a.txt", 5, "text/plain")
        assert (await put(put_url, b"hello", "text/plain"))[0] == 201
        path = get_url.split(str(running.server.addresses["http"][1]), 1)[1]
    async with (
        web_server(tmp_path) as running,
        aiohttp.ClientSession() as http,
        http.get(http_url(running, path, tls=False)) as r,
    ):
        assert r.status == 200 and await r.read() == b"hello"
        assert r.headers["Content-Type"].startswith("text/plain")


async def test_not_advertised_without_an_http_listener(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw-alice")
        client = await connect("alice@localhost", "pw-alice", running.c2s_port)
        try:
            items = await client.plugin["xep_0030"].get_items(jid="localhost")
            assert "upload.localhost" not in [i[0] for i in items["disco_items"]["items"]]
        finally:
            client.disconnect()
