"""The sans-IO XMPP stream core: header, restart, close, held input and output, for any stream.

One :class:`Stream` is one XML stream (RFC 6120 §4) in one **role** (it initiates the stream, or it
receives it), with one **content namespace** (``jabber:client``, ``jabber:server``,
``jabber:component:accept``) and one **framing** (:mod:`roost.stream.framing`: ``<stream:stream>``
over bytes, RFC 7395 WebSocket messages, or BOSH bodies). Everything between the header and an
established stream is done by **features** (:class:`Feature`): STARTTLS, SASL, resource binding,
in-band registration, and later stream management, SASL2/Bind2, dialback, the component handshake.
The core only knows their common shape:

- receiving role: after each header, every feature may advertise an element in
  ``<stream:features/>``; a top-level element is offered to the features in order until one takes
  it (:meth:`Feature.handle`);
- initiating role: on ``<stream:features/>``, features are asked in order whether they want to start
  (:meth:`Feature.select`); the selected one then gets the elements that follow;
- a feature that needs the driver (a TLS handshake, a credentials lookup, a resource) returns an
  event and sets the stream **pending**: further input is held, in order, until the driver's answer
  reaches the feature and it calls :meth:`Stream.resume`;
- a feature that completes with a restart calls :meth:`Stream.restart` (RFC 6120 §5.4.3.3, §6.4.6);
- once established, stanzas go straight to the driver, and other top-level elements (nonzas, e.g.
  XEP-0198's ``<r/>``) go to the feature that claims their namespace (:attr:`Feature.nonza_namespaces`),
  else the stream ends with ``<unsupported-stanza-type/>``.

Input: :meth:`Stream.receive_data` (bytes, through the framing) or :meth:`Stream.receive_items`
(already parsed, e.g. by a BOSH transport). Output: :meth:`Stream.data_to_send` (bytes, joined) or
:meth:`Stream.items_to_send` (one ``bytes`` per element, for framings with messages), plus a list of
events per call. A :class:`Closed` event carries the final bytes (error, closing) for the driver to
write once everything before it is handled (RFC 6120 §4.4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, ClassVar, TypeVar

from roost.jid import JID
from roost.stanza.errors import StreamError
from roost.util.ids import random_token
from roost.xml.element import Element
from roost.xml.ns import CLIENT, STREAM, STREAMS_ERRORS
from roost.xml.parser import ParseEvent, StreamEnd, StreamOpen, StreamParser, XmlStreamError

if TYPE_CHECKING:
    from roost.stream.framing import Framing


class Role(Enum):
    """Which end of the stream this object is (RFC 6120 §4.1: initiating and receiving entity)."""

    INITIATING = auto()
    RECEIVING = auto()


class Phase(Enum):
    """Where the stream is, independent of which feature is being negotiated."""

    WAIT_HEADER = auto()  # the peer's header is next (also after a restart)
    NEGOTIATING = auto()  # features are being negotiated
    PENDING = auto()  # a feature waits for the driver; input is held
    ESTABLISHED = auto()  # stanzas flow
    CLOSED = auto()


class Event:
    """Base of the events a stream hands its driver (besides stanzas, which are Elements)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The stream is over: write ``final`` (stream error, closing tag) after everything before this
    event has been handled, then close the transport."""

    error: StreamError | None
    final: bytes = b""
    #: ``final`` one element per item, for framings where each element is a message (RFC 7395).
    final_items: tuple[bytes, ...] = ()
    #: The stream error the peer sent, if it closed with one (``error`` is ours).
    peer_error: StreamError | None = None


@dataclass(frozen=True, slots=True)
class Opened(Event):
    """Initiating role: the peer's stream header arrived (``attrs``: from, id, version, …)."""

    attrs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Established(Event):
    """Initiating role: negotiation is over; stanzas may flow both ways."""


StreamEvent = Element | Event
F = TypeVar("F", bound="Feature")
_STANZA_NAMES = frozenset(("message", "presence", "iq"))


