"""Stream management (XEP-0198 v1.6.3), the protocol state of one session, without I/O.

:class:`StreamManagement` keeps the two counters (§4: stanzas handled from the peer, stanzas sent to
it), the queue of sent stanzas the peer has not yet acknowledged, and the server's policy for
requesting acks. The nonzas are built and parsed here (``<enable/>``, ``<enabled/>``, ``<r/>``,
``<a/>``, ``<resume/>``, ``<resumed/>``, ``<failed/>``). What to do with them on a live stream (when to
write an ``<r/>``, how to detach and resume a session, where unacknowledged stanzas go when a
session expires) is the driver's business; it calls in here with the current time where time matters.

Counters are unsignedInt and wrap from 2^32-1 to 0 (§4), so every comparison is modulo 2^32.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from roost.jid import JID
from roost.stanza.errors import STANZA_ERROR_TYPES, StanzaError, StreamError
from roost.stream.core import Event, Feature, Phase, Stream, StreamEvent
from roost.util.ids import random_token
from roost.xml.element import Element
from roost.xml.fragment import parse_bytes
from roost.xml.ns import SM, STANZA_ERRORS
from roost.xml.serializer import serialize

#: §4: 'h' is an xs:unsignedInt; it is reset from 2^32-1 to 0.
MODULO: Final = 1 << 32
MASK: Final = MODULO - 1
#: Counters are compared with this before they are masked: CPython's int fast paths take only
#: single-digit (< 2^30) operands, and ``n & MASK`` on every stanza showed up as a cold code path
#: (instruction-cache misses and mispredicted branches, callgrind's cache simulation). Past it the
#: mask applies as usual, so counting stays exact modulo 2^32.
SMALL: Final = (1 << 30) - 1
#: Bytes of randomness in a resumption id (SM-ID, §5): 192 bits, so ids cannot be guessed.
ID_BYTES: Final = 24


class SmFailure(Exception):
    """An ``<enable/>`` or ``<resume/>`` that cannot be honoured: answered with ``<failed/>`` (§6)."""

    def __init__(self, condition: str, text: str | None = None, h: int | None = None) -> None:
        if condition not in STANZA_ERROR_TYPES:  # §6: one of RFC 6120's stanza error conditions
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.h = h

    def to_element(self) -> Element:
        return failed(self.condition, self.text, self.h)


class HandledCountTooHigh(Exception):
    """The peer acknowledged more stanzas than were sent to it (§6): the stream is closed."""

    def __init__(self, h: int, send_count: int) -> None:
        super().__init__(f"acknowledged {h} stanzas, {send_count} sent")
        self.h = h
        self.send_count = send_count

    def stream_error(self) -> StreamError:
        """§6: an <undefined-condition/> stream error carrying <handled-count-too-high/>."""
        app = Element("handled-count-too-high", SM, {"h": str(self.h), "send-count": str(self.send_count)})
        text = f"You acknowledged {self.h} stanzas, but I only sent you {self.send_count} so far."
        return StreamError("undefined-condition", text, app=app)


# -- nonzas -----------------------------------------------------------------------------------------------
def new_id() -> str:
    """A fresh SM-ID (§5): random, opaque, never reused while the process runs."""
    return random_token(ID_BYTES)


def parse_h(value: str | None) -> int:
    """An 'h' attribute as an int; ``ValueError`` unless it is an unsignedInt (0 … 2^32-1)."""
    if value is None:
        raise ValueError("missing 'h'")
    if value.isascii() and value.isdigit() and len(value) < 10:  # every <a/> a client sends
        return int(value)
    text = value.strip()  # xs:unsignedInt allows surrounding whitespace and a leading '+'
    if text.startswith("+"):
        text = text[1:]
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"'h' is not an unsignedInt: {value!r}")
    h = int(text)
    if h >= MODULO:
        raise ValueError(f"'h' is out of range: {value!r}")
    return h


def parse_bool(value: str | None) -> bool:
    """An xs:boolean attribute; absent means false (§3)."""
    return value is not None and value.strip() in ("true", "1")


def feature() -> Element:
    """The ``<sm/>`` stream feature (§2; v1.6.3 dropped its <optional/>/<required/> children)."""
    return Element("sm", SM)


def request() -> Element:
    """``<r/>``: ask the peer how many stanzas it has handled (§4)."""
    return Element("r", SM)


#: ``<r/>`` as written (it never changes).
REQUEST_BYTES: Final = serialize(request()).encode()


def answer(h: int) -> Element:
    """``<a h=…/>``: how many stanzas we have handled (§4)."""
    return Element("a", SM, {"h": str(h)})


def enabled(sm_id: str | None = None, max_seconds: int | None = None, location: str | None = None) -> Element:
    """``<enabled/>`` (§3); with an id it is resumable (§5: ``resume='true'`` and ``id``)."""
    attrs: dict[str, str] = {}
    if sm_id is not None:
        attrs["id"] = sm_id
        attrs["resume"] = "true"
        if max_seconds is not None:
            attrs["max"] = str(max_seconds)
        if location:
            attrs["location"] = location
    return Element("enabled", SM, attrs)


def resumed(previd: str, h: int) -> Element:
    """``<resumed previd h/>`` (§5): ``h`` counts the client's stanzas we handled."""
    return Element("resumed", SM, {"previd": previd, "h": str(h)})


