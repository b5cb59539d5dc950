"""The XEP-0114 handshake features in both roles, joined in memory."""

from __future__ import annotations

from roost.stream.core import Closed, Established, Phase, Role, Stream
from roost.stream.features.component import (
    ComponentAuthenticated,
    ComponentHandshake,
    ComponentHandshakeClient,
    handshake_digest,
)
from roost.stream.framing import XmlFraming
from roost.stream.pair import StreamPair
from roost.xml.ns import COMPONENT

SECRETS = {"irc.example.org": "s3cret"}


def pair(domain: str, secret: str) -> StreamPair:
    receiving = Stream(
        XmlFraming(),
        [ComponentHandshake(SECRETS.get)],
        content_ns=COMPONENT,
        domains=frozenset(SECRETS),
        versionless=True,
    )
    initiating = Stream(
        XmlFraming(),
        [ComponentHandshakeClient(secret)],
        role=Role.INITIATING,
        content_ns=COMPONENT,
        versionless=True,
    )
    initiating.start(domain)
    return StreamPair(initiating, receiving)


def test_digest_is_lower_case_hex_sha1_of_stream_id_and_secret() -> None:
    # sha1sum of the bytes "3BF96D32sharedsecret"
    assert handshake_digest("3BF96D32", "sharedsecret") == "3b6c216d9b55a7b4f3e82ab3e10cb81569f115d4"


def test_right_secret_authenticates_the_components_domain() -> None:
    p = pair("irc.example.org", "s3cret")
    client_events, server_events = p.pump()
    assert any(isinstance(e, Established) for e in client_events)
    assert server_events == [ComponentAuthenticated("irc.example.org")]
    assert p.receiving.stream.phase is Phase.ESTABLISHED


def test_wrong_secret_is_not_authorized() -> None:
    _, server_events = pair("irc.example.org", "guess").pump()
    closed = server_events[-1]
    assert (
        isinstance(closed, Closed) and closed.error is not None and closed.error.condition == "not-authorized"
    )
    assert not any(isinstance(e, ComponentAuthenticated) for e in server_events)


def test_unknown_component_domain_is_host_unknown() -> None:
    _, server_events = pair("other.example.org", "s3cret").pump()
    closed = server_events[-1]
    assert (
        isinstance(closed, Closed) and closed.error is not None and closed.error.condition == "host-unknown"
    )
