"""BOSH sessions (XEP-0124, profiled for XMPP by XEP-0206) as a sans-IO state machine.

The HTTP side owns sockets, timers and the XMPP stream; this engine owns the BOSH rules between them:
the request-id window and in-order forwarding (§14.1), which requests are held and for how long
('hold' and 'wait', §7.1, §8), acknowledgements both ways (§9), the buffer of responses a client may
ask again (§14.3), inactivity and pauses (§10), overactivity (§11), key sequencing (§15), termination
(§13) and the terminal binding conditions (§17).

The driver feeds it parsed request bodies (:meth:`BoshSession.receive`), bytes for the client
(:meth:`BoshSession.push`, then :meth:`BoshSession.flush` once per event-loop turn) and the clock
(:meth:`BoshSession.tick`), forwards the :class:`Incoming` items it returns to the XMPP stream, and
answers each held HTTP request with the :class:`Response` for its ``rid`` (:meth:`BoshSession.take`).
Several HTTP requests may carry the same ``rid`` (a client resending); their responses come out in
the order the requests arrived.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from roost.xml.element import Element
from roost.xml.ns import CLIENT, STREAM
from roost.xml.parser import StreamEnd, StreamOpen, StreamParser, XmlStreamError
from roost.xml.serializer import escape_attr

HTTPBIND = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"
#: Request ids stay below 2^53 (XEP-0124 §14.1) so that JavaScript numbers hold them exactly.
MAX_RID = 2**53 - 1
#: The BOSH version we speak (XEP-0124 1.11).
VERSION = (1, 11)
DEFAULT_CONTENT_TYPE = "text/xml; charset=utf-8"

#: Terminal conditions (§17.2) that a legacy client (no 'ver') gets as HTTP status codes (§17.1).
_LEGACY_STATUS = {"bad-request": 400, "policy-violation": 403, "item-not-found": 404}


class BoshError(Exception):
    """A request that ends (or never starts) its session with a terminal binding condition (§17.2)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class BoshBody:
    """One request's ``<body/>`` wrapper: its attributes and its payloads (stanzas, SASL elements)."""

    attrs: dict[str, str]
    payloads: list[Element]

    @property
    def rid(self) -> int:
        return _int(self.attrs.get("rid"), "rid", 1, MAX_RID)

    @property
    def sid(self) -> str | None:
        return self.attrs.get("sid")

    @property
    def restart(self) -> bool:
        return _bool(self.attrs.get("{" + XBOSH + "}restart"))

    @property
    def terminate(self) -> bool:
        return self.attrs.get("type") == "terminate"

    def int_attr(self, name: str, low: int = 0, high: int = MAX_RID) -> int | None:
        value = self.attrs.get(name)
        return None if value is None else _int(value, name, low, high)


def _int(value: str | None, name: str, low: int, high: int) -> int:
    if value is None or not value.isdigit() or len(value) > 16 or not low <= int(value) <= high:
        raise BoshError("bad-request", f"'{name}' must be a whole number from {low} to {high}")
    return int(value)


def _bool(value: str | None) -> bool:
    return value in ("true", "1")


def _to_client_ns(el: Element) -> None:
    """Payloads written without a namespace inherit the wrapper's; many clients count on that meaning
    jabber:client (XEP-0206 §2, note), so such elements are moved there."""
    if el.ns == HTTPBIND:
        el.ns = CLIENT
    for child in el.children:
        if isinstance(child, Element):
            _to_client_ns(child)


def parse_body(data: bytes, max_payload_bytes: int) -> BoshBody:
    """Parse one HTTP request body with the hardened stream parser; BoshError("bad-request") if it
    is not a single, complete ``<body/>`` of the httpbind namespace (§4)."""
    parser = StreamParser(max_payload_bytes, root=(HTTPBIND, "body"))
    try:
        events = parser.feed(data)
    except XmlStreamError as e:
        raise BoshError("bad-request", e.text or e.condition) from None
    if not events or not isinstance(events[0], StreamOpen) or not isinstance(events[-1], StreamEnd):
        raise BoshError("bad-request", "the request is not one complete <body/> element")
    payloads: list[Element] = []
    for item in events[1:-1]:
        if not isinstance(item, Element):
            raise BoshError("bad-request", "one <body/> element per request")
        _to_client_ns(item)
        payloads.append(item)
    return BoshBody(dict(events[0].header.attrs), payloads)


