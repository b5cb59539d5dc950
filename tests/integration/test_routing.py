"""RFC 6120 §8 and §10 delivery rules for the server's own domains, checked on the wire."""

from __future__ import annotations

import pytest

from roost.stanza import error_condition
from roost.xml.ns import STANZA_ERRORS
from tests.support.queries import nothing_arrives
from tests.support.raw import RawClient
from tests.support.server import RunningServer


@pytest.fixture(autouse=True)
async def accounts(server: RunningServer) -> None:
    for user in ("romeo", "juliet"):
        await server.add_user(f"{user}@localhost", "s3cret")


async def test_message_to_full_jid_is_delivered_with_stamped_from(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    juliet = await RawClient.login(server.c2s_port, "juliet", "s3cret", "j")
    romeo.send_raw("<message to='juliet@localhost/j' type='chat' id='m1'><body>hi &amp; bye</body></message>")
    got = await juliet.element()
    assert got.name == "message"
    assert got.attrs["from"] == "romeo@localhost/r"  # RFC 6120 §8.1.2.1
    assert got.find_text("body") == "hi & bye"


async def test_bare_from_is_accepted_and_replaced_by_full(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    juliet = await RawClient.login(server.c2s_port, "juliet", "s3cret", "j")
    romeo.send_raw("<message from='romeo@localhost' to='juliet@localhost/j'><body>x</body></message>")
    assert (await juliet.element()).attrs["from"] == "romeo@localhost/r"


async def test_message_to_nonexistent_account_is_service_unavailable(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw("<message to='nobody@localhost' type='chat' id='m2'><body>anyone?</body></message>")
    reply = await romeo.element()
    assert reply.attrs["type"] == "error" and reply.attrs["id"] == "m2"
    assert reply.attrs["from"] == "nobody@localhost"
    assert error_condition(reply) == "service-unavailable"


async def test_never_an_error_in_reply_to_an_error(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw(
        "<message to='nobody@localhost' type='error' id='e1'><error type='cancel'>"
        f"<item-not-found xmlns='{STANZA_ERRORS}'/></error></message>"
    )
    romeo.send_raw("<iq to='nobody@localhost/x' type='error' id='e2'/>")
    await nothing_arrives(romeo)


async def test_iq_to_offline_resource_is_service_unavailable(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw(
        "<iq to='juliet@localhost/gone' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>"
    )
    reply = await romeo.element()
    assert reply.attrs["type"] == "error" and error_condition(reply) == "service-unavailable"


async def test_iq_between_full_jids_and_result_back(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    juliet = await RawClient.login(server.c2s_port, "juliet", "s3cret", "j")
    romeo.send_raw("<iq to='juliet@localhost/j' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
    request = await juliet.element()
    assert request.attrs["from"] == "romeo@localhost/r"
    juliet.send_raw(
        "<iq to='romeo@localhost/r' type='result' id='v1'><query xmlns='jabber:iq:version'>"
        "<name>J</name></query></iq>"
    )
    result = await romeo.element()
    assert result.attrs["type"] == "result" and result.attrs["from"] == "juliet@localhost/j"


async def test_remote_domain_is_remote_server_not_found(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw("<message to='someone@remote.example' id='r1'><body>x</body></message>")
    reply = await romeo.element()
    assert error_condition(reply) == "remote-server-not-found"


@pytest.mark.parametrize("to", ["localhost", "romeo@localhost", "juliet@localhost"])
async def test_unknown_iq_namespace_is_service_unavailable(server: RunningServer, to: str) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw(f"<iq to='{to}' type='get' id='u1'><query xmlns='urn:example:unknown'/></iq>")
    reply = await romeo.element()
    assert reply.attrs["type"] == "error" and reply.attrs["id"] == "u1"
    assert error_condition(reply) == "service-unavailable"  # RFC 6120 §8.4


async def test_iq_without_id_or_with_two_payloads_is_bad_request(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw(
        "<iq to='localhost' type='get' id='two'><ping xmlns='urn:xmpp:ping'/>"
        "<ping xmlns='urn:xmpp:ping'/></iq>"
    )
    assert error_condition(await romeo.element()) == "bad-request"
    romeo.send_raw("<iq to='localhost' type='get' id='t'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await romeo.element()).attrs["type"] == "result"
    romeo.send_raw("<iq to='localhost' type='bogus' id='b'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(await romeo.element()) == "bad-request"


async def test_malformed_to_is_jid_malformed(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw("<message to='a@b@c' id='j1'><body>x</body></message>")
    reply = await romeo.element()
    assert error_condition(reply) == "jid-malformed" and reply.attrs["id"] == "j1"


async def test_message_without_to_goes_to_own_account(server: RunningServer) -> None:
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    romeo.send_raw("<iq type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    reply = await romeo.element()
    assert reply.attrs["type"] == "result"
    identity = reply.find("query").find("identity")  # type: ignore[union-attr]
    assert identity is not None and identity.attrs["category"] == "account"


async def test_in_order_processing_of_one_senders_stanzas(server: RunningServer) -> None:
    """RFC 6120 §10.1: an IQ that needs storage does not let later stanzas overtake it."""
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    juliet = await RawClient.login(server.c2s_port, "juliet", "s3cret", "j")
    # disco#info on an account is answered after a storage lookup (async); the message is routed at once.
    romeo.send_raw(
        "<iq to='juliet@localhost' type='get' id='slow'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        "<message to='juliet@localhost/j' id='after'><body>second</body></message>"
        "<iq to='juliet@localhost/j' type='get' id='third'><query xmlns='urn:example:x'/></iq>"
    )
    assert (await romeo.element()).attrs["id"] == "slow"
    first = await juliet.element()
    second = await juliet.element()
    assert [first.attrs["id"], second.attrs["id"]] == ["after", "third"]
