"""The BOSH session engine (XEP-0124/0206) without HTTP: windows, holding, acks, pauses, ends."""

from __future__ import annotations

import hashlib

import pytest

from roost.stream.bosh import (
    HTTPBIND,
    MAX_RID,
    XBOSH,
    BoshBody,
    BoshError,
    BoshSession,
    BoshSettings,
    Payloads,
    Response,
    Restart,
    Terminate,
    parse_body,
    terminal_response,
)
from roost.xml.element import Element
from roost.xml.ns import CLIENT
from roost.xml.parser import StreamParser

SETTINGS = BoshSettings(max_wait=60, max_hold=1, inactivity=30, max_pause=120)
RID = 1000


def body(rid: int, *payloads: Element, **attrs: str) -> BoshBody:
    a = {"rid": str(rid), "sid": "s1", **{k.replace("__", ":"): v for k, v in attrs.items()}}
    return BoshBody(a, list(payloads))


def create(now: float = 0.0, **attrs: str) -> BoshSession:
    a = {"rid": str(RID), "to": "localhost", "ver": "1.6", "wait": "60", "hold": "1", **attrs}
    return BoshSession.create("s1", BoshBody(a, []), SETTINGS, "localhost", now)


def parsed(response: Response) -> tuple[dict[str, str], list[Element]]:
    parser = StreamParser(root=(HTTPBIND, "body"))
    events = parser.feed(response.body)
    return dict(events[0].header.attrs), [e for e in events[1:-1] if isinstance(e, Element)]  # type: ignore[union-attr]


def started(now: float = 0.0, **attrs: str) -> BoshSession:
    """A session whose creation response went out with the features."""
    s = create(now, **attrs)
    s.stream_id = "abc"
    s.push(b"<stream:features/>")
    s.flush(now)
    [r] = s.take()
    assert r.rid == RID
    return s


def msg(text: str) -> Element:
    m = Element("message", CLIENT, {"to": "bob@localhost"})
    m.add("body", text=text)
    return m


# -- parsing ----------------------------------------------------------------------------------------------


def test_parse_body_reads_attributes_and_payloads() -> None:
    b = parse_body(
        b"<body rid='5' sid='x' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
        b" xmpp:restart='true' xml:lang='de'>"
        b"<message xmlns='jabber:client' to='a@b'><body>hi</body></message>"
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AA==</auth></body>",
        10000,
    )
    assert (b.rid, b.sid, b.restart, b.attrs["xml:lang"]) == (5, "x", True, "de")
    assert [(p.name, p.ns) for p in b.payloads] == [
        ("message", CLIENT),
        ("auth", "urn:ietf:params:xml:ns:xmpp-sasl"),
    ]


def test_payloads_without_namespace_are_jabber_client() -> None:
    b = parse_body(
        b"<body rid='5' xmlns='http://jabber.org/protocol/httpbind'><iq type='get'><x/></iq></body>", 1000
    )
    assert b.payloads[0].ns == CLIENT and b.payloads[0].children[0].ns == CLIENT  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'>",  # incomplete
        b"<body rid='1' xmlns='jabber:client'/>",  # wrong namespace
        b"<bodyx xmlns='http://jabber.org/protocol/httpbind'/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'>text</body>",  # character data in the wrapper
        b"<!DOCTYPE x><body xmlns='http://jabber.org/protocol/httpbind'/>",  # restricted XML
        b"<body xmlns='http://jabber.org/protocol/httpbind'><iq>" + b"x" * 2000 + b"</iq></body>",  # too big
    ],
)
def test_malformed_bodies_are_bad_requests(data: bytes) -> None:
    with pytest.raises(BoshError) as e:
        parse_body(data, 1000)
    assert e.value.condition == "bad-request"


@pytest.mark.parametrize("rid", ["", "-1", "0", "abc", str(MAX_RID + 1), "1" * 20])
def test_bad_rids_are_bad_requests(rid: str) -> None:
    with pytest.raises(BoshError):
        _ = BoshBody({"rid": rid}, []).rid