class Feature:
    """One negotiation step, or a nonza handler once established (subclass and override).

    A feature object usually belongs to one stream (it may keep per-stream state); one that keeps
    none may be shared by many streams. It reaches the stream through the ``stream`` argument.
    Every hook returns ``None`` for "not mine".
    """

    __slots__ = ()

    #: Whether the class overrides :meth:`cache_key` (set for each subclass when it is defined).
    keyed: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.keyed = cls.cache_key is not Feature.cache_key

    #: Top-level element namespaces this feature takes once the stream is established (nonzas).
    nonza_namespaces: ClassVar[frozenset[str]] = frozenset()

    # -- receiving role ------------------------------------------------------------------------
    def advertise(self, stream: Stream) -> Element | Sequence[Element] | None:
        """The child (or children) of ``<stream:features/>`` to offer now (None: not offered)."""
        return None

    def cache_key(self, stream: Stream) -> Hashable:
        """What :meth:`advertise` depends on besides the framing and the stream's ``authenticated``,
        ``secure`` and channel-binding types: streams with equal keys get the same feature bytes."""
        return None

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        """A top-level element during negotiation (either role): take it, or None."""
        return None

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        """A non-stanza element in :attr:`nonza_namespaces` once established."""
        return None

    # -- initiating role -----------------------------------------------------------------------
    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        """The peer offered ``features``: start this step (send its first element), or None."""
        return None


