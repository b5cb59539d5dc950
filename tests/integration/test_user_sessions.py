"""Sessions and devices (issue 13 §6): the ad-hoc commands (slixmpp, XEP-0050) and the CLI list a
user's sessions with the SASL2 user agent and their FAST devices, end a session, revoke tokens."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_admin import adhoc, admin_client, server, values
from tests.integration.test_cli_admin import roost
from tests.integration.test_sasl2 import connect as tls_connect
from tests.support import sasl2
from tests.support.sasl2 import Agent
from tests.support.server import RunningServer, running_server

__all__ = ["server"]  # the fixture with an admin account


async def test_user_sessions_and_revoke_by_adhoc(server: RunningServer) -> None:
    boss = await admin_client(server.c2s_port)
    phone = Agent(software="Conversations 2.16", device="Pixel 8")
    raw = await tls_connect(server)
    result = await sasl2.scram(
        raw, "alice", "alicepw", agent=phone, tag="conv", request_token="HT-SHA-256-NONE"
    )
    assert result.ok and result.token is not None
    token = result.token.attrs["token"]
    resource = result.authzid.split("/", 1)[1]
    try:
        listed = await adhoc(boss, "urn:roost:admin#user-sessions", {"accountjid": ["alice@localhost"]})
        (line,) = values(listed, "sessions")
        assert line.startswith(f"{resource}: Conversations 2.16 / Pixel 8, tcp from 127.0.0.1 since ")
        assert line.endswith("sm off")
        (device,) = values(listed, "devices")
        assert device.startswith(f"{phone.id}: Conversations 2.16 (Pixel 8), 1 token(s) valid until ")
        assert token not in device

        done = await adhoc(
            boss, "urn:roost:admin#revoke-token", {"accountjid": ["alice@localhost"], "client": [phone.id]}
        )
        assert "revoked the login tokens of 1 device" in done["notes"][0][1]
        again = await tls_connect(server)
        assert (await sasl2.ht(again, "alice", token, phone)).condition == "not-authorized"
        again.close()

        done = await adhoc(
            boss, "http://jabber.org/protocol/admin#end-user-session", {"accountjids": [result.authzid]}
        )
        assert "1 session ended" in done["notes"][0][1]
        assert await raw.stream_error(timeout=10) == "policy-violation"
        listed = await adhoc(boss, "urn:roost:admin#user-sessions", {"accountjid": ["alice@localhost"]})
        assert "0 devices with login tokens" in listed["notes"][0][1]
    finally:
        boss.disconnect()


async def test_user_sessions_and_kick_through_the_cli(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        config = running.server.config.path
        assert config is not None
        await roost(config, "user", "add", "alice@localhost", "--password", "wonderland")
        laptop, phone = Agent(software="Dino", device="laptop"), Agent(software="Monal", device="iPhone")
        a = await tls_connect(running)
        ra = await sasl2.scram(a, "alice", "wonderland", agent=laptop, tag="dino")
        b = await tls_connect(running)
        rb = await sasl2.scram(b, "alice", "wonderland", agent=phone, request_token="HT-SHA-256-NONE")
        assert ra.ok and rb.ok and rb.token is not None
        out = (await roost(config, "user", "sessions", "alice@localhost")).stdout
        assert "2 sessions, 1 devices with login tokens" in out
        assert f"{ra.authzid.split('/', 1)[1]}: Dino / laptop, tcp from 127.0.0.1" in out
        assert f"{phone.id}: Monal (iPhone), 1 token(s)" in out

        out = (await roost(config, "user", "kick", "alice@localhost", ra.authzid.split("/", 1)[1])).stdout
        assert "1 session ended" in out
        assert await a.stream_error(timeout=10) == "policy-violation"

        out = (await roost(config, "user", "kick", "alice@localhost", "--revoke")).stdout
        assert "1 session ended" in out and "revoked the login tokens of 1 device" in out
        assert await b.stream_error(timeout=10) == "policy-violation"
        c = await tls_connect(running)
        assert (await sasl2.ht(c, "alice", rb.token.attrs["token"], phone)).condition == "not-authorized"
        c.close()
        missing = await roost(config, "user", "revoke-token", "alice@localhost", "nope", ok=False)
        assert missing.returncode == 1 and "no device 'nope'" in missing.stderr
