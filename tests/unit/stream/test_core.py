"""The stream core's extension points, driven through the c2s receiving stream."""

from __future__ import annotations

from roost.jid import JID
from roost.stream.c2s import C2SSettings, C2SStream, Closed, NeedBind
from roost.stream.core import Feature, Phase, Stream, StreamEvent
from roost.xml.element import Element
from tests.unit.stream.test_c2s import HEADER, Peer, negotiate_to_auth, scram_login

SM = "urn:xmpp:sm:3"


class CountingFeature(Feature):
    """A stand-in for stream management: advertised after authentication, answers <r/> with <a/>."""

    nonza_namespaces = frozenset({SM})

    def __init__(self) -> None:
        self.seen: list[str] = []

    def advertise(self, stream: Stream) -> Element | None:
        return Element("sm", SM) if stream.authenticated else None

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        self.seen.append(el.name)
        if el.name == "r":
            stream.send(Element("a", SM, {"h": str(len(self.seen))}))
            return []
        return None  # not one of ours: the core refuses it


def established(feature: Feature) -> tuple[C2SStream, Peer]:
    stream = C2SStream(C2SSettings(domains=frozenset({"example.org"}), features=lambda: (feature,)))
    peer = Peer()
    negotiate_to_auth(stream, peer)
    scram_login(stream, peer)
    stream.receive_data(HEADER)
    features = peer.read(stream)[-1]
    assert features.find("sm", SM) is not None
    bind = b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    assert stream.receive_data(bind) == [NeedBind(None)]
    stream.bound(JID("juliet", "example.org", "r"))
    peer.read(stream)
    return stream, peer


def test_nonzas_go_to_the_feature_that_claims_their_namespace() -> None:
    feature = CountingFeature()
    stream, peer = established(feature)
    assert stream.feature(CountingFeature) is feature
    events = stream.receive_data(b"<message to='romeo@example.org'/><r xmlns='urn:xmpp:sm:3'/><presence/>")
    assert [e.name for e in events if isinstance(e, Element)] == ["message", "presence"]
    assert feature.seen == ["r"]
    answer = peer.read(stream)[-1]
    assert answer.name == "a" and answer.ns == SM and answer.attrs["h"] == "1"


def test_a_nonza_the_feature_refuses_or_nobody_claims_ends_the_stream() -> None:
    stream, _ = established(CountingFeature())
    events = stream.receive_data(b"<bogus xmlns='urn:xmpp:sm:3'/>")
    assert isinstance(events[-1], Closed) and events[-1].error is not None
    assert events[-1].error.condition == "unsupported-stanza-type"
    stream, _ = established(CountingFeature())
    events = stream.receive_data(b"<r xmlns='urn:example:other'/>")
    assert isinstance(events[-1], Closed) and events[-1].error is not None
    assert events[-1].error.condition == "unsupported-stanza-type"


def test_release_parser_between_stanzas_and_continue() -> None:
    stream, _ = established(CountingFeature())
    assert stream.release_parser() and stream.parser.released
    assert stream.hibernate() and stream.parser.hibernating  # the former names still work
    events = stream.receive_data(b"<message to='romeo@example.org'><body>hi</body></message>")
    assert [e.name for e in events if isinstance(e, Element)] == ["message"]
    assert not stream.parser.released


def test_no_release_before_the_stream_is_established() -> None:
    stream = C2SStream(C2SSettings(domains=frozenset({"example.org"})))
    stream.receive_data(HEADER)
    assert not stream.release_parser()


def test_a_clients_stream_error_closes_the_stream_without_an_error_of_ours() -> None:
    stream = C2SStream(C2SSettings(domains=frozenset({"example.org"})))
    stream.receive_data(HEADER)
    events = stream.receive_data(
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    )
    (closed,) = events
    assert isinstance(closed, Closed) and closed.error is None
    assert closed.peer_error is not None and closed.peer_error.condition == "conflict"
    assert closed.final == b"</stream:stream>"


class WaitingFeature(CountingFeature):
    """A nonza that needs the driver (as SM's <enable/> will): stanzas behind it wait."""

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        self.seen.append(el.name)
        stream.wait(self, Phase.ESTABLISHED)
        return []


def test_stanzas_behind_a_waiting_nonza_are_held_in_order() -> None:
    feature = WaitingFeature()
    stream, _ = established(feature)
    events = stream.receive_data(
        b"<message id='1'/><enable xmlns='urn:xmpp:sm:3'/><message id='2'/><presence id='3'/>"
    )
    assert [e.attrs["id"] for e in events if isinstance(e, Element)] == ["1"]
    assert stream.receive_data(b"<message id='4'/>") == []
    resumed = stream.resume()
    assert [e.attrs["id"] for e in resumed if isinstance(e, Element)] == ["2", "3", "4"]
    assert stream.phase is Phase.ESTABLISHED
