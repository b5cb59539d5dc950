"""s2s streams in both roles on StreamPair: STARTTLS, SASL EXTERNAL, Server Dialback, policies."""

from __future__ import annotations

from typing import Any

from roost.stream.core import Closed, Established, Phase
from roost.stream.pair import StreamPair
from roost.stream.s2s import (
    DIALBACK,
    BidiEnabled,
    BidiServer,
    DialbackServer,
    ExternalRefused,
    NeedDialbackVerify,
    PeerAuthenticated,
    S2SPolicy,
    VerifyAnswer,
    dialback_key,
    initiating_stream,
    receiving_stream,
)
from roost.xml.element import Element
from roost.xml.ns import SERVER

SECRET_A = b"a" * 32
SECRET_B = b"b" * 32


def make_pair(
    receiving_policy: S2SPolicy | None = None,
    initiating_policy: S2SPolicy | None = None,
    *,
    initiating_tls: bool = True,
) -> tuple[StreamPair, DialbackServer]:
    receiving, _, _, dialback = receiving_stream(
        receiving_policy or S2SPolicy(SECRET_B), frozenset({"b.example"}), tls_available=True
    )
    initiating, _, _ = initiating_stream(
        "a.example", "b.example", initiating_policy or S2SPolicy(SECRET_A), tls_available=initiating_tls
    )
    initiating.start("b.example", from_="a.example")
    return StreamPair(initiating, receiving), dialback


def test_header_declares_the_dialback_prefix() -> None:
    pair, _ = make_pair()
    pair.pump()
    assert b'xmlns:db="jabber:server:dialback"' in pair.initiating.wire[0]
    assert b'xmlns:db="jabber:server:dialback"' in pair.receiving.wire[0]


def test_dialback_after_starttls_authenticates_with_a_xep_0185_key() -> None:
    pair, dialback = make_pair()
    pair.pump()
    _, server_events = pair.tls()
    (need,) = [e for e in server_events if isinstance(e, NeedDialbackVerify)]
    assert (need.remote, need.local) == ("a.example", "b.example")
    receiving = pair.receiving.stream
    assert need.stream_id == receiving.stream_id
    assert need.key == dialback_key(SECRET_A, "b.example", "a.example", receiving.stream_id)
    pair.receiving.events += dialback.verified(receiving, "a.example", "b.example", True)
    client_events, server_events = pair.pump()
    assert PeerAuthenticated("b.example", "a.example", "dialback") in client_events
    assert any(isinstance(e, Established) for e in client_events)
    assert PeerAuthenticated("a.example", "b.example", "dialback") in pair.receiving.events
    pair.initiating.stream.send(Element("message", SERVER, {"from": "x@a.example", "to": "y@b.example"}))
    _, server_events = pair.pump()
    assert [e.name for e in server_events if isinstance(e, Element)] == ["message"]


def test_invalid_dialback_key_ends_the_stream() -> None:
    pair, dialback = make_pair()
    pair.pump()
    pair.tls()
    pair.receiving.events += dialback.verified(pair.receiving.stream, "a.example", "b.example", False)
    client_events, _ = pair.pump()
    assert not any(isinstance(e, Established) for e in client_events)
    for side in (pair.initiating, pair.receiving):
        closed = next(e for e in side.events if isinstance(e, Closed))
        assert closed.error is not None and closed.error.condition == "not-authorized"


def test_authoritative_server_answers_db_verify() -> None:
    # b.example's receiving stream is authoritative for b.example: a.example asks about a key.
    pair, _ = make_pair()
    pair.pump()
    pair.tls()
    good = dialback_key(SECRET_B, "a.example", "b.example", "sid-1")
    for key, valid in ((good, True), ("0" * 64, False)):
        verify = Element("verify", DIALBACK, {"from": "a.example", "to": "b.example", "id": "sid-1"})
        verify.children.append(key)
        pair.initiating.stream.send(verify)
        client_events, _ = pair.pump()
        assert VerifyAnswer("b.example", "a.example", "sid-1", valid) in client_events


def test_sasl_external_when_the_peer_certificate_validates() -> None:
    policy = S2SPolicy(SECRET_B)
    pair, _ = make_pair(policy)
    pair.pump()
    policy.cert_domains = frozenset({"a.example"})  # what the driver found after the handshake
    client_events, server_events = pair.tls()
    assert PeerAuthenticated("a.example", "b.example", "external") in server_events
    assert PeerAuthenticated("b.example", "a.example", "external") in client_events
    assert any(isinstance(e, Established) for e in client_events)
    assert pair.receiving.stream.phase is Phase.ESTABLISHED
    assert not any(isinstance(e, NeedDialbackVerify) for e in server_events)


def test_external_refused_closes_for_a_dialback_retry_without_external() -> None:
    policy = S2SPolicy(SECRET_B)
    pair, _ = make_pair(policy)
    pair.pump()
    policy.cert_domains = frozenset({"someone-else.example"})
    client_events, server_events = pair.tls()
    assert any(isinstance(e, ExternalRefused) for e in client_events)
    assert not any(isinstance(e, PeerAuthenticated) for e in server_events)
    # The retry: no EXTERNAL attempt even though it is offered; dialback instead.
    pair, _ = make_pair(policy, S2SPolicy(SECRET_A, have_certificate=False))
    pair.pump()
    _, server_events = pair.tls()
    assert any(isinstance(e, NeedDialbackVerify) for e in server_events)


