"""XEP-0215 external services (STUN/TURN with TURN REST credentials) and XEP-0157 contact addresses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

from roost.modules.extdisco import turn_credentials
from roost.util.datetime import parse_datetime
from roost.xml.ns import CLIENT, DATA_FORMS, DISCO_INFO, STANZA_ERRORS
from tests.support.queries import ask
from tests.support.raw import RawClient
from tests.support.server import running_server

NS = "urn:xmpp:extdisco:2"

CONFIG = """
[extdisco]
enabled = true

[[extdisco.services]]
type = "stun"
host = "stun.example.org"
port = 3478
transport = "udp"

[[extdisco.services]]
type = "turn"
host = "turn.example.org"
port = 3478
transport = "udp"
secret = "coturn-shared-secret"
ttl_seconds = 3600

[contact_info]
abuse = ["mailto:abuse@example.org", "xmpp:abuse@localhost"]
support = ["https://example.org/help"]
"""


def test_turn_credentials_match_coturns_scheme() -> None:
    # coturn (use-auth-secret): password = base64(hmac-sha1(static-auth-secret, "<expiry>:<user>")).
    user, password = turn_credentials("s3cret", "alice@example.org", 1700000000)
    assert user == "1700000000:alice@example.org"
    expected = hmac.new(b"s3cret", b"1700000000:alice@example.org", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


async def test_services_and_credentials_for_local_users(tmp_path: Path) -> None:
    async with running_server(tmp_path, CONFIG) as running:
        await running.add_user("alice@localhost", "pw")
        alice = await RawClient.login(running.c2s_port, "alice", "pw", "r")
        try:
            info = await ask(alice, f"<query xmlns='{DISCO_INFO}'/>", to="localhost")
            features = [f.attrs["var"] for f in info.first().elements("feature", DISCO_INFO)]  # type: ignore[union-attr]
            assert NS in features
            # XEP-0157: the serverinfo form with the configured addresses.
            form = info.first().find("x", DATA_FORMS)  # type: ignore[union-attr]
            assert form is not None
            fields = {
                f.attrs["var"]: [v.text for v in f.elements("value", DATA_FORMS)]
                for f in form.elements("field", DATA_FORMS)
            }
            assert fields == {
                "FORM_TYPE": ["http://jabber.org/network/serverinfo"],
                "abuse-addresses": ["mailto:abuse@example.org", "xmpp:abuse@localhost"],
                "support-addresses": ["https://example.org/help"],
            }

            reply = await ask(alice, f"<services xmlns='{NS}'/>", to="localhost")
            assert reply.attrs["type"] == "result"
            services = list(reply.first().elements("service", NS))  # type: ignore[union-attr]
            assert [s.attrs["type"] for s in services] == ["stun", "turn"]
            assert "username" not in services[0].attrs
            turn = services[1].attrs
            expires = parse_datetime(turn["expires"]).timestamp()
            assert time.time() + 3500 < expires <= time.time() + 3601
            assert turn["username"] == f"{int(expires)}:alice@localhost"
            mac = hmac.new(b"coturn-shared-secret", turn["username"].encode(), hashlib.sha1).digest()
            assert base64.b64decode(turn["password"]) == mac
            assert turn["restricted"] == "1"

            only = await ask(alice, f"<services xmlns='{NS}' type='stun'/>", to="localhost")
            assert [s.attrs["host"] for s in only.first().elements("service", NS)] == ["stun.example.org"]  # type: ignore[union-attr]

            creds = await ask(
                alice,
                f"<credentials xmlns='{NS}'><service host='turn.example.org' type='turn'/></credentials>",
                to="localhost",
            )
            service = creds.first().find("service", NS)  # type: ignore[union-attr]
            assert service is not None and service.attrs["username"].endswith(":alice@localhost")
            missing = await ask(
                alice,
                f"<credentials xmlns='{NS}'><service host='stun.example.org' type='stun'/></credentials>",
                to="localhost",
            )
            assert missing.attrs["type"] == "error"
            error = missing.find("error", CLIENT)
            assert error is not None and error.find("item-not-found", STANZA_ERRORS) is not None
        finally:
            alice.close()


async def test_without_configuration_nothing_is_advertised(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        await running.add_user("alice@localhost", "pw")
        alice = await RawClient.login(running.c2s_port, "alice", "pw", "r")
        try:
            info = await ask(alice, f"<query xmlns='{DISCO_INFO}'/>", to="localhost")
            features = [f.attrs["var"] for f in info.first().elements("feature", DISCO_INFO)]  # type: ignore[union-attr]
            assert NS not in features
            assert info.first().find("x", DATA_FORMS) is None  # type: ignore[union-attr]
            reply = await ask(alice, f"<services xmlns='{NS}'/>", to="localhost")
            assert reply.attrs["type"] == "error"
        finally:
            alice.close()