# -- creation ---------------------------------------------------------------------------------------------


def test_creation_response_carries_the_session_parameters_and_features() -> None:
    s = create(wait="300", hold="5", content="text/html")
    assert (s.wait, s.hold, s.requests) == (60, 1, 2)  # clamped to the server's limits; requests = hold+1
    assert s.take() == []  # held until the stream has something to say
    s.stream_id = "stream-1"
    s.push(b'<stream:features xmlns:stream="http://etherx.jabber.org/streams"><x/></stream:features>')
    s.flush(0)
    [r] = s.take()
    attrs, children = parsed(r)
    assert r.rid == RID and r.status == 200 and r.content_type == "text/html"
    assert (
        attrs["sid"] == "s1" and attrs["wait"] == "60" and attrs["hold"] == "1" and attrs["requests"] == "2"
    )
    assert attrs["inactivity"] == "30" and attrs["maxpause"] == "120" and attrs["ver"] == "1.11"
    assert attrs["ack"] == str(RID) and attrs["authid"] == "stream-1" and attrs["from"] == "localhost"
    assert attrs["{" + XBOSH + "}restartlogic"] == "true" and attrs["{" + XBOSH + "}version"] == "1.0"
    assert [c.name for c in children] == ["features"]


def test_creation_with_a_sid_is_refused() -> None:
    with pytest.raises(BoshError):
        BoshSession.create("s", body(RID), SETTINGS, "localhost", 0)


# -- holding and answering -------------------------------------------------------------------------------


def test_a_held_request_is_answered_when_data_arrives() -> None:
    s = started()
    assert s.receive(body(RID + 1), 1) == []
    assert s.take() == []
    s.push(b"<message/>")
    s.push(b"<presence/>")
    s.flush(1)
    [r] = s.take()
    assert r.rid == RID + 1 and r.body.endswith(b"<message/><presence/></body>")
    assert b"ack=" not in r.body  # §9.1: no ack when it would equal the rid answered


def test_payloads_are_forwarded_and_a_new_request_frees_the_held_one() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    incoming = s.receive(body(RID + 2, msg("hi")), 2)
    assert isinstance(incoming[0], Payloads) and incoming[0].elements[0].find_text("body") == "hi"
    [r] = s.take()
    assert r.rid == RID + 1 and parsed(r)[0].get("ack") == str(RID + 2)


def test_output_waiting_with_no_request_goes_out_on_the_next_one() -> None:
    s = started()
    s.push(b"<message/>")
    s.flush(1)
    assert s.take() == []
    s.receive(body(RID + 1), 2)
    [r] = s.take()
    assert r.rid == RID + 1 and b"<message/>" in r.body


def test_wait_expiry_answers_with_an_empty_body() -> None:
    s = started()
    s.receive(body(RID + 1), 10)
    assert s.next_deadline() == 70
    s.tick(69)
    assert s.take() == []
    s.tick(70)
    [r] = s.take()
    assert r.rid == RID + 1 and parsed(r)[1] == []


def test_requests_are_processed_in_rid_order_whatever_their_arrival() -> None:
    s = BoshSession.create(
        "s1",
        BoshBody({"rid": str(RID), "to": "x", "ver": "1.6", "hold": "2"}, []),
        BoshSettings(max_hold=2),
        "x",
        0,
    )
    assert s.requests == 3
    assert s.receive(body(RID + 2, msg("second")), 1) == []  # waits for RID+1
    incoming = s.receive(body(RID + 1, msg("first")), 1)
    texts = [p.elements[0].find_text("body") for p in incoming if isinstance(p, Payloads)]
    assert texts == ["first", "second"]
    answered = [r.rid for r in s.take()]
    assert answered == sorted(answered)  # §14.1: answered in rid order too


def test_rid_beyond_the_window_ends_the_session_with_item_not_found() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.receive(body(RID + 4), 1)
    responses = s.take()
    assert [r.rid for r in responses] == [RID + 1, RID + 4]
    attrs, _ = parsed(responses[-1])
    assert (attrs["type"], attrs["condition"]) == ("terminate", "item-not-found")
    assert s.closed