def failed(condition: str = "unexpected-request", text: str | None = None, h: int | None = None) -> Element:
    """``<failed/>`` with a stanza error condition (§6), and ``h`` where the session is known (§5)."""
    el = Element("failed", SM, {"h": str(h)} if h is not None else None)
    el.add(condition, STANZA_ERRORS)
    if text:
        el.add("text", STANZA_ERRORS, {"xml:lang": "en"}, text)
    return el


@dataclass(frozen=True, slots=True)
class EnableRequest:
    """A parsed ``<enable/>`` (§3)."""

    resume: bool
    max_seconds: int | None


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """A parsed ``<resume/>`` (§5)."""

    previd: str
    h: int


def parse_enable(el: Element) -> EnableRequest:
    """``<enable resume? max?/>``; an unreadable 'max' is ignored (it is only a preference)."""
    max_seconds: int | None = None
    raw = el.attrs.get("max")
    if raw is not None and raw.strip().isdigit():
        max_seconds = int(raw.strip())
    return EnableRequest(parse_bool(el.attrs.get("resume")), max_seconds)


def parse_resume(el: Element) -> ResumeRequest:
    """``<resume previd h/>``; both attributes are REQUIRED (§5), else :class:`SmFailure` bad-request."""
    previd = el.attrs.get("previd")
    if not previd:
        raise SmFailure("bad-request", "<resume/> needs a 'previd'")
    try:
        h = parse_h(el.attrs.get("h"))
    except ValueError as e:
        raise SmFailure("bad-request", str(e)) from None
    return ResumeRequest(previd, h)


def failure_of(error: StanzaError) -> SmFailure:
    """A stanza error raised while enabling/resuming, as a ``<failed/>``."""
    return SmFailure(error.condition, error.text)


# -- state ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class AckPolicy:
    """When the server asks the client for an ack: after ``every`` unacknowledged stanzas, or when the
    oldest stanza sent since the last request is ``after_seconds`` old (0 turns either off)."""

    every: int = 5
    after_seconds: float = 30.0