@dataclass(frozen=True, slots=True)
class BoshSettings:
    """The server's limits (``[http] bosh_*``)."""

    max_wait: int = 60
    max_hold: int = 1
    inactivity: int = 60
    max_pause: int = 300


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to one HTTP request with ``rid``: the whole ``<body/>`` document and its status."""

    rid: int
    body: bytes
    status: int = 200
    content_type: str = DEFAULT_CONTENT_TYPE


@dataclass(frozen=True, slots=True)
class Payloads:
    """Elements for the XMPP stream, in request order."""

    elements: list[Element]


@dataclass(frozen=True, slots=True)
class Restart:
    """The client restarts the stream (XEP-0206 §5): open a new one, its features go back."""

    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class Terminate:
    """The client ended the session (§13): close the XMPP stream as if it had sent its closing tag."""


Incoming = Payloads | Restart | Terminate


def terminal_response(rid: int, condition: str, *, legacy: bool = False, extra: bytes = b"") -> Response:
    """A terminal binding error (§17.2) for a request that has no (more) session, e.g. an unknown sid.

    ``legacy``: the client sent no 'ver' (a pre-1.6 client), so the deprecated HTTP code is used (§17.1).
    """
    status = _LEGACY_STATUS.get(condition) if legacy else None
    if status is not None:
        return Response(rid, b"", status, "text/plain")
    return Response(rid, _wrap({"type": "terminate", "condition": condition}, extra, streams=bool(extra)))


def _wrap(attrs: dict[str, str], content: bytes, *, streams: bool = False, xbosh: bool = False) -> bytes:
    parts = [f'<body xmlns="{HTTPBIND}"']
    if streams:
        parts.append(f' xmlns:stream="{STREAM}"')
    if xbosh:
        parts.append(f' xmlns:xmpp="{XBOSH}"')
    for key, value in attrs.items():
        parts.append(f' {key}="{escape_attr(value)}"')
    if not content:
        parts.append("/>")
        return "".join(parts).encode()
    parts.append(">")
    return "".join(parts).encode() + content + b"</body>"


@dataclass(slots=True)
class _Held:
    rid: int
    deadline: float


@dataclass(slots=True)
class _Waiting:
    """A request that arrived before an earlier rid (§14.1): processed once the gap is filled."""

    body: BoshBody
    arrived: float


@dataclass(slots=True)
class BoshSession:
    """One BOSH session, from its creation request on."""

    sid: str
    settings: BoshSettings
    #: Agreed in the creation request/response (§7.1).
    wait: int = 0
    hold: int = 1
    requests: int = 2
    inactivity: int = 60
    maxpause: int = 0
    domain: str = ""
    lang: str = "en"
    content_type: str = DEFAULT_CONTENT_TYPE
    #: The client sent no 'ver': a legacy client, which gets HTTP error codes (§17.1).
    legacy: bool = False
    #: The client acknowledges responses with 'ack' (§9.2).
    client_acks: bool = False
    #: The XMPP stream id, reported as 'authid' (XEP-0206 §4); set by the driver once the stream opened.
    stream_id: str = ""
    #: The session is over (terminated either way, or timed out): drop it once its responses are out.
    closed: bool = False
    #: It ended because the client stopped making requests (§10).
    expired: bool = False

    _rid: int = 0  # highest rid received with every lower one: the last processed in order
    _first_rid: int = 0
    _creation_pending: bool = True
    _held: deque[_Held] = field(default_factory=deque)
    _waiting: dict[int, _Waiting] = field(default_factory=dict)
    _out: list[bytes] = field(default_factory=list)
    _responses: list[Response] = field(default_factory=list)
    #: Recent responses by rid, for a client that asks again (§14.3); not pause answers nor errors.
    _sent: OrderedDict[int, tuple[bytes, float]] = field(default_factory=OrderedDict)
    _last_responded: int = 0
    _idle_since: float = 0.0
    _current_inactivity: int = 60
    _key: str | None = None
    _final: tuple[dict[str, str], bytes] | None = None

    # -- creation ------------------------------------------------------------------------------------
    @classmethod
    def create(cls, sid: str, body: BoshBody, settings: BoshSettings, domain: str, now: float) -> BoshSession:
        """A session for a creation request (§7.1; ``domain`` is its checked 'to'). The request is held
        until the stream's features are pushed and flushed: they travel in the creation response."""
        if body.sid is not None:
            raise BoshError("bad-request", "a session creation request has no 'sid'")
        rid = body.rid
        wait = body.int_attr("wait", 0, 86400)
        hold = body.int_attr("hold", 0, 1000)
        ver = body.attrs.get("ver")
        content = body.attrs.get("content")
        hold = settings.max_hold if hold is None else min(hold, settings.max_hold)
        wait = settings.max_wait if wait is None else min(wait, settings.max_wait)
        session = cls(
            sid=sid,
            settings=settings,
            wait=wait,
            hold=hold,
            requests=hold + 1,  # §7.1: RECOMMENDED one more than 'hold'
            inactivity=settings.inactivity,
            maxpause=settings.max_pause,
            domain=domain,
            lang=body.attrs.get("xml:lang") or "en",
            content_type=content if content and _header_safe(content) else DEFAULT_CONTENT_TYPE,
            legacy=ver is None,
            client_acks=body.attrs.get("ack") == "1",
        )
        session._rid = session._first_rid = rid
        session._current_inactivity = settings.inactivity
        session._idle_since = now
        session._key = body.attrs.get("newkey")
        session._held.append(_Held(rid, now + wait))
        if hold == 0 or wait == 0:
            session._respond_oldest(now)  # a polling client (§12): not even the creation response waits
        return session

    def _creation_attrs(self) -> dict[str, str]:
        # §7.1 and XEP-0206 §4. We use acknowledgements, so 'ack' is set here and on every later
        # response whose rid is not the highest received (§9.1).
        attrs = {
            "sid": self.sid,
            "wait": str(self.wait),
            "requests": str(self.requests),
            "hold": str(self.hold),
            "inactivity": str(self.inactivity),
            "ver": f"{VERSION[0]}.{VERSION[1]}",
            "from": self.domain,
            "ack": str(self._first_rid),
            "xml:lang": self.lang,
            "xmpp:version": "1.0",
            "xmpp:restartlogic": "true",
        }
        if self.maxpause:
            attrs["maxpause"] = str(self.maxpause)
        if self.stream_id:
            attrs["authid"] = self.stream_id
        return attrs

    # -- requests ------------------------------------------------------------------------------------
    def receive(self, body: BoshBody, now: float) -> list[Incoming]:
        """A request for this session arrived (its 'sid' matched). What to forward to the stream,
        in order; the answers to send come from :meth:`take`."""
        rid = body.rid  # BoshError if malformed: the caller ends the session
        if self._final is not None:
            # The session ended while no request was held: this request carries the news (§13).
            self._answer_final(rid)
            return []
        if self.closed:
            self._responses.append(terminal_response(rid, "item-not-found", legacy=self.legacy))
            return []
        if rid <= self._rid:
            self._repeat(rid)
            return []
        if rid > self._rid + self.requests:
            # §14.1: beyond the window (the same error as a forgotten rid, to tell an attacker nothing).
            self._fail("item-not-found", rid)
            return []
        if rid in self._waiting:
            return []  # the same out-of-order request again; the first copy will be answered
        outstanding = len(self._held) + len(self._waiting)
        if outstanding >= self.requests and body.attrs.get("pause") is None and not body.terminate:
            # §11: more simultaneous requests than 'requests', none of them answered yet.
            self._fail("policy-violation", rid)
            return []
        self._waiting[rid] = _Waiting(body, now)
        incoming: list[Incoming] = []
        while self._rid + 1 in self._waiting and not self.closed:
            waiting = self._waiting.pop(self._rid + 1)
            self._rid += 1
            try:
                incoming.extend(self._process(waiting.body, now))
            except BoshError as e:  # a malformed attribute: a binding syntax error (§17.2)
                self._fail(e.condition, self._rid)
        return incoming

    def _repeat(self, rid: int) -> None:
        """A rid seen before (§14.3): the client lost our answer, or gave up waiting for it."""
        for held in self._held:
            if held.rid == rid:
                # Still held: that earlier request gets a recoverable error; this one takes its place.
                self._responses.append(Response(rid, _wrap({"type": "error"}, b""), 200, self.content_type))
                return
        sent = self._sent.get(rid)
        if sent is not None:
            self._responses.append(Response(rid, sent[0], 200, self.content_type))
            return
        self._fail("item-not-found", rid)

    def _process(self, body: BoshBody, now: float) -> list[Incoming]:
        rid = self._rid
        ack = body.int_attr("ack")  # parsed before anything changes: BoshError leaves no trace
        pause = body.int_attr("pause")
        if not self._check_key(body):
            self._fail("item-not-found", rid)  # §15.4
            return []
        report: tuple[int, float] | None = None
        if ack is not None:
            for old in [r for r in self._sent if r <= ack]:
                del self._sent[old]
            missing = self._sent.get(ack + 1)
            if ack < self._last_responded and missing is not None and now - missing[1] >= 1.0:
                report = (ack + 1, now - missing[1])
        self._current_inactivity = self.inactivity  # a pause lasts until the next request (§10)
        self._held.append(_Held(rid, now + self.wait))
        if pause is not None and self.maxpause:
            # §10: answer everything now (the pause answer carries no payloads) and wait longer.
            self._current_inactivity = min(pause, self.maxpause)
            while self._held:
                is_pause = self._held[0].rid == rid
                self._respond_oldest(now, empty=is_pause, remember=not is_pause)
            return [Payloads(body.payloads)] if body.payloads else []
        if body.terminate:
            # §13: the oldest held request gets the terminate, the others (this one, if older ones are
            # held) an empty body; the payloads still reach the server (a last unavailable presence).
            self.close(None, now=now)
            return [Payloads(body.payloads), Terminate()] if body.payloads else [Terminate()]
        if report is not None:
            self._respond_oldest(now, extra={"report": str(report[0]), "time": str(int(report[1] * 1000))})
        while len(self._held) > self.hold:
            self._respond_oldest(now)  # §8: the client has a new request waiting, free the old one
        if self._out and self._held:
            self._respond_oldest(now)
        if body.restart:
            return [Restart(dict(body.attrs))]  # XEP-0206 §5: payloads of a restart request are ignored
        return [Payloads(body.payloads)] if body.payloads else []

    def _check_key(self, body: BoshBody) -> bool:
        """§15: each 'key' hashes to the previous request's 'newkey' or 'key' (when the client uses keys)."""
        key = body.attrs.get("key")
        if self._key is None:
            if key is not None:
                return False
            self._key = body.attrs.get("newkey")
            return True
        if key is None or hashlib.sha1(key.encode()).hexdigest().lower() != self._key.lower():
            return False
        self._key = body.attrs.get("newkey") or key
        return True

    # -- output --------------------------------------------------------------------------------------
    def push(self, data: bytes) -> None:
        """Bytes for the client (one stanza, or a unit of stream output); sent by :meth:`flush`."""
        if not self.closed:
            self._out.append(data)

    @property
    def pending_output(self) -> int:
        return sum(len(d) for d in self._out)

    def flush(self, now: float) -> None:
        """Answer the oldest held request with everything pushed since (call once per loop turn)."""
        if self._out and self._held:
            self._respond_oldest(now)

    def take(self) -> list[Response]:
        """The responses ready to send, in order."""
        out = self._responses
        self._responses = []
        return out

    def _respond_oldest(
        self, now: float, *, empty: bool = False, remember: bool = True, extra: dict[str, str] | None = None
    ) -> None:
        held = self._held.popleft()
        attrs: dict[str, str] = {}
        creation = self._creation_pending
        if creation:
            attrs = self._creation_attrs()
            self._creation_pending = False
        elif self._rid != held.rid:
            attrs["ack"] = str(self._rid)  # §9.1: we have received more than the request answered
        if extra:
            attrs.update(extra)
        content = b""
        if not empty and self._out:
            content = b"".join(self._out)
            self._out.clear()
        body = _wrap(attrs, content, streams=bool(content) or creation, xbosh=creation)
        self._responses.append(Response(held.rid, body, 200, self.content_type))
        if remember:
            self._remember(held.rid, body, now)
        self._last_responded = max(self._last_responded, held.rid)
        if not self._held:
            self._idle_since = now

    def _remember(self, rid: int, body: bytes, now: float) -> None:
        self._sent[rid] = (body, now)
        while len(self._sent) > self.requests:
            self._sent.popitem(last=False)

    # -- time ----------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Answer held requests whose 'wait' is over (§8); end a session idle past 'inactivity' (§10)."""
        while self._held and self._held[0].deadline <= now:
            self._respond_oldest(now)
        if self.closed:
            if self._final is not None and now - self._idle_since > self._current_inactivity:
                self._final = None  # nobody came back for it
            return
        if self._held:
            return
        if self._waiting:
            # A gap in the rids that nobody fills: the client is gone as surely as an idle one.
            if now - min(w.arrived for w in self._waiting.values()) > self.wait + self._current_inactivity:
                self._expire()
        elif now - self._idle_since > self._current_inactivity:
            self._expire()

    def _expire(self) -> None:
        """§10: no request for too long; the client is assumed gone (it is not told)."""
        self.expired = True
        self.closed = True
        self._out.clear()
        for rid in sorted(self._waiting):
            self._responses.append(terminal_response(rid, "item-not-found", legacy=self.legacy))
        self._waiting.clear()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing pending, session closed)."""
        if self._held:
            return self._held[0].deadline
        if self.closed:
            return self._idle_since + self._current_inactivity if self._final is not None else None
        if self._waiting:
            return min(w.arrived for w in self._waiting.values()) + self.wait + self._current_inactivity
        return self._idle_since + self._current_inactivity

    # -- ending --------------------------------------------------------------------------------------
    def close(self, condition: str | None = None, *, extra: bytes = b"", now: float = 0.0) -> None:
        """End the session from the server's side (§13, §17.2): the oldest held request gets what is
        pending, ``extra`` (e.g. a ``<stream:error/>``) and the terminate; the others get empty bodies.
        With no request held, the next one the client makes gets it."""
        if self.closed:
            return
        self.closed = True
        attrs = {"type": "terminate"}
        if condition is not None:
            attrs["condition"] = condition
        content = b"".join(self._out) + extra
        self._out.clear()
        for rid in sorted(self._waiting):
            self._responses.append(Response(rid, _wrap({}, b""), 200, self.content_type))
        self._waiting.clear()
        if not self._held:
            self._final = (attrs, content)
            return
        first = self._held.popleft()
        creation = self._creation_pending
        if creation:
            attrs = {**self._creation_attrs(), **attrs}
            self._creation_pending = False
        wrapped = _wrap(attrs, content, streams=bool(content), xbosh=creation)
        self._responses.append(Response(first.rid, wrapped, 200, self.content_type))
        while self._held:
            self._responses.append(Response(self._held.popleft().rid, _wrap({}, b""), 200, self.content_type))
        self._idle_since = now

    def _answer_final(self, rid: int) -> None:
        assert self._final is not None
        attrs, content = self._final
        self._final = None
        body = _wrap(attrs, content, streams=bool(content))
        self._responses.append(Response(rid, body, 200, self.content_type))

    def _fail(self, condition: str, rid: int) -> None:
        """A terminal binding error caused by this request: it, and every held request, are answered."""
        others = sorted([h.rid for h in self._held] + [r for r in self._waiting if r != rid])
        self._held.clear()
        self._waiting.clear()
        self._out.clear()
        self.closed = True
        for other in others:
            self._responses.append(Response(other, _wrap({}, b""), 200, self.content_type))
        self._responses.append(terminal_response(rid, condition, legacy=self.legacy))

    @property
    def awaiting_final(self) -> bool:
        """Closed, with a terminate still to hand to the client's next request."""
        return self._final is not None


def _header_safe(value: str) -> bool:
    return all(32 <= ord(c) < 127 for c in value) and len(value) < 200
