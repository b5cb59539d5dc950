"""In-band registration before authentication (XEP-0077 §3.1.1) in the sans-IO c2s stream."""

from __future__ import annotations

from roost.stanza import iq_result
from roost.stream.c2s import C2SSettings, C2SStream, Closed, RegisterRequest, State
from roost.xml.element import Element
from roost.xml.ns import REGISTER, REGISTER_FEATURE
from tests.unit.stream.test_c2s import HEADER, Peer, scram_login

REGISTER_GET = b"<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>"
REGISTER_SET = (
    b"<iq type='set' id='r2'><query xmlns='jabber:iq:register'>"
    b"<username>juliet</username><password>pencil</password></query></iq>"
)


def settings(open_domains: frozenset[str] = frozenset({"example.org"}), **kwargs: object) -> C2SSettings:
    return C2SSettings(
        domains=frozenset({"example.org"}),
        preauth_register=lambda domain: domain in open_domains,
        **kwargs,  # type: ignore[arg-type]
    )


def test_feature_offered_beside_sasl_over_tls() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    stream.receive_data(HEADER)
    before_tls = peer.read(stream)[-1]
    assert before_tls.find("register", REGISTER_FEATURE) is None  # encryption required: not yet
    stream.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    peer.read(stream)
    stream.tls_established({})
    peer.restart()
    stream.receive_data(HEADER)
    features = read_features(stream, peer)
    assert features.find("register", REGISTER_FEATURE) is not None


def test_feature_absent_when_the_domain_takes_no_registrations() -> None:
    stream = C2SStream(settings(open_domains=frozenset()))
    peer = Peer()
    negotiate_tls(stream, peer)
    assert read_features(stream, peer).find("register", REGISTER_FEATURE) is None


def test_registration_iq_is_handed_to_the_driver_and_answered() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_tls(stream, peer)
    read_features(stream, peer)
    events = stream.receive_data(REGISTER_GET)
    assert len(events) == 1 and isinstance(events[0], RegisterRequest)
    request = events[0]
    assert request.domain == "example.org" and request.iq.attrs["id"] == "r1"
    assert stream.state is State.REGISTER_PENDING
    # Input is held while the driver works; nothing else happens.
    assert stream.receive_data(REGISTER_SET) == []
    answer = Element("query", REGISTER)
    events = stream.register_reply(iq_result(request.iq, answer))
    reply = peer.read(stream)[-1]
    assert reply.attrs == {"type": "result", "id": "r1"} and reply.find("query", REGISTER) is not None
    # The held set comes out now, in order.
    assert len(events) == 1 and isinstance(events[0], RegisterRequest)
    assert events[0].iq.attrs["id"] == "r2"


def test_authentication_follows_registration() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_tls(stream, peer)
    read_features(stream, peer)
    [request] = stream.receive_data(REGISTER_SET)
    assert isinstance(request, RegisterRequest)
    stream.register_reply(iq_result(request.iq))
    peer.read(stream)
    scram_login(stream, peer)
    assert stream.username == "juliet"


def test_other_stanzas_before_authentication_still_close_the_stream() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_tls(stream, peer)
    read_features(stream, peer)
    events = stream.receive_data(b"<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>")
    assert isinstance(events[-1], Closed) and events[-1].error is not None
    assert events[-1].error.condition == "not-authorized"


def test_registration_iq_to_another_domain_closes_the_stream() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_tls(stream, peer)
    read_features(stream, peer)
    events = stream.receive_data(
        b"<iq type='get' id='x' to='elsewhere.example'><query xmlns='jabber:iq:register'/></iq>"
    )
    assert isinstance(events[-1], Closed)


def test_registration_is_not_offered_in_the_clear_when_encryption_is_required() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    stream.receive_data(HEADER)
    peer.read(stream)
    events = stream.receive_data(REGISTER_GET)
    assert isinstance(events[-1], Closed)


def test_registration_in_the_clear_when_encryption_is_optional() -> None:
    stream = C2SStream(settings(require_encryption=False))
    peer = Peer()
    stream.receive_data(HEADER)
    assert peer.read(stream)[-1].find("register", REGISTER_FEATURE) is not None
    events = stream.receive_data(REGISTER_GET)
    assert len(events) == 1 and isinstance(events[0], RegisterRequest)


def test_registration_iq_without_id_is_a_bad_request() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_tls(stream, peer)
    read_features(stream, peer)
    assert stream.receive_data(b"<iq type='get'><query xmlns='jabber:iq:register'/></iq>") == []
    reply = peer.read(stream)[-1]
    assert reply.attrs["type"] == "error" and reply.find("error") is not None
    assert stream.state is State.WAIT_STARTTLS_OR_AUTH


def test_reply_without_a_pending_request_is_ignored() -> None:
    stream = C2SStream(settings())
    peer = Peer()
    negotiate_tls(stream, peer)
    read_features(stream, peer)
    assert stream.register_reply(Element("iq", "jabber:client", {"type": "result", "id": "z"})) == []
    assert peer.read(stream) == []


def negotiate_tls(stream: C2SStream, peer: Peer) -> None:
    """Up to (not including) reading the post-TLS features."""
    stream.receive_data(HEADER)
    peer.read(stream)
    stream.receive_data(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    peer.read(stream)
    stream.tls_established({})
    peer.restart()
    stream.receive_data(HEADER)


def read_features(stream: C2SStream, peer: Peer) -> Element:
    features = peer.read(stream)[-1]
    assert features.name == "features"
    return features