class StreamManagement:
    """XEP-0198 state of one session (it survives the connection when the session is resumable).

    The driver calls :meth:`handled` for each stanza received from the client, :meth:`sent` for each
    stanza written to it, :meth:`acknowledge` on ``<a/>``; :meth:`resume` carries the state to a new
    connection and yields what to send again; :meth:`take_unacked` empties the queue for re-routing.
    """

    __slots__ = (
        "_awaiting_ack",
        "_every",
        "_first_unrequested_at",
        "_unrequested",
        "acked",
        "id",
        "inbound",
        "max_seconds",
        "max_unacked",
        "outbound",
        "policy",
        "unacked",
    )

    def __init__(
        self,
        *,
        policy: AckPolicy | None = None,
        max_unacked: int = 10_000,
        sm_id: str | None = None,
        max_seconds: int | None = None,
    ) -> None:
        self.policy = policy or AckPolicy()
        #: ``policy.every``, or never reached when requests by count are off (checked per stanza).
        self._every = self.policy.every if self.policy.every > 0 else 1 << 62
        #: Past this many unacknowledged stanzas the session cannot be kept (the driver closes it).
        self.max_unacked = max_unacked
        #: The SM-ID when resumable, else None.
        self.id = sm_id
        #: Resumption time granted in <enabled max/>.
        self.max_seconds = max_seconds
        #: 'h' we report: stanzas received from the client and handled, modulo 2^32.
        self.inbound = 0
        #: Stanzas sent to the client, modulo 2^32.
        self.outbound = 0
        #: The client's last reported 'h' (stanzas it has handled), modulo 2^32.
        self.acked = 0
        #: Sent and not yet acknowledged, oldest first: the bytes as written, the namespace in scope
        #: where they were written (the stream's content namespace, or None where every stanza
        #: declares its own), and the time (for a XEP-0203 delay stamp if it is re-routed, §4).
        #: Bytes, not elements: compact, immutable and nothing for the cyclic garbage collector to
        #: walk while acks are on their way; elements are rebuilt only to resume or re-route.
        self.unacked: deque[tuple[bytes, str | None, float]] = deque()
        self._unrequested = 0
        self._first_unrequested_at = 0.0
        self._awaiting_ack = False

    @property
    def resumable(self) -> bool:
        return self.id is not None

    @property
    def awaiting_ack(self) -> bool:
        """An ``<r/>`` was written and its ``<a/>`` has not come yet."""
        return self._awaiting_ack

    # -- inbound ------------------------------------------------------------------------------------------
    def handled(self) -> None:
        """One stanza from the client was handled (routed, answered or stored)."""
        inbound = self.inbound + 1  # (the c2s driver inlines this)
        self.inbound = inbound if inbound <= SMALL else inbound & MASK

    def answer(self) -> Element:
        """The ``<a/>`` to write for an ``<r/>`` (§4: MUST, as soon as possible)."""
        return answer(self.inbound)

    # -- outbound -----------------------------------------------------------------------------------------
    def sent(self, data: bytes, ns: str | None, now: float) -> bool:
        """Count a stanza written to the client (``data``, written where ``ns`` is the namespace in
        scope) and keep it until acknowledged.

        True when an ``<r/>`` should follow it now (the ``every`` threshold, and no request is
        already waiting for its answer).
        """
        # The exit of every stanza to a managed session: kept to a few attribute operations.
        outbound = self.outbound + 1
        self.outbound = outbound if outbound <= SMALL else outbound & MASK
        self.unacked.append((data, ns, now))
        unrequested = self._unrequested
        if unrequested == 0:
            self._first_unrequested_at = now
        self._unrequested = unrequested = unrequested + 1
        return unrequested >= self._every and not self._awaiting_ack

    def request_due(self, now: float) -> bool:
        """Whether the time threshold asks for an ``<r/>`` now (the driver's timer calls this)."""
        after = self.policy.after_seconds
        return (
            after > 0
            and self._unrequested > 0
            and not self._awaiting_ack
            and now - self._first_unrequested_at >= after
        )

    def requested(self) -> None:
        """Note that an ``<r/>`` is being written (the driver writes its pre-serialized bytes)."""
        self._unrequested = 0
        self._awaiting_ack = True

    def acknowledge(self, h: int) -> bool:
        """Apply the client's ``h`` (from ``<a/>`` or ``<resume/>``): drop what it has handled.

        Raises :class:`HandledCountTooHigh` if ``h`` acknowledges stanzas never sent (§6). Returns
        True when another ``<r/>`` is due at once (enough stanzas went out while we waited).
        """
        newly = h - self.acked  # modulo 2^32, without a two-digit division
        if newly < 0:
            newly += MODULO
        if newly > len(self.unacked):
            raise HandledCountTooHigh(h, self.outbound)
        for _ in range(newly):
            self.unacked.popleft()
        self.acked = h
        self._awaiting_ack = False
        # Stanzas sent after the last <r/> are still waiting for a request (unless this ack,
        # unrequested or covering more than asked, took them too); their clock keeps running.
        unrequested = self._unrequested
        left = len(self.unacked)
        if left < unrequested:
            self._unrequested = unrequested = left
        return unrequested >= self._every

    @property
    def over_limit(self) -> bool:
        """Too many unacknowledged stanzas: the client is not acking, the session cannot be kept."""
        return len(self.unacked) > self.max_unacked

    # -- resumption (§5) -----------------------------------------------------------------------------------
    def resume(self, h: int) -> list[Element]:
        """A client resumes with ``h``: acknowledge up to it and return the stanzas to send again.

        Counters carry over (§5); the stanzas re-sent stay in the queue and are not counted twice,
        as the client's 'h' covers the positions they already have. Raises :class:`HandledCountTooHigh`.
        """
        self.acknowledge(h)
        # What is re-sent has not been asked about on this connection: request an ack for it soon.
        self._unrequested = len(self.unacked)
        self._first_unrequested_at = 0.0
        return [parse_bytes(data, ns) for data, ns, _ in self.unacked]

    def take_unacked(self) -> list[tuple[Element, float]]:
        """Empty the queue: the session is over and these must be re-routed (§4), each exactly once."""
        items = [(parse_bytes(data, ns), at) for data, ns, at in self.unacked]
        self.unacked.clear()
        self._unrequested = 0
        self._awaiting_ack = False
        return items


