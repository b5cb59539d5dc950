"""Bad input gets the RFC 6120 error it names, and no other session notices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roost.xml.element import Element
from roost.xml.ns import SASL
from tests.support.clients import Client, connect
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    await server.add_user("romeo@localhost", "s3cret")
    await server.add_user("juliet@localhost", "s3cret")


@pytest.fixture
async def bystander(server: RunningServer, accounts: None) -> AsyncIterator[Client]:
    """A well-behaved session that must keep working while another misbehaves."""
    client = await connect("juliet@localhost/home", "s3cret", server.c2s_port)
    yield client
    client.disconnect()


async def still_works(client: Client) -> None:
    assert await client.plugin["xep_0199"].ping("localhost", timeout=5) >= 0


async def logged_in(server: RunningServer) -> RawClient:
    return await RawClient.login(server.c2s_port, "romeo", "s3cret", "raw")


async def test_malformed_xml_gives_not_well_formed(server: RunningServer, bystander: Client) -> None:
    raw = await logged_in(server)
    raw.send_raw("<message to='juliet@localhost'><body>unclosed</message>")
    assert await raw.stream_error() == "not-well-formed"
    assert await raw.closed()
    await still_works(bystander)


async def test_doctype_with_entities_gives_restricted_xml(server: RunningServer, bystander: Client) -> None:
    raw = await RawClient.connect(server.c2s_port)
    raw.send_raw(
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]>"
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        "to='localhost' version='1.0'>"
    )
    assert await raw.stream_error() == "restricted-xml"
    assert await raw.closed()
    await still_works(bystander)


@pytest.mark.parametrize(
    "payload",
    ["<!-- a comment -->", "<?pi data?>", "<message><body>&custom;</body></message>"],
    ids=["comment", "processing-instruction", "undeclared-entity"],
)
async def test_restricted_xml_mid_stream(server: RunningServer, bystander: Client, payload: str) -> None:
    raw = await logged_in(server)
    raw.send_raw(payload)
    assert await raw.stream_error() == "restricted-xml"
    await still_works(bystander)


async def test_oversized_stanza_gives_policy_violation(server: RunningServer, bystander: Client) -> None:
    raw = await logged_in(server)
    limit = server.server.config.c2s.max_stanza_bytes
    raw.send_raw("<message to='juliet@localhost'><body>")
    chunk = "x" * 65536
    for _ in range(limit // len(chunk) + 2):
        raw.send_raw(chunk)
    assert await raw.stream_error() == "policy-violation"
    assert await raw.closed()
    await still_works(bystander)
    assert bystander.received.empty()  # nothing of the oversized message leaked through


async def test_stanza_before_authentication_gives_not_authorized(
    server: RunningServer, bystander: Client
) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    raw.send_raw("<message to='juliet@localhost'><body>sneaky</body></message>")
    assert await raw.stream_error() == "not-authorized"
    await still_works(bystander)
    assert bystander.received.empty()


async def test_stanza_before_starttls_gives_not_authorized(server: RunningServer, bystander: Client) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    raw.send_raw("<iq type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert await raw.stream_error() == "not-authorized"
    await still_works(bystander)


async def test_wrong_password_fails_then_too_many_failures_closes(
    server: RunningServer, bystander: Client
) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    for _ in range(server.server.config.c2s.max_auth_failures):
        result = await raw.auth_scram("romeo", "wrong")
        assert result.name == "failure"
        assert result.find("not-authorized", SASL) is not None
    # RFC 6120 §6.4.5: past the retry limit the stream is closed with <policy-violation/>.
    assert await raw.stream_error() == "policy-violation"
    await still_works(bystander)


async def test_unknown_user_fails_like_wrong_password(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    result = await raw.auth_scram("nobody", "whatever")
    assert result.find("not-authorized", SASL) is not None


async def test_unknown_mechanism_gives_invalid_mechanism(server: RunningServer, bystander: Client) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    raw.send_raw(f"<auth xmlns='{SASL}' mechanism='X-MADE-UP'>=</auth>")
    failure = await raw.element()
    assert failure.name == "failure"
    assert failure.find("invalid-mechanism", SASL) is not None
    # the stream stays usable: a correct attempt still succeeds
    assert (await raw.auth_scram("romeo", "s3cret")).name == "success"
    await still_works(bystander)


async def test_bad_base64_gives_incorrect_encoding(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    raw.send_raw(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'>!!!not base64!!!</auth>")
    failure = await raw.element()
    assert failure.find("incorrect-encoding", SASL) is not None


async def test_sasl_abort(server: RunningServer) -> None:
    raw = await RawClient.connect(server.c2s_port)
    await raw.open()
    await raw.starttls()
    raw.send_raw(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-1'/>")
    challenge = await raw.element()
    assert challenge.name == "challenge"
    raw.send_raw(f"<abort xmlns='{SASL}'/>")
    failure = await raw.element()
    assert failure.find("aborted", SASL) is not None


async def test_plain_without_tls_is_refused(tmp_path: Path) -> None:

    async with running_server(tmp_path / "other", "[c2s]\nrequire_encryption = false\n") as running:
        await running.add_user("romeo@localhost", "s3cret")
        raw = await RawClient.connect(running.c2s_port)
        await raw.open()
        mechanisms = raw.mechanisms()
        assert "PLAIN" not in mechanisms and not any(m.endswith("-PLUS") for m in mechanisms)
        assert "SCRAM-SHA-1" in mechanisms
        result = await raw.auth_plain("romeo", "s3cret")
        assert result.find("encryption-required", SASL) is not None
        assert (await raw.auth_scram("romeo", "s3cret")).name == "success"


async def test_bind_conflict_replaces_older_session(server: RunningServer, bystander: Client) -> None:
    first = await logged_in(server)
    second = await logged_in(server)  # same resource "raw"
    assert second.jid == "romeo@localhost/raw"
    # RFC 6120 §7.7.2.2: the older session is terminated with <conflict/>.
    assert await first.stream_error() == "conflict"
    assert await first.closed()
    ping = Element("iq", "jabber:client", {"type": "get", "id": "p1", "to": "localhost"})
    ping.add("ping", "urn:xmpp:ping")
    second.send(ping)
    reply = await second.element()
    assert reply.attrs["type"] == "result" and reply.attrs["id"] == "p1"
    await still_works(bystander)


async def test_unsupported_stanza_type_after_bind(server: RunningServer) -> None:
    raw = await logged_in(server)
    raw.send_raw("<foo xmlns='jabber:client'/>")
    assert await raw.stream_error() == "unsupported-stanza-type"


async def test_text_between_stanzas_gives_bad_format(server: RunningServer) -> None:
    raw = await logged_in(server)
    raw.send_raw("   hello   ")
    assert await raw.stream_error() == "bad-format"


async def test_whitespace_keepalive_is_accepted(server: RunningServer) -> None:
    raw = await logged_in(server)
    raw.send_raw(" \n \t ")
    ping = Element("iq", "jabber:client", {"type": "get", "id": "k1", "to": "localhost"})
    ping.add("ping", "urn:xmpp:ping")
    raw.send(ping)
    assert (await raw.element()).attrs["type"] == "result"


async def test_invalid_from_closes_stream(server: RunningServer, bystander: Client) -> None:
    raw = await logged_in(server)
    raw.send_raw("<message from='juliet@localhost/home' to='juliet@localhost'><body>spoof</body></message>")
    assert await raw.stream_error() == "invalid-from"
    await still_works(bystander)
    assert bystander.received.empty()
