"""The sans-IO c2s stream: negotiation driven with bytes, no sockets."""

from __future__ import annotations

import base64

import pytest

from roost.jid import JID
from roost.stanza.errors import StanzaError
from roost.stream.c2s import (
    Authenticated,
    C2SSettings,
    C2SStream,
    Closed,
    NeedBind,
    NeedCredentials,
    NeedTls,
    State,
)
from roost.stream.sasl.scram import ScramClient, derive_credentials
from roost.xml.element import Element
from roost.xml.parser import StreamOpen, StreamParser

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"to='example.org' version='1.0'>"
)
CREDS = derive_credentials("pencil", "SHA-256", 4096)


class Peer:
    """The client side: parses what the stream writes."""

    def __init__(self) -> None:
        self.parser = StreamParser()

    def read(self, stream: C2SStream) -> list[Element]:
        out = [e for e in self.parser.feed(stream.data_to_send()) if isinstance(e, Element)]
        return out

    def restart(self) -> None:
        self.parser.reset()


def settings(**kwargs: object) -> C2SSettings:
    return C2SSettings(domains=frozenset({"example.org"}), **kwargs)  # type: ignore[arg-type]


def negotiate_to_auth(stream: C2SStream, peer: Peer) -> None:
    assert stream.receive_data(HEADER) == []
    features = peer.read(stream)[-1]
    assert features.find("starttls") is not None
    events = stream.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    assert events == [NeedTls()]
    assert peer.read(stream)[-1].name == "proceed"
    assert stream.tls_established({"tls-exporter": b"x" * 32}) == []
    peer.restart()
    stream.receive_data(HEADER)
    peer.read(stream)


def scram_login(stream: C2SStream, peer: Peer, mechanism: str = "SCRAM-SHA-256") -> None:
    client = ScramClient("SHA-256", "juliet", "pencil")
    auth = base64.b64encode(client.first()).decode()
    events = stream.receive_data(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{auth}</auth>".encode()
    )
    assert events == [NeedCredentials("example.org", "juliet", "SHA-256")]
    assert stream.state is State.LOOKUP_PENDING
    assert stream.credentials(CREDS) == []
    challenge = peer.read(stream)[-1]
    response = base64.b64encode(client.respond(base64.b64decode(challenge.text))).decode()
    events = stream.receive_data(
        f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{response}</response>".encode()
    )
    assert events == [Authenticated("example.org", "juliet", mechanism)]
    success = peer.read(stream)[-1]
    client.verify(base64.b64decode(success.text))
    peer.restart()


def test_full_negotiation_to_established() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_to_auth(stream, peer)
    scram_login(stream, peer)
    stream.receive_data(HEADER)
    features = peer.read(stream)[-1]
    assert features.find("bind", "urn:ietf:params:xml:ns:xmpp-bind") is not None
    events = stream.receive_data(
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<resource>Home</resource></bind></iq>"
    )
    assert events == [NeedBind("Home")]
    assert stream.bound(JID("juliet", "example.org", "Home")) == []
    result = peer.read(stream)[-1]
    assert result.attrs["type"] == "result"
    assert stream.state is State.ESTABLISHED
    events = stream.receive_data(b"<message to='romeo@example.org'><body>hi</body></message>")
    assert len(events) == 1 and isinstance(events[0], Element) and events[0].name == "message"


def test_input_arriving_during_lookup_is_held_in_order() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_to_auth(stream, peer)
    client = ScramClient("SHA-256", "juliet", "pencil")
    auth = base64.b64encode(client.first()).decode()
    stream.receive_data(
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{auth}</auth>".encode()
    )
    # A misbehaving client sends more before the challenge: held, processed after the lookup.
    assert stream.receive_data(b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>") == []
    events = stream.credentials(CREDS)
    assert [type(e).__name__ for e in events] == ["AuthFailed"]
    names = [e.name for e in peer.read(stream)]
    assert names == ["challenge", "failure"]


def test_starttls_injection_is_discarded() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    stream.receive_data(HEADER)
    peer.read(stream)
    events = stream.receive_data(
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
        b"mechanism='PLAIN'>AGp1bGlldABwZW5jaWw=</auth>"
    )
    assert events == [NeedTls()]
    stream.tls_established({})
    peer.read(stream)
    peer.restart()
    stream.receive_data(HEADER)
    assert [e.name for e in peer.read(stream)] == ["features"]  # no SASL answer to the injected <auth/>


def test_plain_is_verified_by_the_driver() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_to_auth(stream, peer)
    events = stream.receive_data(
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABwZW5jaWw=</auth>"
    )
    assert events == [NeedCredentials("example.org", "juliet", "SHA-256", "pencil")]
    events = stream.credentials(CREDS, password_ok=False)
    assert peer.read(stream)[-1].find("not-authorized") is not None


def test_bind_failure_allows_retry_then_policy_violation() -> None:
    stream = C2SStream(settings(max_bind_failures=2))
    peer = Peer()
    negotiate_to_auth(stream, peer)
    scram_login(stream, peer)
    stream.receive_data(HEADER)
    peer.read(stream)
    bind = b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    assert stream.receive_data(bind) == [NeedBind(None)]
    assert stream.bind_failed(StanzaError("resource-constraint")) == []
    assert peer.read(stream)[-1].attrs["type"] == "error"
    assert stream.receive_data(bind) == [NeedBind(None)]
    events = stream.bind_failed(StanzaError("resource-constraint"))
    assert isinstance(events[-1], Closed) and events[-1].error is not None
    assert events[-1].error.condition == "policy-violation"


@pytest.mark.parametrize("require", [True, False])
def test_mechanisms_offered(require: bool) -> None:
    stream = C2SStream(settings(require_encryption=require))
    peer = Peer()
    stream.receive_data(HEADER)
    features = peer.read(stream)[-1]
    mechs = features.find("mechanisms")
    if require:
        assert mechs is None
    else:
        assert mechs is not None
        offered = [m.text for m in mechs.elements()]
        assert "PLAIN" not in offered and not any(m.endswith("-PLUS") for m in offered)


def test_header_reply_is_first_output() -> None:
    stream = C2SStream(settings())
    stream.receive_data(HEADER)
    parsed = StreamParser().feed(stream.data_to_send())
    assert isinstance(parsed[0], StreamOpen)
    assert parsed[0].header.attrs["from"] == "example.org"
    assert parsed[0].header.attrs["id"]


def test_header_escapes_the_clients_language_tag() -> None:
    stream = C2SStream(settings(require_encryption=False))
    peer = Peer()
    header = HEADER.replace(b"version=", b"xml:lang='en&apos;&lt;x' version=")
    assert stream.receive_data(header) == []
    opened = [e for e in peer.parser.feed(stream.data_to_send()) if isinstance(e, StreamOpen)]
    attrs = opened[0].header.attrs
    assert attrs["xml:lang"] == "en'<x"
    assert attrs["from"] == "example.org" and attrs["id"] == stream.stream_id


def test_features_are_shared_between_streams_but_follow_their_state() -> None:
    shared = settings()
    first, second = C2SStream(shared), C2SStream(shared, secure=True)
    first.receive_data(HEADER)
    second.receive_data(HEADER)
    plain, secure = Peer().read(first)[-1], Peer().read(second)[-1]
    assert plain.find("starttls") is not None and secure.find("starttls") is None
    assert secure.find("mechanisms") is not None and plain.find("mechanisms") is None
    third = C2SStream(shared)
    third.receive_data(HEADER)
    assert Peer().read(third)[-1] == plain