# -- the stream feature -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EnableRequested(Event):
    """``<enable/>`` on an established stream: the driver enables SM for the session and writes
    ``<enabled/>`` (or ``<failed/>``)."""

    request: EnableRequest


@dataclass(frozen=True, slots=True)
class ResumeRequested(Event):
    """``<resume/>`` after authentication, instead of binding: the stream holds further input until
    the driver answers with :meth:`SmFeature.resumed` or :meth:`SmFeature.resume_failed`."""

    request: ResumeRequest
    feature: SmFeature


@dataclass(slots=True)  # not frozen: the most frequent event, and a frozen __init__ costs 3×
class AckNonza(Event):
    """``<r/>`` or ``<a h/>`` on an established stream (``element.name`` says which)."""

    element: Element


class SmFeature(Feature):
    """XEP-0198 on a receiving stream: where each nonza is allowed (§3, §5), and resumption in place
    of resource binding. The ``<sm/>`` advertisement comes with the module's stream features.

    Once the driver has enabled or resumed stream management on this stream it hands the session's
    :class:`StreamManagement` to :attr:`state`; from then on an ``<a/>`` is applied here, where it is
    parsed, instead of travelling to the driver as an event (it is the most frequent nonza, and it
    does not depend on where it falls among the client's stanzas). An ``<r/>`` still goes to the
    driver in order: its answer must count every stanza before it.
    """

    __slots__ = ("state",)

    nonza_namespaces = frozenset((SM,))

    def __init__(self) -> None:
        #: The session's XEP-0198 state while it is enabled on this stream.
        self.state: StreamManagement | None = None

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        """Negotiation: after authentication a client may resume instead of binding (§5)."""
        if el.ns != SM or not stream.authenticated:
            return None  # before authentication: refused like any unexpected element (§9)
        if el.name == "resume":
            try:
                request = parse_resume(el)
            except SmFailure as e:
                stream.send(e.to_element())
                return []
            stream.wait(self)
            return [ResumeRequested(request, self)]
        if el.name == "enable":
            # §3: not before resource binding; the server SHALL answer <failed/>.
            stream.send(failed("unexpected-request", "bind a resource first"))
            return []
        return None

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        """Established: enable, acks; a second resumption is refused (the session is bound)."""
        name = el.name
        if name == "a":
            state = self.state
            if state is None:
                return [AckNonza(el)]  # not enabled here: the driver says so (§6)
            try:
                due = state.acknowledge(parse_h(el.attrs.get("h")))
            except ValueError as e:
                return stream.close(StreamError("invalid-xml", f"<a/>: {e}"))
            except HandledCountTooHigh as e:
                return stream.close(e.stream_error())
            if due:  # enough stanzas went out while we waited for this answer: ask again
                state.requested()
                stream.send_raw(REQUEST_BYTES)
            return []
        if name == "r":
            return [AckNonza(el)]
        if name == "enable":
            return [EnableRequested(parse_enable(el))]
        if name == "resume":
            stream.send(failed("unexpected-request", "this stream already has a session"))
            return []
        return None

    def resumed(
        self, stream: Stream, jid: JID, previd: str, h: int, again: list[Element]
    ) -> list[StreamEvent]:
        """The driver moved the session to this stream: ``<resumed/>``, what the client missed, then
        the held input (§5)."""
        stream.jid = jid
        stream.send(resumed(previd, h))
        for stanza in again:
            stream.send(stanza)
        stream.establish()
        return stream.resume(Phase.ESTABLISHED)

    def resume_failed(self, stream: Stream, failure: SmFailure) -> list[StreamEvent]:
        """§5: ``<failed/>``; the client may still bind a resource on this stream."""
        stream.send(failure.to_element())
        return stream.resume()
