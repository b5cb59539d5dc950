"""s2s streams in both roles on StreamPair: STARTTLS, SASL EXTERNAL, Server Dialback, policies."""

from __future__ import annotations

from roost.stream.core import Closed, Established, Phase
from roost.stream.pair import StreamPair
from roost.stream.s2s import (
    DIALBACK,
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