def test_secure_auth_refuses_dialback() -> None:
    pair, _ = make_pair(S2SPolicy(SECRET_B, secure_auth=True))
    pair.pump()
    client_events, server_events = pair.tls()
    assert not any(isinstance(e, NeedDialbackVerify) for e in server_events)
    assert b"<dialback" not in b"".join(pair.receiving.wire)
    assert any(b'type="error"' in item and b"not-authorized" in item for item in pair.receiving.wire)
    assert not any(isinstance(e, Established) for e in client_events)


def test_dialback_before_tls_is_refused_when_encryption_is_required() -> None:
    pair, _ = make_pair(initiating_policy=S2SPolicy(SECRET_A, require_encryption=False), initiating_tls=False)
    _, server_events = pair.pump()
    closed = server_events[-1]
    assert isinstance(closed, Closed) and closed.error is not None
    assert closed.error.condition == "policy-violation"


# -- XEP-0288 bidirectional streams ------------------------------------------------------------------


def _authenticate_by_dialback(pair: StreamPair, dialback: DialbackServer) -> tuple[list[Any], list[Any]]:
    pair.pump()
    _, server_events = pair.tls()
    need = next(e for e in server_events if isinstance(e, NeedDialbackVerify))
    pair.receiving.events += dialback.verified(pair.receiving.stream, need.remote, need.local, True)
    pair.pump()
    return pair.initiating.events, pair.receiving.events


def _stanzas(events: list[Any]) -> list[Element]:
    return [e for e in events if isinstance(e, Element)]


def test_bidi_with_dialback_carries_stanzas_back_on_the_same_stream() -> None:
    pair, dialback = make_pair()
    client_events, server_events = _authenticate_by_dialback(pair, dialback)
    assert BidiEnabled() in client_events and BidiEnabled() in server_events
    # Asked for after TLS, before authentication (XEP-0288 §2.2).
    wire = b"".join(pair.initiating.wire)
    assert wire.index(b"<bidi xmlns='urn:xmpp:bidi'/>") < wire.index(b"<db:result")
    bidi = pair.receiving.stream.feature(BidiServer)
    assert bidi is not None and bidi.enabled
    back = Element("message", SERVER, {"from": "y@b.example", "to": "x@a.example"})
    pair.receiving.stream.send(back)
    client_events, _ = pair.pump()
    assert [e.attrs["to"] for e in _stanzas(client_events)] == ["x@a.example"]
    assert not pair.initiating.stream.closed


def test_bidi_with_sasl_external() -> None:
    policy = S2SPolicy(SECRET_B)
    pair, _ = make_pair(policy)
    pair.pump()
    policy.cert_domains = frozenset({"a.example"})
    client_events, server_events = pair.tls()
    assert BidiEnabled() in client_events and BidiEnabled() in server_events
    assert PeerAuthenticated("a.example", "b.example", "external") in server_events
    assert pair.receiving.stream.phase is Phase.ESTABLISHED
    pair.receiving.stream.send(Element("iq", SERVER, {"from": "b.example", "to": "a.example", "type": "get"}))
    client_events, _ = pair.pump()
    assert [e.name for e in _stanzas(client_events)] == ["iq"]


def test_bidi_is_neither_offered_nor_asked_for_when_disabled() -> None:
    for receiving, initiating in ((False, True), (True, False)):
        pair, dialback = make_pair(S2SPolicy(SECRET_B, bidi=receiving), S2SPolicy(SECRET_A, bidi=initiating))
        client_events, server_events = _authenticate_by_dialback(pair, dialback)
        assert BidiEnabled() not in client_events and BidiEnabled() not in server_events
        assert b"urn:xmpp:bidi'" not in b"".join(pair.initiating.wire)


def test_bidi_before_starttls_is_refused() -> None:
    receiving, *_ = receiving_stream(S2SPolicy(SECRET_B), frozenset({"b.example"}), tls_available=True)
    header = (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
        b"xmlns:stream='http://etherx.jabber.org/streams' to='b.example' from='a.example' version='1.0'>"
    )
    assert not receiving.receive_data(header)
    assert b"urn:xmpp:features:bidi" not in b"".join(receiving.items_to_send())  # not offered yet
    events = receiving.receive_data(b"<bidi xmlns='urn:xmpp:bidi'/>")
    closed = next(e for e in events if isinstance(e, Closed))
    assert closed.error is not None and closed.error.condition == "policy-violation"


def test_bidi_initiator_answers_verify_and_refuses_piggybacking_without_closing() -> None:
    pair, dialback = make_pair()
    _authenticate_by_dialback(pair, dialback)
    receiving = pair.receiving.stream
    # b.example asks a.example (over a.example's own stream) whether a key is a.example's.
    good = dialback_key(SECRET_A, "b.example", "a.example", "sid-9")
    verify = Element("verify", DIALBACK, {"from": "b.example", "to": "a.example", "id": "sid-9"})
    verify.children.append(good)
    receiving.send(verify)
    # And would authenticate another of its domains on it (target piggybacking): refused politely.
    result = Element("result", DIALBACK, {"from": "muc.b.example", "to": "a.example"})
    result.children.append("0" * 64)
    receiving.send(result)
    pair.pump()
    wire = b"".join(pair.initiating.wire)
    assert b'<db:verify from="a.example" to="b.example" id="sid-9" type="valid"/>' in wire
    assert b'<db:result from="a.example" to="muc.b.example" type="error">' in wire
    assert not pair.initiating.stream.closed and not receiving.closed
