"""XEP-0070: a web service asks Roost over HTTP; a slixmpp client accepts or denies (IQ and message)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.clients import Client, connect
from tests.support.web import http_url, web_server

CONFIG = """
[http_auth]
enabled = true
timeout_seconds = 2
requests_per_minute = 5
"""


def answer_with(client: Client, accept: bool) -> None:
    """The user's client: accepts or denies every confirmation it gets."""

    def on_iq(iq: Any) -> None:
        if accept:
            iq.reply().send()
        else:
            reply = iq.reply()
            reply["error"]["condition"] = "not-authorized"
            reply["error"]["type"] = "auth"
            reply.send()

    def on_message(msg: Any) -> None:
        reply = client.make_message(mto=msg["from"], mfrom=client.boundjid)
        reply.append(msg["confirm"])
        if not accept:
            reply["type"] = "error"
            reply["error"]["condition"] = "not-authorized"
            reply["error"]["type"] = "auth"
        reply.send()

    client.add_event_handler("http_confirm_iq", on_iq)
    client.add_event_handler("http_confirm_message", on_message)


async def verify(endpoint: str, **params: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(endpoint, params=params) as r:
        return r.status, await r.text()


async def test_accept_deny_and_timeout(tmp_path: Path) -> None:
    async with web_server(tmp_path, CONFIG) as running:
        await running.add_user("alice@localhost", "pw-a")
        await running.add_user("bob@localhost", "pw-b")
        await running.add_user("carol@localhost", "pw-c")
        alice = await connect("alice@localhost", "pw-a", running.c2s_port)
        bob = await connect("bob@localhost", "pw-b", running.c2s_port)
        for c in (alice, bob):
            c.register_plugin("xep_0070")
        answer_with(alice, True)
        answer_with(bob, False)
        endpoint = http_url(running, "/http-auth", tls=False)
        page = "https://shop.example.org/login"
        try:
            # IQ to a full JID (§4.1).
            status, _ = await verify(endpoint, jid=str(alice.boundjid), id="t1", method="POST", url=page)
            assert status == 200
            status, _ = await verify(endpoint, jid=str(bob.boundjid), id="t2", method="POST", url=page)
            assert status == 403
            # Message to the bare JID (§4.2).
            assert (await verify(endpoint, jid="alice@localhost", id="t3", url=page))[0] == 200
            assert (await verify(endpoint, jid="bob@localhost", id="t4", url=page))[0] == 403
            # Carol has no client online: nobody answers.
            assert (await verify(endpoint, jid="carol@localhost", id="t5", url=page))[0] == 504
            # nginx auth_request style: Basic JID:transaction id and the original URL in headers.
            token = base64.b64encode(b"alice@localhost:t6").decode()
            headers = {"Authorization": f"Basic {token}", "X-Original-URL": page, "X-Original-Method": "GET"}
            async with aiohttp.ClientSession() as http, http.get(endpoint, headers=headers) as r:
                assert r.status == 200
            # Bad input.
            assert (await verify(endpoint, jid="alice@localhost", id="t7"))[0] == 400
            assert (await verify(endpoint, jid="nobody@localhost", id="t8", url=page))[0] == 403
            assert (await verify(endpoint, jid="x@elsewhere.example", id="t9", url=page))[0] == 403
            assert (await verify(endpoint, jid="@@", id="t10", url=page))[0] == 400
        finally:
            alice.disconnect()
            bob.disconnect()


async def test_one_pending_per_transaction_and_rate_limit(tmp_path: Path) -> None:
    async with web_server(tmp_path, CONFIG) as running:
        await running.add_user("carol@localhost", "pw-c")
        endpoint = http_url(running, "/http-auth", tls=False)
        page = "https://shop.example.org/"
        first = asyncio.create_task(verify(endpoint, jid="carol@localhost", id="same", url=page))
        await asyncio.sleep(0.3)
        assert (await verify(endpoint, jid="carol@localhost", id="same", url=page))[0] == 409
        assert (await first)[0] == 504
        statuses = [
            (await verify(endpoint, jid="carol@localhost", id=f"r{i}", url=page))[0] for i in range(5)
        ]
        assert statuses[-1] == 429 and 504 in statuses