class Stream:
    """One XML stream: framing, role, content namespace, features (see the module docstring)."""

    def __init__(
        self,
        framing: Framing,
        features: Sequence[Feature],
        *,
        role: Role = Role.RECEIVING,
        content_ns: str = CLIENT,
        domains: frozenset[str] = frozenset(),
        secure: bool = False,
        features_cache: dict[Hashable, tuple[bytes, bool]] | None = None,
        versionless: bool = False,
    ) -> None:
        self.framing = framing
        self._feed = framing.feeder()
        self.features = features if isinstance(features, list) else list(features)
        self.role = role
        self.content_ns = content_ns
        #: Receiving role: the domains we serve (the header's 'to' must name one, RFC 6120 §4.7.2).
        self.domains = domains
        self.phase = Phase.WAIT_HEADER
        #: XEP-0114 (jabber:component:accept): headers carry no version and there are no stream
        #: features; the features' ``handle`` (receiving) and ``select`` (initiating, called with an
        #: empty features element once the peer's header arrived) do the handshake.
        self.versionless = versionless
        self.secure = secure
        #: Our domain (receiving) or the peer's (initiating).
        self.domain: str | None = None
        self.lang = "en"
        self.stream_id = ""
        #: The authenticated peer (c2s: its username) and bound address, set by features.
        self.authenticated = False
        self.username: str | None = None
        self.jid: JID | None = None
        self.channel_bindings: Mapping[str, bytes] = {}
        #: Initiating role: the peer's header attributes and the feature being negotiated.
        self.peer_header: Mapping[str, str] = {}
        #: The feature in the middle of an exchange (e.g. SASL between <auth/> and <success/>):
        #: it alone gets the elements until it clears this.
        self.active: Feature | None = None
        #: The feature waiting for the driver (phase PENDING).
        self.pending_on: Feature | None = None
        self._from: str | None = None
        self._features_cache = features_cache if features_cache is not None else {}
        self._nonza: dict[str, Feature] | None = None  # built when the first nonza arrives
        #: The features whose offer depends on the stream (the others' cache_key is always None).
        self._keyed = [f for f in self.features if f.keyed]
        self._out: list[bytes] = []
        self._header_sent = False
        self._held: deque[ParseEvent] = deque()
        self._after_pending = Phase.NEGOTIATING

    # -- input ---------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[StreamEvent]:
        """Feed bytes from the peer (for the XML framing, any chunk; for WebSocket, one message)."""
        if self.phase is Phase.CLOSED:
            return []
        try:
            parsed = self._feed(data)
        except XmlStreamError as e:
            return self._close(StreamError(e.condition, e.text))
        if self.phase is Phase.ESTABLISHED and not self._held:
            # Hot path: stanzas straight through.
            events: list[StreamEvent] = []
            for item in parsed:
                if item.__class__ is Element and item.name in _STANZA_NAMES and item.ns == self.content_ns:
                    events.append(item)
                else:
                    events.extend(self._dispatch(item))
                    if not self.established:
                        # Closed, or a nonza's feature now waits for the driver: the rest is held.
                        if not self.closed:
                            self._hold_after(parsed, item)
                            events.extend(self.drain())
                        break
            return events
        self._held.extend(parsed)
        return self.drain()

    def _hold_after(self, parsed: list[ParseEvent], item: ParseEvent) -> None:
        """Hold what follows ``item`` in ``parsed`` (found by identity: Elements compare by value)."""
        for index, candidate in enumerate(parsed):
            if candidate is item:
                self._held.extend(parsed[index + 1 :])
                return

    def receive_items(self, items: Sequence[ParseEvent]) -> list[StreamEvent]:
        """Feed already-parsed items (a BOSH transport that parsed the ``<body/>`` itself)."""
        if self.phase is Phase.CLOSED:
            return []
        self._held.extend(items)
        return self.drain()

    def drain(self) -> list[StreamEvent]:
        """Process held input until a feature waits for the driver or the input runs out."""
        events: list[StreamEvent] = []
        held = self._held
        while held and self.phase is not Phase.PENDING:
            events.extend(self._dispatch(held.popleft()))
            if self.phase is Phase.CLOSED:
                held.clear()
                break
        return events

    # -- output --------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes the stream wants written, in order."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        return data

    def items_to_send(self) -> list[bytes]:
        """What the stream wants written, one item per element (WebSocket messages, BOSH payloads)."""
        out = self._out
        if out:
            self._out = []
        return out  # when empty, the stream's own (empty) list: callers only iterate it

    def send(self, el: Element) -> None:
        """Write one element (a stanza, or a negotiation element) in the stream's framing."""
        self._out.append(self.framing.encode(el, self.content_ns))

    def send_raw(self, data: bytes) -> None:
        """Write pre-serialized element bytes (constant negotiation elements)."""
        self._out.append(data)

    def feature(self, cls: type[F]) -> F | None:
        """This stream's feature of class ``cls`` (for drivers that answer a feature's events)."""
        for feature in self.features:
            if isinstance(feature, cls):
                return feature
        return None

    # -- for features --------------------------------------------------------------------------
    def wait(self, feature: Feature, then: Phase = Phase.NEGOTIATING) -> None:
        """Hold input until :meth:`resume` (``feature`` waits for the driver)."""
        self.phase = Phase.PENDING
        self.pending_on = feature
        self._after_pending = then

    def resume(self, phase: Phase | None = None) -> list[StreamEvent]:
        """The driver answered: continue (in ``phase``, or where :meth:`wait` said) with held input."""
        if self.phase is Phase.CLOSED:
            return []
        self.pending_on = None
        self.phase = phase if phase is not None else self._after_pending
        return self.drain()

    def discard_input(self) -> None:
        """Forget unparsed and held input: it belonged to a stream that is being replaced."""
        self.framing.reset()
        self._held.clear()

    def restart(self, *, discard_input: bool = True) -> None:
        """Both sides discard the old stream; a new header follows (RFC 6120 §5.4.3.3, §6.4.6).

        Whatever the peer sent after the element that caused the restart is discarded with the old
        stream (STARTTLS command injection). The initiating side sends its new header at once.
        """
        if discard_input:
            self.discard_input()
        self.active = None
        if self.phase is not Phase.PENDING:
            self.phase = Phase.WAIT_HEADER
        if self.role is Role.INITIATING:
            self._send_header()

    def send_features(self) -> list[StreamEvent]:
        """Write ``<stream:features/>`` now, without a restart (SASL2, XEP-0388 §2.5)."""
        return self._send_features()

    def establish(self) -> list[StreamEvent]:
        """Negotiation is complete (a feature says so, e.g. bind): stanzas may flow."""
        self.active = None
        self.phase = Phase.ESTABLISHED
        return [Established()] if self.role is Role.INITIATING else []

    def close(self, error: StreamError | None = None, see_other_uri: str | None = None) -> list[StreamEvent]:
        """Close the stream from our side, with a stream error if given (RFC 6120 §4.4, §4.9)."""
        return self._close(error, see_other_uri=see_other_uri)

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def established(self) -> bool:
        return self.phase is Phase.ESTABLISHED

    @property
    def parser(self) -> StreamParser:
        """The framing's parser (the XML framing's one lives as long as the stream)."""
        return self.framing.parser

    def release_parser(self) -> bool:
        """Free parser memory of an idle, established stream (see StreamParser.release_parser)."""
        if self.phase is not Phase.ESTABLISHED or self._held:
            return False
        return self.framing.parser.release_parser()

    #: Former name (core/server.py); "hibernation" is XEP-0198's word for something else.
    hibernate = release_parser

    # -- initiating role -----------------------------------------------------------------------
    def start(self, to: str, *, lang: str = "en", from_: str | None = None) -> None:
        """Initiating role: open the stream to domain ``to`` (RFC 6120 §4.2)."""
        self.domain = to
        self.lang = lang
        self._from = from_
        self._send_header()

    # -- internals -----------------------------------------------------------------------------
    def _dispatch(self, item: ParseEvent) -> list[StreamEvent]:
        if isinstance(item, StreamOpen):
            if self.role is Role.RECEIVING:
                return self._on_open(item)
            return self._on_peer_header(item)
        if isinstance(item, StreamEnd):
            return self._close(None, peer_closed=True)
        if item.name == "error" and item.ns == STREAM:
            # RFC 6120 §4.9.1.1: a stream error ends the stream; we close ours in turn.
            return self._close(None, peer_error=item)
        phase = self.phase
        if phase is Phase.ESTABLISHED:
            if item.name in _STANZA_NAMES and item.ns == self.content_ns:
                return [item]
            nonza = self._nonza
            if nonza is None:
                nonza = self._nonza = {ns: f for f in self.features for ns in f.nonza_namespaces}
            feature = nonza.get(item.ns)
            if feature is not None:
                handled = feature.nonza(self, item)
                if handled is not None:
                    return handled
            return self._close(StreamError("unsupported-stanza-type", f"<{item.name}/> is not a stanza"))
        if phase is Phase.WAIT_HEADER:
            return self._close(StreamError("not-well-formed", "the stream header comes first"))
        if self.role is Role.INITIATING:
            if item.ns == STREAM and item.name == "features" and self.active is None:
                return self._on_features(item)
            if self.active is not None:
                handled = self.active.handle(self, item)
                if handled is not None:
                    return handled
            return self._close(StreamError("unsupported-stanza-type", f"unexpected <{item.name}/> here"))
        active = self.active
        if active is not None:
            handled = active.handle(self, item)
            if handled is not None:
                return handled
        else:
            for feature in self.features:
                handled = feature.handle(self, item)
                if handled is not None:
                    return handled
        if item.name in _STANZA_NAMES and item.ns == self.content_ns:
            # RFC 6120 §4.3.5: no stanzas before negotiation is complete.
            return self._close(StreamError("not-authorized", "negotiate the stream first"))
        return self._close(StreamError("unsupported-stanza-type", f"unexpected <{item.name}/> here"))

    def _on_open(self, opened: StreamOpen) -> list[StreamEvent]:
        """Receiving role: the peer's header (RFC 6120 §4.7); answer with ours and the features."""
        if self.phase is not Phase.WAIT_HEADER:
            return self._close(StreamError("not-well-formed", "unexpected stream header"))
        attrs = opened.header.attrs
        self.peer_header = dict(attrs)
        self.lang = attrs.get("xml:lang") or "en"
        self.stream_id = random_token(12)
        if opened.content_ns is not None and opened.content_ns != self.content_ns:
            # RFC 6120 §4.9.3.10
            return self._close(
                StreamError("invalid-namespace", f"the content namespace is {self.content_ns}")
            )
        prefix = self.framing.stream_prefix
        if prefix is not None and opened.prefix != prefix:
            # RFC 6120 §4.8.5: the streams namespace prefix is "stream".
            return self._close(StreamError("bad-namespace-prefix", f"use the prefix '{prefix}'"))
        to = attrs.get("to")
        domain = _bare_domain(to) if to else None
        if domain is None or domain not in self.domains:
            # RFC 6120 §4.9.3.6, §4.7.2: 'to' is a domainpart we serve (a missing 'to' is treated
            # like an unknown host; so is a JID with a localpart or resourcepart).
            self.domain = self.domain or next(iter(sorted(self.domains)), None)
            return self._close(StreamError("host-unknown", f"this server does not serve {to!r}"))
        if self.domain is not None and domain != self.domain:
            return self._close(StreamError("host-unknown", "the domain changed on stream restart"))
        self.domain = domain
        if self.versionless:
            self._send_header()
            self.phase = Phase.NEGOTIATING
            return []
        version = attrs.get("version", "0.9")
        major = version.split(".", 1)[0]
        if not major.isdigit() or int(major) != 1:
            # RFC 6120 §4.7.5: we speak 1.x only; pre-1.0 (no version) is refused too.
            return self._close(StreamError("unsupported-version", "XMPP 1.0 streams only"))
        self._send_header()
        return self._send_features()

    def _send_header(self) -> None:
        attrs: dict[str, str] = {}
        if self.role is Role.RECEIVING:
            if self.domain is not None:
                attrs["from"] = self.domain
            if self.jid is not None:
                attrs["to"] = str(self.jid.bare)
            attrs["id"] = self.stream_id
        else:
            if self._from is not None:
                attrs["from"] = self._from
            if self.domain is not None:
                attrs["to"] = self.domain
        if not self.versionless:
            attrs["version"] = "1.0"
        attrs["xml:lang"] = self.lang
        header = self.framing.header(attrs, self.content_ns)
        if header:
            self._out.append(header)
        self._header_sent = True

    def _send_features(self) -> list[StreamEvent]:
        """``<stream:features/>`` for the stream's state: one bytes object per shape, shared.

        Empty features mean negotiation is complete (RFC 6120 §4.3.5): the stream is established."""
        # Every offer may depend on these; features add what else theirs depends on.
        key = (
            self.framing.name,
            self.authenticated,
            self.secure,
            tuple(self.channel_bindings),
            *[f.cache_key(self) for f in self._keyed],
        )
        cache = self._features_cache
        found = cache.get(key)
        if found is None:
            if len(cache) > 64:
                cache.clear()
            el = Element("features", STREAM)
            for feature in self.features:
                child = feature.advertise(self)
                if isinstance(child, Element):
                    el.append(child)
                elif child:
                    el.children.extend(child)
            found = cache[key] = (self.framing.encode(el, self.content_ns), not el.children)
        self._out.append(found[0])
        if found[1]:
            return self.establish()
        self.phase = Phase.NEGOTIATING
        return []

    def _on_peer_header(self, opened: StreamOpen) -> list[StreamEvent]:
        """Initiating role: the receiving entity's header (RFC 6120 §4.7)."""
        if self.phase is not Phase.WAIT_HEADER:
            return self._close(StreamError("not-well-formed", "unexpected stream header"))
        if opened.content_ns is not None and opened.content_ns != self.content_ns:
            return self._close(StreamError("invalid-namespace", f"expected {self.content_ns}"))
        prefix = self.framing.stream_prefix
        if prefix is not None and opened.prefix != prefix:
            return self._close(StreamError("bad-namespace-prefix", f"use the prefix '{prefix}'"))
        attrs = opened.header.attrs
        self.peer_header = dict(attrs)
        self.stream_id = attrs.get("id", "")
        self.phase = Phase.NEGOTIATING
        if self.versionless:
            return [Opened(self.peer_header), *self._on_features(Element("features", STREAM))]
        return [Opened(self.peer_header)]

    def _on_features(self, features: Element) -> list[StreamEvent]:
        """Initiating role: the first feature that wants to go, goes (RFC 6120 §4.3.2)."""
        for feature in self.features:
            started = feature.select(self, features)
            if started is not None:
                self.active = feature
                return started
        if features.first() is None or self.authenticated:
            return self.establish()  # nothing (more) to negotiate (§4.3.5)
        return self._close(StreamError("unsupported-feature", "no offered feature can be negotiated"))

    def _close(
        self,
        error: StreamError | None,
        peer_closed: bool = False,
        see_other_uri: str | None = None,
        peer_error: Element | None = None,
    ) -> list[StreamEvent]:
        if self.phase is Phase.CLOSED:
            return []
        final: list[bytes] = []
        theirs: StreamError | None = None
        if peer_error is not None:
            condition = next(
                (c.name for c in peer_error.elements() if c.ns == STREAMS_ERRORS and c.name != "text"),
                "undefined-condition",
            )
            theirs = StreamError(condition, peer_error.find_text("text", STREAMS_ERRORS) or None)
        if error is not None:
            if not self._header_sent:
                # RFC 6120 §4.9.1.2: open our stream first, then send the error.
                if self.domain is None:
                    self.domain = next(iter(sorted(self.domains)), None)
                if not self.stream_id:
                    self.stream_id = random_token(12)
                self._send_header()
            final.append(self.framing.encode(error.to_element(), self.content_ns))
        if self._header_sent:
            closing = self.framing.closing(see_other_uri)
            if closing:
                final.append(closing)
        self.phase = Phase.CLOSED
        # Not in _out: stanzas the peer sent before closing are still being answered (RFC 6120 §4.4).
        return [Closed(error, b"".join(final), tuple(final), theirs)]


def _bare_domain(to: str | None) -> str | None:
    """The domain ``to`` names if it is a bare domain (RFC 6120 §4.7.2), else None."""
    if not to:
        return None
    try:
        jid = JID.parse(to)
    except ValueError:
        return None
    if jid.local is not None or jid.resource is not None:
        return None
    return jid.domain
