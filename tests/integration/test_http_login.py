"""XEP-0070 part (b): Roost's own page (/metrics) takes HTTP Basic with an admin's JID and password, or
with a transaction id the admin confirms in their XMPP client (slixmpp clients that accept and deny)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from roost.admin.http_login import basic_credentials
from tests.integration.test_http_auth import answer_with
from tests.support.clients import connect
from tests.support.web import http_url, web_server

CONFIG = """
[http]
plain_loopback = false

[metrics]
enabled = true
allow = ["192.0.2.0/24"]          # not this test's loopback client: it has to log in
admin_login = true

[http_auth]
enabled = true
timeout_seconds = 2
"""


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Mapping[str, str]]:
    connector = aiohttp.TCPConnector(ssl=False)  # the test server's self-signed certificate
    async with aiohttp.ClientSession(connector=connector) as http, http.get(url, headers=headers) as r:
        return r.status, await r.text(), r.headers


def test_basic_credentials_parsing() -> None:
    assert basic_credentials(basic("a@b", "pw:with:colons")["Authorization"]) == ("a@b", "pw:with:colons")
    assert basic_credentials("basic " + base64.b64encode(b"a@b:x").decode()) == ("a@b", "x")
    for bad in ("", "Bearer abc", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        assert basic_credentials(bad) is None, bad
    assert basic_credentials("Basic " + base64.b64encode(b"a@b:").decode()) is None


async def test_metrics_by_password_or_confirmed_transaction(tmp_path: Path) -> None:
    admins = 'admins = ["boss@localhost", "ops@localhost"]'
    async with web_server(tmp_path, CONFIG, server=admins) as running:
        for user in ("boss", "ops", "alice"):
            await running.add_user(f"{user}@localhost", f"pw-{user}")
        url = http_url(running, "/metrics")
        status, _, headers = await scrape(url)
        assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="Roost metrics"')
        # An admin's password.
        status, body, _ = await scrape(url, basic("boss@localhost", "pw-boss"))
        assert status == 200 and "roost_" in body
        # Not an admin, however right the password.
        assert (await scrape(url, basic("alice@localhost", "pw-alice")))[0] == 403
        # Credentials never over plain HTTP from elsewhere (plain_loopback off: this client stands for one).
        plain = http_url(running, "/metrics", tls=False)
        status, body, _ = await scrape(plain, basic("boss@localhost", "pw-boss"))
        assert status == 403 and "HTTPS" in body
        # Not the password and nobody online to confirm it: the confirmation times out.
        assert (await scrape(url, basic("boss@localhost", "txn-0")))[0] == 504

        boss = await connect("boss@localhost/laptop", "pw-boss", running.c2s_port)
        ops = await connect("ops@localhost/laptop", "pw-ops", running.c2s_port)
        asked: list[Any] = []
        try:
            for client, accept in ((boss, True), (ops, False)):
                client.register_plugin("xep_0070")
                answer_with(client, accept)
            boss.add_event_handler("http_confirm_message", asked.append)
            # A transaction id instead of the password: the admin's client is asked (XEP-0070 §4.2).
            status, body, _ = await scrape(url, basic("boss@localhost", "txn-1"))
            assert status == 200 and "roost_" in body
            confirm = asked[0]["confirm"]
            assert (confirm["id"], confirm["method"], confirm["url"]) == ("txn-1", "GET", url)
            # A full JID: an IQ to that very client (§4.1).
            assert (await scrape(url, basic("boss@localhost/laptop", "txn-3")))[0] == 200
            # The other admin's client denies.
            assert (await scrape(url, basic("ops@localhost", "txn-2")))[0] == 403
        finally:
            boss.disconnect()
            ops.disconnect()
