"""Real clients log in over STARTTLS and direct TLS with each SASL mechanism, then use core services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from roost.util.datetime import parse_datetime
from roost.xml.ns import SASL, SASL_CB
from tests.support.clients import connect
from tests.support.raw import RawClient
from tests.support.server import RunningServer


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
async def test_starttls_login_with_mechanism(server: RunningServer, mech: str) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    client = await connect("romeo@localhost/balcony", "s3cret", server.c2s_port, mech=mech)
    assert str(client.boundjid) == "romeo@localhost/balcony"
    rtt = await client.plugin["xep_0199"].ping("localhost", timeout=5)
    assert rtt >= 0
    client.disconnect()


async def test_direct_tls_login(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    client = await connect("romeo@localhost/tls", "s3cret", server.c2s_tls_port, direct_tls=True)
    assert str(client.boundjid) == "romeo@localhost/tls"
    client.disconnect()


async def test_scram_sha_512_login(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    assert "SCRAM-SHA-512" in raw.mechanisms()
    result = await raw.auth_scram("romeo", "s3cret", "SCRAM-SHA-512")
    assert result.name == "success"
    raw.close()


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"])
async def test_scram_plus_with_channel_binding(server: RunningServer, mech: str, cb_type: str) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    assert mech in raw.mechanisms()
    assert raw.features is not None
    cb = raw.features.find("sasl-channel-binding", SASL_CB)
    assert cb is not None and cb_type in {c.attrs["type"] for c in cb.elements()}
    result = await raw.auth_scram("romeo", "s3cret", mech, cb_type=cb_type)
    assert result.name == "success", result
    await raw.open()
    reply = await raw.bind("plus")
    assert reply.attrs["type"] == "result"
    raw.close()


async def test_plus_over_direct_tls(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await RawClient.connect(server.c2s_tls_port, direct_tls=True)
    features = await raw.open()
    assert features.find("starttls") is None
    result = await raw.auth_scram("romeo", "s3cret", "SCRAM-SHA-256-PLUS", cb_type="tls-exporter")
    assert result.name == "success", result
    raw.close()


async def test_wrong_channel_binding_is_refused(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    real = raw.channel_binding
    raw.channel_binding = lambda cb_type: bytes(32)  # type: ignore[method-assign]
    result = await raw.auth_scram("romeo", "s3cret", "SCRAM-SHA-256-PLUS", cb_type="tls-exporter")
    assert result.name == "failure"
    assert result.find("not-authorized", SASL) is not None
    raw.channel_binding = real  # type: ignore[method-assign]
    raw.close()


async def test_core_services_ping_disco_version_time_uptime(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    client = await connect("romeo@localhost/balcony", "s3cret", server.c2s_port)
    try:
        info = await client.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
        features = set(info["disco_info"]["features"])
        assert {
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "urn:xmpp:ping",
            "jabber:iq:version",
            "urn:xmpp:time",
            "jabber:iq:last",
        } <= features
        identities = info["disco_info"]["identities"]
        assert any(i[0] == "server" and i[1] == "im" for i in identities)

        version = await client.plugin["xep_0092"].get_version("localhost", timeout=5)
        assert version["software_version"]["name"] == "Roost"
        assert version["software_version"]["version"]

        entity_time = await client.plugin["xep_0202"].get_entity_time("localhost", timeout=5)
        # XEP-0202 §3: <utc/> carries a 'Z'-suffixed UTC time (slixmpp's own getter appends another Z).
        utc_text = entity_time["entity_time"]._get_sub_text("utc")
        assert utc_text.endswith("Z")
        assert abs((parse_datetime(utc_text) - datetime.now(UTC)).total_seconds()) < 60
        assert entity_time["entity_time"]._get_sub_text("tzo")[0] in "+-"

        last = await client.plugin["xep_0012"].get_last_activity("localhost", timeout=5)
        assert int(last["last_activity"]["seconds"]) >= 0

        account = await client.plugin["xep_0030"].get_info(jid="romeo@localhost", timeout=5)
        assert ("account", "registered", None, None) in account["disco_info"]["identities"]
    finally:
        client.disconnect()
