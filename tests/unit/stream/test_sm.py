"""XEP-0198 state without sockets: counters, wrapping, the unacked queue, ack requests, nonzas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.jid import JID
from roost.stream import sm
from roost.stream.c2s import C2SSettings, C2SStream, Closed, NeedBind, State
from roost.stream.core import Feature
from roost.stream.csi import ClientState, CsiFeature
from roost.stream.sm import AckPolicy, HandledCountTooHigh, SmFailure, SmFeature, StreamManagement
from roost.xml.element import Element
from roost.xml.ns import SM, STANZA_ERRORS, STREAM, STREAMS_ERRORS
from roost.xml.parser import StreamParser
from roost.xml.serializer import serialize
from tests.unit.stream.test_c2s import HEADER, Peer, negotiate_to_auth, scram_login


def msg(n: int) -> bytes:
    """A stanza as written on a c2s stream (jabber:client in scope)."""
    return f"<message id='{n}'><body>{n}</body></message>".encode()


CLIENT_NS = "jabber:client"


def ids(items: list[Element] | list[bytes]) -> list[str]:
    return [
        item.attrs["id"] if isinstance(item, Element) else item.split(b"'")[1].decode() for item in items
    ]


def test_counters_start_at_zero_and_count_each_stanza() -> None:
    state = StreamManagement()
    assert (state.inbound, state.outbound, state.acked) == (0, 0, 0)
    state.handled()
    state.handled()
    assert state.answer().attrs == {"h": "2"}
    for n in range(3):
        state.sent(msg(n), CLIENT_NS, now=1.0)
    assert state.outbound == 3
    assert ids([s for s, _, _ in state.unacked]) == ["0", "1", "2"]


def test_ack_drops_handled_stanzas_from_the_queue() -> None:
    state = StreamManagement()
    for n in range(5):
        state.sent(msg(n), CLIENT_NS, now=1.0)
    state.acknowledge(2)
    assert ids([s for s, _, _ in state.unacked]) == ["2", "3", "4"]
    state.acknowledge(2)  # the same h again changes nothing (§4: only an increment means progress)
    assert len(state.unacked) == 3
    state.acknowledge(5)
    assert not state.unacked


def test_ack_for_more_than_sent_is_handled_count_too_high() -> None:
    state = StreamManagement()
    for n in range(8):
        state.sent(msg(n), CLIENT_NS, now=1.0)
    with pytest.raises(HandledCountTooHigh) as caught:
        state.acknowledge(10)
    error = caught.value.stream_error().to_element()
    # §6: <undefined-condition/> with <handled-count-too-high h send-count/>
    assert error.ns == STREAM and error.find("undefined-condition", STREAMS_ERRORS) is not None
    app = error.find("handled-count-too-high", SM)
    assert app is not None and app.attrs == {"h": "10", "send-count": "8"}
    assert len(state.unacked) == 8  # nothing dropped on a bad ack


def test_h_wraps_at_two_to_the_32() -> None:
    state = StreamManagement()
    state.inbound = sm.MODULO - 1
    state.handled()
    assert state.inbound == 0  # §4: reset from 2^32-1 to zero, not 2^32
    state.outbound = state.acked = sm.MODULO - 2
    for n in range(4):
        state.sent(msg(n), CLIENT_NS, now=1.0)
    assert state.outbound == 2
    state.acknowledge(sm.MODULO - 1)  # one handled, before the wrap
    assert ids([s for s, _, _ in state.unacked]) == ["1", "2", "3"]
    state.acknowledge(1)  # two more, across the wrap
    assert ids([s for s, _, _ in state.unacked]) == ["3"]
    with pytest.raises(HandledCountTooHigh):
        state.acknowledge(3)
    state.acknowledge(2)
    assert not state.unacked


@given(start=st.integers(0, sm.MODULO - 1), sent=st.integers(0, 40), acks=st.lists(st.integers(0, 40)))
def test_queue_length_is_sent_minus_acked_modulo(start: int, sent: int, acks: list[int]) -> None:
    state = StreamManagement(policy=AckPolicy(every=0, after_seconds=0))
    state.outbound = state.acked = start
    for n in range(sent):
        state.sent(msg(n), CLIENT_NS, now=0.0)
    done = 0
    for a in sorted(acks):
        if a > sent:
            with pytest.raises(HandledCountTooHigh):
                state.acknowledge((start + a) % sm.MODULO)
            continue
        if a < done:
            continue
        state.acknowledge((start + a) % sm.MODULO)
        done = a
        assert len(state.unacked) == (state.outbound - state.acked) % sm.MODULO == sent - a
        assert ids([s for s, _, _ in state.unacked]) == [str(n) for n in range(a, sent)]


def test_server_requests_an_ack_every_n_stanzas_and_not_twice_while_waiting() -> None:
    state = StreamManagement(policy=AckPolicy(every=3, after_seconds=0))
    assert [state.sent(msg(n), CLIENT_NS, now=1.0) for n in range(3)] == [False, False, True]
    state.requested()
    assert state.awaiting_ack
    # More stanzas while the <r/> is unanswered: no second request.
    assert [state.sent(msg(n), CLIENT_NS, now=1.0) for n in range(3, 7)] == [False] * 4
    # The answer covers the first three; four wait, so another request is due at once.
    assert state.acknowledge(3) is True
    state.requested()
    assert state.acknowledge(7) is False


def test_server_requests_an_ack_after_t_seconds() -> None:
    state = StreamManagement(policy=AckPolicy(every=100, after_seconds=10))
    assert not state.request_due(now=0.0)
    state.sent(msg(1), CLIENT_NS, now=100.0)
    state.sent(msg(2), CLIENT_NS, now=105.0)
    assert not state.request_due(now=109.9)
    assert state.request_due(now=110.0)
    state.requested()
    assert not state.request_due(now=500.0)  # waiting for the answer
    state.acknowledge(2)
    assert not state.request_due(now=500.0)  # nothing left unacked


def test_time_threshold_off_when_zero() -> None:
    state = StreamManagement(policy=AckPolicy(every=0, after_seconds=0))
    assert state.sent(msg(1), CLIENT_NS, now=0.0) is False
    assert not state.request_due(now=1e9)


def test_resume_acks_up_to_h_and_returns_the_rest_in_order() -> None:
    state = StreamManagement(sm_id=sm.new_id())
    for n in range(5):
        state.sent(msg(n), CLIENT_NS, now=1.0)
    state.handled()
    again = state.resume(3)
    assert ids(again) == ["3", "4"]
    # Counters carry over (§5): a later ack counts the re-sent stanzas at their old positions.
    assert state.outbound == 5
    state.acknowledge(5)
    assert not state.unacked
    assert state.inbound == 1


def test_resume_with_too_high_h_raises() -> None:
    state = StreamManagement(sm_id=sm.new_id())
    state.sent(msg(1), CLIENT_NS, now=1.0)
    with pytest.raises(HandledCountTooHigh):
        state.resume(2)


def test_take_unacked_empties_the_queue_once() -> None:
    state = StreamManagement()
    state.sent(msg(1), CLIENT_NS, now=7.0)
    state.sent(msg(2), CLIENT_NS, now=8.0)
    state.acknowledge(1)
    taken = state.take_unacked()
    assert [(s.attrs["id"], t) for s, t in taken] == [("2", 8.0)]
    assert state.take_unacked() == []


def test_over_limit() -> None:
    state = StreamManagement(max_unacked=2)
    state.sent(msg(1), CLIENT_NS, now=0.0)
    state.sent(msg(2), CLIENT_NS, now=0.0)
    assert not state.over_limit
    state.sent(msg(3), CLIENT_NS, now=0.0)
    assert state.over_limit


def test_ids_are_random_and_long() -> None:
    made = {sm.new_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(len(i) >= 32 for i in made)


@pytest.mark.parametrize(
    "text,value", [("0", 0), ("42", 42), (" 7 ", 7), ("+3", 3), ("4294967295", 4294967295)]
)
def test_parse_h_accepts_unsigned_ints(text: str, value: int) -> None:
    assert sm.parse_h(text) == value


@pytest.mark.parametrize("text", [None, "", "-1", "4294967296", "1.5", "x", "٣"])
def test_parse_h_refuses_the_rest(text: str | None) -> None:
    with pytest.raises(ValueError):
        sm.parse_h(text)


def test_parse_enable() -> None:
    assert sm.parse_enable(Element("enable", SM)) == sm.EnableRequest(False, None)
    assert sm.parse_enable(Element("enable", SM, {"resume": "1", "max": "60"})) == sm.EnableRequest(True, 60)
    no_max = sm.parse_enable(Element("enable", SM, {"resume": "true", "max": "x"}))
    assert no_max == sm.EnableRequest(True, None)
    assert sm.parse_enable(Element("enable", SM, {"resume": "yes"})).resume is False


def test_parse_resume() -> None:
    assert sm.parse_resume(Element("resume", SM, {"previd": "abc", "h": "5"})) == sm.ResumeRequest("abc", 5)
    for attrs in ({"h": "5"}, {"previd": "abc"}, {"previd": "abc", "h": "-5"}):
        with pytest.raises(SmFailure) as caught:
            sm.parse_resume(Element("resume", SM, attrs))
        assert caught.value.condition == "bad-request"


def roundtrip(el: Element) -> Element:
    """Serialize and parse back, as a peer would read it."""
    parser = StreamParser()
    head = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    items = parser.feed((head + serialize(el, "jabber:client")).encode())
    parsed = items[-1]
    assert isinstance(parsed, Element)
    return parsed


def test_nonzas_on_the_wire() -> None:
    assert roundtrip(sm.feature()) == Element("sm", SM)
    assert roundtrip(sm.enabled()).attrs == {}
    assert roundtrip(sm.enabled("id1", 300, "[::1]:5222")).attrs == {
        "id": "id1",
        "resume": "true",
        "max": "300",
        "location": "[::1]:5222",
    }
    assert roundtrip(sm.resumed("id1", 4)).attrs == {"previd": "id1", "h": "4"}
    failed = roundtrip(SmFailure("item-not-found", "unknown session", h=9).to_element())
    assert failed.name == "failed" and failed.ns == SM and failed.attrs == {"h": "9"}
    assert failed.find("item-not-found", STANZA_ERRORS) is not None
    assert failed.find_text("text", STANZA_ERRORS) == "unknown session"
    plain = roundtrip(sm.failed())
    assert plain.attrs == {} and plain.find("unexpected-request", STANZA_ERRORS) is not None


def test_failure_needs_a_stanza_condition() -> None:
    with pytest.raises(ValueError):
        SmFailure("no-such-condition")


# -- the stream feature, driven through a c2s stream ----------------------------------------------------
def _authenticated(*features: Feature) -> tuple[C2SStream, Peer]:
    stream = C2SStream(C2SSettings(domains=frozenset({"example.org"}), features=lambda: features))
    peer = Peer()
    negotiate_to_auth(stream, peer)
    scram_login(stream, peer)
    stream.receive_data(HEADER)
    peer.read(stream)
    return stream, peer


def _bind(stream: C2SStream, peer: Peer) -> None:
    bind = b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    assert stream.receive_data(bind) == [NeedBind(None)]
    stream.bound(JID("juliet", "example.org", "r"))
    peer.read(stream)


def test_enable_before_bind_fails_and_the_client_may_still_bind() -> None:
    stream, peer = _authenticated(SmFeature())
    assert stream.receive_data(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>") == []
    answer = peer.read(stream)[-1]
    assert answer.name == "failed" and answer.find("unexpected-request", STANZA_ERRORS) is not None  # §3
    _bind(stream, peer)
    assert stream.state is State.ESTABLISHED


def test_nonzas_once_established_become_events_in_order_with_stanzas() -> None:
    stream, peer = _authenticated(SmFeature())
    _bind(stream, peer)
    events = stream.receive_data(
        b"<enable xmlns='urn:xmpp:sm:3' resume='1' max='60'/><message to='romeo@example.org'/>"
        b"<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='3'/>"
    )
    assert events[0] == sm.EnableRequested(sm.EnableRequest(True, 60))
    assert isinstance(events[1], Element) and events[1].name == "message"
    assert [e.element.name for e in events[2:] if isinstance(e, sm.AckNonza)] == ["r", "a"]
    # A <resume/> on a bound stream is refused without ending it.
    assert stream.receive_data(b"<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>") == []
    assert peer.read(stream)[-1].name == "failed"
    assert stream.state is State.ESTABLISHED


def test_with_the_state_attached_acks_are_applied_in_the_stream() -> None:
    feature = SmFeature()
    stream, peer = _authenticated(feature)
    _bind(stream, peer)
    state = StreamManagement(policy=AckPolicy(every=2, after_seconds=0))
    feature.state = state
    for n in range(3):
        state.sent(b"<message id='m%d'/>" % n, "jabber:client", 0.0)
    state.requested()  # an <r/> went out after the second stanza; the third is not asked about yet
    # <a/> is applied where it is parsed; an <r/> stays an event, in order with the stanzas.
    events = stream.receive_data(b"<a xmlns='urn:xmpp:sm:3' h='1'/><message to='romeo@example.org'/>")
    assert len(events) == 1 and isinstance(events[0], Element) and events[0].name == "message"
    assert state.acked == 1 and len(state.unacked) == 2 and not state.awaiting_ack
    # Two unrequested stanzas are out when the next ack comes: a new <r/> follows at once.
    state.sent(b"<message id='m3'/>", "jabber:client", 0.0)
    state.requested()
    state.sent(b"<message id='m4'/>", "jabber:client", 0.0)
    state.sent(b"<message id='m5'/>", "jabber:client", 0.0)
    assert stream.receive_data(b"<a xmlns='urn:xmpp:sm:3' h='2'/>") == []
    written = peer.read(stream)
    assert [(e.name, e.ns) for e in written] == [("r", SM)]
    assert state.awaiting_ack
    events = stream.receive_data(b"<r xmlns='urn:xmpp:sm:3'/>")
    assert [e.element.name for e in events if isinstance(e, sm.AckNonza)] == ["r"]


@pytest.mark.parametrize(
    "attrs,condition",
    [("h='x'", "invalid-xml"), ("", "invalid-xml"), ("h='9'", "undefined-condition")],
)
def test_a_bad_ack_applied_in_the_stream_ends_it(attrs: str, condition: str) -> None:
    feature = SmFeature()
    stream, peer = _authenticated(feature)
    _bind(stream, peer)
    feature.state = state = StreamManagement()
    state.sent(b"<message/>", "jabber:client", 0.0)
    events = stream.receive_data(f"<a xmlns='urn:xmpp:sm:3' {attrs}/>".encode())
    closed = [e for e in events if isinstance(e, Closed)]
    assert closed and closed[0].error is not None and closed[0].error.condition == condition
    assert stream.state is State.CLOSED


def test_resume_holds_input_until_the_driver_answers() -> None:
    feature = SmFeature()
    stream, peer = _authenticated(feature)
    events = stream.receive_data(
        b"<resume xmlns='urn:xmpp:sm:3' previd='abc' h='2'/><message to='romeo@example.org' id='m1'/>"
    )
    assert events == [sm.ResumeRequested(sm.ResumeRequest("abc", 2), feature)]
    again = [Element("message", "jabber:client", {"id": "lost"})]
    after = feature.resumed(stream, JID("juliet", "example.org", "r"), "abc", 7, again)
    assert [e.attrs.get("id") for e in after if isinstance(e, Element)] == ["m1"]  # held input, then
    out = peer.read(stream)
    assert [e.name for e in out] == ["resumed", "message"]
    assert out[0].attrs == {"previd": "abc", "h": "7"} and out[1].attrs["id"] == "lost"
    assert stream.state is State.ESTABLISHED


def test_failed_resume_lets_the_client_bind() -> None:
    feature = SmFeature()
    stream, peer = _authenticated(feature)
    stream.receive_data(b"<resume xmlns='urn:xmpp:sm:3' previd='abc' h='2'/>")
    feature.resume_failed(stream, SmFailure("item-not-found", h=4))
    answer = peer.read(stream)[-1]
    assert answer.name == "failed" and answer.attrs == {"h": "4"}
    _bind(stream, peer)
    assert stream.state is State.ESTABLISHED


def test_resume_with_bad_attributes_is_answered_failed_bad_request() -> None:
    stream, peer = _authenticated(SmFeature())
    assert stream.receive_data(b"<resume xmlns='urn:xmpp:sm:3' h='2'/>") == []
    answer = peer.read(stream)[-1]
    assert answer.name == "failed" and answer.find("bad-request", STANZA_ERRORS) is not None


def test_csi_nonzas() -> None:
    stream, peer = _authenticated(CsiFeature())
    _bind(stream, peer)
    events = stream.receive_data(b"<inactive xmlns='urn:xmpp:csi:0'/><active xmlns='urn:xmpp:csi:0'/>")
    assert events == [ClientState(False), ClientState(True)]
    closed = stream.receive_data(b"<bogus xmlns='urn:xmpp:csi:0'/>")
    assert isinstance(closed[-1], Closed) and closed[-1].error is not None


def test_unacked_stanzas_come_back_as_the_elements_written() -> None:
    """The queue keeps bytes as written on the stream; resumption and re-routing get the elements back,
    in the content namespace, whether the stream declared it (TCP) or each stanza did (WebSocket)."""
    original = Element("message", CLIENT_NS, {"id": "m1", "to": "juliet@example.org/balcony"})
    original.add("body", text="a < b & c")
    original.add("x", "urn:example:x").add("y", attrs={"k": "v"})
    state = StreamManagement(sm_id=sm.new_id())
    state.sent(serialize(original, CLIENT_NS).encode(), CLIENT_NS, now=1.0)  # TCP: xmlns not repeated
    state.sent(serialize(original, None).encode(), None, now=2.0)  # WebSocket: xmlns on the stanza
    assert state.resume(0) == [original, original]
    assert state.take_unacked() == [(original, 1.0), (original, 2.0)]