def test_legacy_client_gets_http_404_instead() -> None:
    s = create(ver=None)  # type: ignore[arg-type]
    s = BoshSession.create("s1", BoshBody({"rid": str(RID), "to": "x"}, []), SETTINGS, "x", 0)
    s.receive(body(RID + 7), 1)
    assert s.take()[-1].status == 404


def test_resent_request_gets_the_buffered_response() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.push(b"<message/>")
    s.flush(1)
    [first] = s.take()
    s.receive(body(RID + 1), 2)  # the response got lost: the client sends the same request again
    [again] = s.take()
    assert again.body == first.body


def test_resending_a_held_request_answers_the_old_copy_with_a_recoverable_error() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.receive(body(RID + 1), 2)
    [r] = s.take()
    assert r.rid == RID + 1 and parsed(r)[0]["type"] == "error"
    assert not s.closed
    s.push(b"<message/>")
    s.flush(3)
    [later] = s.take()
    assert later.rid == RID + 1 and b"<message/>" in later.body  # the new copy is answered normally


def test_forgotten_rid_is_item_not_found() -> None:
    s = started()
    for i in range(1, 6):
        s.receive(body(RID + i), i)
        s.tick(i + 100)
        s.take()
    s.receive(body(RID + 1), 200)  # only the last 'requests' responses are kept
    assert parsed(s.take()[-1])[0]["condition"] == "item-not-found"


def test_client_acks_release_buffered_responses_and_late_ones_are_reported() -> None:
    s = started(ack="1")
    assert s.client_acks
    s.receive(body(RID + 1), 1)
    s.tick(61)
    s.take()  # RID+1 answered at t=61 ... and lost on the way
    s.receive(body(RID + 2, ack=str(RID)), 65)
    [r] = s.take()  # answered at once, telling the client what it is missing
    attrs, _ = parsed(r)
    assert r.rid == RID + 2 and attrs["report"] == str(RID + 1) and attrs["time"] == "4000"
    s.receive(body(RID + 3, ack=str(RID + 2)), 66)
    s.receive(body(RID + 1), 67)  # acknowledged, so forgotten
    assert parsed(s.take()[-1])[0]["condition"] == "item-not-found"


def test_too_many_simultaneous_requests_is_a_policy_violation() -> None:
    s = BoshSession.create(
        "s1",
        BoshBody({"rid": str(RID), "to": "x", "ver": "1.6", "hold": "2"}, []),
        BoshSettings(max_hold=2),
        "x",
        0,
    )
    s.receive(body(RID + 2), 1)  # out of order: waits
    s.receive(body(RID + 3), 1)  # also waits: with the creation request, 3 unanswered = 'requests'
    s.receive(body(RID + 1), 1)
    conditions = [parsed(r)[0].get("condition") for r in s.take()]
    assert conditions[-1] == "policy-violation" and s.closed


# -- restart, pause, terminate, inactivity ----------------------------------------------------------------


def test_restart_request_ignores_its_payloads() -> None:
    s = started()
    [event] = s.receive(body(RID + 1, msg("ignored"), **{"{" + XBOSH + "}restart": "true"}), 1)
    assert isinstance(event, Restart)


def test_pause_answers_everything_and_stretches_inactivity_until_the_next_request() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.push(b"<message/>")
    s.receive(body(RID + 2, pause="100"), 2)
    responses = s.take()
    assert [r.rid for r in responses] == [RID + 1, RID + 2]
    assert b"<message/>" in responses[0].body and parsed(responses[1])[1] == []  # no payloads with the pause
    s.tick(2 + 99)
    assert not s.closed
    s.tick(2 + 101)
    assert s.closed and s.expired


def test_pause_is_capped_at_maxpause() -> None:
    s = started()
    s.receive(body(RID + 1, pause="100000"), 1)
    s.take()
    s.tick(1 + 121)
    assert s.expired


def test_inactivity_ends_the_session_silently() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.tick(61)  # wait over: answered; now nothing is held
    s.take()
    assert s.next_deadline() == 61 + 30
    s.tick(90)
    assert not s.closed
    s.tick(92)
    assert s.closed and s.expired and s.take() == []
    s.receive(body(RID + 2), 93)
    assert parsed(s.take()[0])[0]["condition"] == "item-not-found"


def test_client_terminate_forwards_payloads_then_ends() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    events = s.receive(
        body(RID + 2, Element("presence", CLIENT, {"type": "unavailable"}), type="terminate"), 2
    )
    assert isinstance(events[0], Payloads) and isinstance(events[1], Terminate)
    responses = s.take()
    assert [r.rid for r in responses] == [RID + 1, RID + 2]
    assert parsed(responses[0])[0]["type"] == "terminate" and "type" not in parsed(responses[1])[0]
    assert s.closed


def test_server_close_with_a_held_request_sends_the_stream_error() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.push(b"<message/>")
    s.close("remote-stream-error", extra=b"<stream:error><conflict/></stream:error>")
    [r] = s.take()
    attrs, children = parsed(r)
    assert (attrs["type"], attrs["condition"]) == ("terminate", "remote-stream-error")
    assert [c.name for c in children] == ["message", "error"]


def test_server_close_with_nothing_held_waits_for_the_next_request() -> None:
    s = started()
    s.close("system-shutdown")
    assert s.take() == [] and s.awaiting_final
    s.receive(body(RID + 1), 1)
    [r] = s.take()
    assert parsed(r)[0]["condition"] == "system-shutdown" and not s.awaiting_final


def test_close_before_the_creation_response_still_carries_the_sid() -> None:
    s = create()
    s.close("remote-stream-error", extra=b"<stream:error><host-unknown/></stream:error>")
    attrs, _ = parsed(s.take()[0])
    assert attrs["sid"] == "s1" and attrs["type"] == "terminate"


def test_polling_session_answers_at_once() -> None:
    s = BoshSession.create(
        "s1", BoshBody({"rid": str(RID), "to": "x", "ver": "1.6", "hold": "0"}, []), SETTINGS, "x", 0
    )
    assert (s.hold, s.requests) == (0, 1)
    assert [r.rid for r in s.take()] == [RID]
    s.receive(body(RID + 1), 1)
    assert [r.rid for r in s.take()] == [RID + 1]


# -- key sequencing (§15) ---------------------------------------------------------------------------------


def _keys(n: int) -> list[str]:
    keys = ["seed"]
    for _ in range(n):
        keys.append(hashlib.sha1(keys[-1].encode()).hexdigest())
    return keys  # keys[n] is K(n), sent first as newkey


def test_key_sequence_is_checked() -> None:
    k = _keys(4)
    s = started(newkey=k[4])
    s.receive(body(RID + 1, key=k[3]), 1)
    s.receive(body(RID + 2, key=k[2]), 2)
    assert not s.closed
    s.receive(body(RID + 3, key=k[2]), 3)  # reused key
    assert s.closed and parsed(s.take()[-1])[0]["condition"] == "item-not-found"


def test_terminal_response_for_unknown_sessions() -> None:
    attrs, _ = parsed(terminal_response(5, "item-not-found"))
    assert (attrs["type"], attrs["condition"]) == ("terminate", "item-not-found")
    assert terminal_response(5, "item-not-found", legacy=True).status == 404


def test_an_unclaimed_terminate_is_dropped_after_inactivity() -> None:
    s = started()
    s.close(None, now=0)
    assert s.awaiting_final and s.next_deadline() == 30
    s.tick(31)
    assert not s.awaiting_final and s.next_deadline() is None


def test_a_malformed_attribute_ends_the_session_on_that_request() -> None:
    s = started()
    s.receive(body(RID + 1), 1)
    s.receive(body(RID + 2, ack="not-a-number"), 2)
    responses = s.take()
    assert [r.rid for r in responses] == [RID + 1, RID + 2]
    assert parsed(responses[-1])[0]["condition"] == "bad-request" and s.closed
