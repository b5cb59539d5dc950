"""The server side of a client-to-server XML stream, as a sans-IO state machine.

Bytes go in through :meth:`C2SStream.receive_data`; the stream answers with bytes to write
(:meth:`C2SStream.data_to_send`) and events for the driver (the transport/session layer), which owns
the socket, the storage and the session table. Where negotiation needs something only the driver can
provide (a TLS handshake, the account's SCRAM keys, a resource), the stream emits an event, holds any
further input, and resumes when the driver answers (:meth:`tls_established`, :meth:`credentials`,
:meth:`bound`, :meth:`bind_failed`).

Negotiation order (RFC 6120 §4.3, XEP-0170): STARTTLS → SASL → stream restart → resource binding.
Where the driver allows it, an unauthenticated client may register an account first (XEP-0077 §3.1.1):
the stream hands the ``jabber:iq:register`` IQ to the driver (:class:`RegisterRequest`) and writes its
answer (:meth:`C2SStream.register_reply`); any other stanza before authentication still ends the stream.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto

from roost.jid import JID, JIDError, prepare_resource
from roost.stanza import error_reply, iq_result, is_stanza
from roost.stanza.errors import StanzaError, StreamError
from roost.stream.sasl.plain import parse_plain
from roost.stream.sasl.scram import (
    HASH_NAMES,
    SaslFailure,
    ScramCredentials,
    ScramServer,
    mechanism_name,
    parse_mechanism,
)
from roost.util.ids import random_token
from roost.xml.element import Element
from roost.xml.ns import BIND, CLIENT, LIMITS, REGISTER, REGISTER_FEATURE, SASL, SASL_CB, SESSION, STREAM, TLS
from roost.xml.parser import StreamEnd, StreamOpen, StreamParser, XmlStreamError
from roost.xml.serializer import escape_attr, serialize

ALL_MECHANISMS: tuple[str, ...] = (
    *(mechanism_name(h, plus) for h in reversed(HASH_NAMES) for plus in (True, False)),
    "PLAIN",
)


@dataclass(slots=True)
class C2SSettings:
    """What one c2s stream needs to know about the server (built once per listener)."""

    domains: frozenset[str]
    require_encryption: bool = True
    tls_available: bool = True
    mechanisms: Sequence[str] = ALL_MECHANISMS
    max_stanza_bytes: int = 262144
    max_auth_failures: int = 3
    max_bind_failures: int = 5
    idle_seconds: int = 300
    #: Extra post-bind stream features contributed by modules (e.g. stream management).
    extra_features: Callable[[], Sequence[Element]] = field(default=lambda: ())
    #: Whether unauthenticated clients may register an account on this domain (XEP-0077 §3.1.1).
    #: If so, the stream advertises the iq-register feature and emits :class:`RegisterRequest`.
    preauth_register: Callable[[str], bool] = field(default=lambda domain: False)
    #: Serialized pre-authentication <stream:features/> by what they depend on (every login sends
    #: three features elements; they hardly ever differ).
    features_cache: dict[tuple[bool, tuple[str, ...], bool], bytes] = field(default_factory=dict)
    #: The post-authentication ones, with the extra_features() result they were made from.
    bound_features: tuple[Sequence[Element], bytes] | None = None


class State(Enum):
    """Where the stream is in its negotiation."""

    WAIT_HEADER = auto()
    WAIT_STARTTLS_OR_AUTH = auto()
    TLS_PENDING = auto()
    SASL_CHALLENGE = auto()
    LOOKUP_PENDING = auto()
    REGISTER_PENDING = auto()
    WAIT_BIND = auto()
    BIND_PENDING = auto()
    ESTABLISHED = auto()
    CLOSED = auto()


@dataclass(frozen=True, slots=True)
class NeedTls:
    """Start the TLS handshake on the transport now, then call :meth:`C2SStream.tls_established`."""


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    """Look up the account's keys for ``hash_name`` and call :meth:`C2SStream.credentials`.

    ``password`` is set for PLAIN: the driver verifies it against the keys off the event loop and
    passes the result as ``password_ok``.
    """

    domain: str
    username: str
    hash_name: str
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Authenticated:
    """SASL succeeded for ``username``@``domain`` with ``mechanism``."""

    domain: str
    username: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """A SASL attempt failed (for logging and metrics; the stream already answered)."""

    username: str | None
    condition: str


@dataclass(frozen=True, slots=True)
class NeedBind:
    """Bind a resource (``None``: server-generated) and call :meth:`C2SStream.bound` or ``bind_failed``."""

    resource: str | None


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A ``jabber:iq:register`` IQ before authentication (XEP-0077 §3.1.1) for ``domain``.

    Further input is held until the driver answers with :meth:`C2SStream.register_reply`.
    """

    iq: Element
    domain: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The stream is over: write ``final`` (stream error, closing tag) after everything before this
    event has been handled, then close the transport."""

    error: StreamError | None
    final: bytes = b""


StreamEvent = (
    Element | NeedTls | NeedCredentials | Authenticated | AuthFailed | NeedBind | RegisterRequest | Closed
)


class C2SStream:
    """One client connection's XML stream, server role."""

    def __init__(self, settings: C2SSettings, *, secure: bool = False) -> None:
        self.settings = settings
        self.secure = secure
        self.state = State.WAIT_HEADER
        self.parser = StreamParser(settings.max_stanza_bytes)
        self.domain: str | None = None
        self.lang = "en"
        self.stream_id = ""
        self.username: str | None = None
        self.jid: JID | None = None
        self.channel_bindings: Mapping[str, bytes] = {}
        self.auth_failures = 0
        self.bind_failures = 0
        self._out: list[bytes] = []
        self._header_sent = False
        self._held: deque[Element | StreamOpen | StreamEnd] = deque()
        self._scram: ScramServer | None = None
        self._mechanism = ""
        self._bind_iq: Element | None = None
        self._scram_started = False
        self._pending_user: str | None = None

    # -- driver API --------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[StreamEvent]:
        """Feed bytes from the peer."""
        if self.state is State.CLOSED:
            return []
        events: list[StreamEvent] = []
        try:
            parsed = self.parser.feed(data)
        except XmlStreamError as e:
            return self._close(StreamError(e.condition, e.text))
        if self.state is State.ESTABLISHED and not self._held:
            # Hot path: stanzas straight through.
            for item in parsed:
                if item.__class__ is Element and item.name in _STANZA_NAMES and item.ns == CLIENT:
                    events.append(item)
                else:
                    events.extend(self._dispatch(item))
                    if self._closed():
                        break
            return events
        self._held.extend(parsed)
        return self._drain()

    def data_to_send(self) -> bytes:
        """Bytes the stream wants written, in order."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def tls_established(self, channel_bindings: Mapping[str, bytes]) -> list[StreamEvent]:
        """The TLS handshake finished; the client restarts the stream (RFC 6120 §5.4.3.3).

        Its new header may already have arrived (decrypted) and be held: it is processed now.
        """
        self.secure = True
        self.channel_bindings = channel_bindings
        self.state = State.WAIT_HEADER
        return self._drain()

    def credentials(self, creds: ScramCredentials | None, password_ok: bool = False) -> list[StreamEvent]:
        """Answer a :class:`NeedCredentials` (``creds`` None: no such account)."""
        if self.state is not State.LOOKUP_PENDING:
            return []
        if self._scram is not None:
            try:
                challenge = self._scram.challenge(creds)
            except SaslFailure as e:
                return self._sasl_failure(e) + self._drain()
            self._send_sasl("challenge", challenge)
            self.state = State.SASL_CHALLENGE
            return self._drain()
        # PLAIN
        if creds is None or not password_ok:
            return self._sasl_failure(SaslFailure("not-authorized")) + self._drain()
        return self._sasl_success(b"") + self._drain()

    def bound(self, jid: JID) -> list[StreamEvent]:
        """Answer a :class:`NeedBind` with the session's full JID."""
        iq = self._bind_iq
        self._bind_iq = None
        if self.state is not State.BIND_PENDING or iq is None:
            return []
        self.jid = jid
        payload = Element("bind", BIND)
        payload.add("jid", text=str(jid))
        self._send(iq_result(iq, payload))
        self.state = State.ESTABLISHED
        return self._drain()

    def bind_failed(self, error: StanzaError) -> list[StreamEvent]:
        """Answer a :class:`NeedBind` with an error (RFC 6120 §7.6.2, §7.7.2)."""
        iq = self._bind_iq
        self._bind_iq = None
        if self.state is not State.BIND_PENDING or iq is None:
            return []
        self._send(error_reply(iq, error))
        self.state = State.WAIT_BIND
        self.bind_failures += 1
        if self.bind_failures >= self.settings.max_bind_failures:
            # RFC 6120 §7.7.3
            return self._close(StreamError("policy-violation", "too many failed resource bindings"))
        return self._drain()

    def register_reply(self, reply: Element) -> list[StreamEvent]:
        """Answer a :class:`RegisterRequest` with the IQ result or error to write."""
        if self.state is not State.REGISTER_PENDING:
            return []
        self._send(reply)
        self.state = State.WAIT_STARTTLS_OR_AUTH
        return self._drain()

    def close(self, error: StreamError | None = None) -> list[StreamEvent]:
        """Close the stream from our side, with a stream error if given (RFC 6120 §4.4, §4.9)."""
        return self._close(error)

    def hibernate(self) -> bool:
        """Free parser memory of an idle, established stream (see StreamParser.hibernate)."""
        if self.state is not State.ESTABLISHED or self._held:
            return False
        return self.parser.hibernate()

    # -- internals ---------------------------------------------------------------------------------
    def _send(self, el: Element) -> None:
        self._out.append(serialize(el, CLIENT).encode())

    def _closed(self) -> bool:
        return self.state is State.CLOSED

    def _drain(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while self._held and self.state not in _WAITING_STATES:
            item = self._held.popleft()
            events.extend(self._dispatch(item))
            if self.state is State.CLOSED:
                self._held.clear()
                break
        return events

    def _dispatch(self, item: Element | StreamOpen | StreamEnd) -> list[StreamEvent]:
        if isinstance(item, StreamOpen):
            return self._on_open(item)
        if isinstance(item, StreamEnd):
            return self._close(None, peer_closed=True)
        state = self.state
        if state is State.ESTABLISHED:
            if is_stanza(item):
                return [item]
            return self._close(StreamError("unsupported-stanza-type", f"<{item.name}/> is not a stanza"))
        if state is State.WAIT_STARTTLS_OR_AUTH:
            if item.ns == TLS and item.name == "starttls":
                return self._on_starttls()
            if item.ns == SASL:
                return self._on_sasl(item)
            if item.name == "iq" and is_stanza(item) and self._may_register():
                registration = self._on_register_iq(item)
                if registration is not None:
                    return registration
        elif state is State.SASL_CHALLENGE:
            if item.ns == SASL:
                return self._on_sasl(item)
        elif state is State.WAIT_BIND and is_stanza(item):
            return self._on_prebind_stanza(item)
        if is_stanza(item):
            # RFC 6120 §4.3.5: no stanzas before negotiation is complete.
            return self._close(StreamError("not-authorized", "negotiate the stream first"))
        return self._close(StreamError("unsupported-stanza-type", f"unexpected <{item.name}/> here"))

    def _on_open(self, opened: StreamOpen) -> list[StreamEvent]:
        if self.state is not State.WAIT_HEADER:
            return self._close(StreamError("not-well-formed", "unexpected stream header"))
        header = opened.header
        self.lang = header.attrs.get("xml:lang") or "en"
        to = header.attrs.get("to")
        self.stream_id = random_token(12)
        if opened.content_ns != CLIENT:
            # RFC 6120 §4.9.3.10
            return self._close(StreamError("invalid-namespace", "the content namespace is jabber:client"))
        if opened.prefix != "stream":
            # RFC 6120 §4.8.5: the streams namespace prefix is "stream".
            return self._close(StreamError("bad-namespace-prefix", "use the prefix 'stream'"))
        domain = None
        if to:
            try:
                domain = JID.parse(to).domain
            except JIDError:
                domain = None
        if domain is None or domain not in self.settings.domains:
            # RFC 6120 §4.9.3.6 (missing 'to' is treated like an unknown host, §4.7.2)
            self.domain = next(iter(sorted(self.settings.domains)))
            return self._close(StreamError("host-unknown", f"this server does not serve {to!r}"))
        if self.domain is not None and domain != self.domain:
            return self._close(StreamError("host-unknown", "the domain changed on stream restart"))
        self.domain = domain
        version = header.attrs.get("version", "0.9")
        major = version.split(".", 1)[0]
        if not major.isdigit() or int(major) != 1:
            # RFC 6120 §4.7.5: we speak 1.x only; pre-1.0 (no version) is refused too.
            return self._close(StreamError("unsupported-version", "XMPP 1.0 streams only"))
        self._send_header()
        self._send_features()
        return []

    def _send_header(self) -> None:
        assert self.domain is not None
        to = f' to="{escape_attr(str(self.jid.bare))}"' if self.jid is not None else ""
        self._out.append(
            (
                '<?xml version="1.0"?><stream:stream xmlns="jabber:client"'
                f' xmlns:stream="{STREAM}" from="{escape_attr(self.domain)}" id="{self.stream_id}"'
                f' version="1.0" xml:lang="{escape_attr(self.lang)}"{to}>'
            ).encode()
        )
        self._header_sent = True

    def _offered_mechanisms(self) -> list[str]:
        offered = []
        for mech in self.settings.mechanisms:
            if mech == "PLAIN":
                if self.secure:  # PLAIN only over TLS
                    offered.append(mech)
                continue
            parsed = parse_mechanism(mech)
            if parsed is None:
                continue
            if parsed[1] and not self.channel_bindings:
                continue
            offered.append(mech)
        return offered

    def _send_features(self) -> None:
        settings = self.settings
        if self.username is None:
            self.state = State.WAIT_STARTTLS_OR_AUTH
            key = (self.secure, tuple(self.channel_bindings), self._may_register())
            found = settings.features_cache.get(key)
            if found is None:
                if len(settings.features_cache) > 64:
                    settings.features_cache.clear()
                found = settings.features_cache[key] = serialize(self._features(), CLIENT).encode()
        else:
            self.state = State.WAIT_BIND
            extras = settings.extra_features()
            cached = settings.bound_features
            if cached is not None and cached[0] is extras:
                found = cached[1]
            else:  # the first login, or modules were loaded or unloaded since
                found = serialize(self._features(extras), CLIENT).encode()
                settings.bound_features = (extras, found)
        self._out.append(found)

    def _features(self, extras: Sequence[Element] = ()) -> Element:
        features = Element("features", STREAM)
        if self.username is None:
            if not self.secure and self.settings.tls_available:
                tls = features.add("starttls", TLS)
                if self.settings.require_encryption:
                    tls.add("required")
            if self.secure or not self.settings.require_encryption:
                mechs = features.add("mechanisms", SASL)
                for m in self._offered_mechanisms():
                    mechs.add("mechanism", text=m)
                if self._may_register():
                    features.add("register", REGISTER_FEATURE)  # XEP-0077 §8
                if self.channel_bindings:
                    # XEP-0440: which channel-binding types this connection supports.
                    cb = features.add("sasl-channel-binding", SASL_CB)
                    for kind in sorted(self.channel_bindings):
                        cb.add("channel-binding", attrs={"type": kind})
        else:
            features.add("bind", BIND)
            session = features.add("session", SESSION)
            session.add("optional")  # RFC 3921 session, answered for old clients
            limits = features.add("limits", LIMITS)  # XEP-0478
            limits.add("max-bytes", text=str(self.settings.max_stanza_bytes))
            limits.add("idle-seconds", text=str(self.settings.idle_seconds))
            for extra in extras:
                features.append(extra)
        return features

    def _on_starttls(self) -> list[StreamEvent]:
        if self.secure or not self.settings.tls_available:
            return self._close(StreamError("unsupported-feature", "TLS is not available here"))
        self._out.append(b"<proceed xmlns='" + TLS.encode() + b"'/>")
        self.state = State.TLS_PENDING
        # Whatever followed <starttls/> in the clear is discarded (STARTTLS command injection);
        # the next bytes the parser sees are the client's new stream inside TLS.
        self._held.clear()
        self.parser.reset()
        return [NeedTls()]

    # -- in-band registration (XEP-0077 §3.1.1) ------------------------------------------------------
    def _may_register(self) -> bool:
        """Registration is offered where authentication is: over TLS when encryption is required."""
        if self.settings.require_encryption and not self.secure:
            return False
        return self.domain is not None and self.settings.preauth_register(self.domain)

    def _on_register_iq(self, iq: Element) -> list[StreamEvent] | None:
        """A registration IQ before authentication; None if it is not one (the caller refuses it)."""
        payload = iq.first()
        if payload is None or payload.ns != REGISTER or payload.name != "query":
            return None
        to = iq.attrs.get("to")
        if to is not None and to != self.domain:
            return None  # only the server itself takes requests before authentication
        type_ = iq.attrs.get("type")
        if type_ in ("result", "error"):
            return []
        if type_ not in ("get", "set") or "id" not in iq.attrs:
            return self._reply_error(iq, StanzaError("bad-request", "an IQ get or set with an 'id'"))
        if sum(1 for _ in iq.elements()) != 1:
            # RFC 6120 §8.2.3
            return self._reply_error(iq, StanzaError("bad-request", "an IQ get/set carries one payload"))
        assert self.domain is not None
        self.state = State.REGISTER_PENDING
        return [RegisterRequest(iq, self.domain)]

    # -- SASL (RFC 6120 §6) -------------------------------------------------------------------------
    def _on_sasl(self, el: Element) -> list[StreamEvent]:
        if self.settings.require_encryption and not self.secure:
            return self._close(StreamError("policy-violation", "encryption is required"))
        if el.name == "auth":
            return self._on_auth(el)
        if el.name == "response" and self._scram is not None and self.state is State.SASL_CHALLENGE:
            data = self._decode(el)
            if data is None:
                return self._sasl_failure(SaslFailure("incorrect-encoding"))
            try:
                if not self._scram_started:
                    return self._scram_start(data)
                final = self._scram.finish(data)
            except SaslFailure as e:
                return self._sasl_failure(e)
            return self._sasl_success(final)
        if el.name == "abort":
            return self._sasl_failure(SaslFailure("aborted"))
        return self._sasl_failure(SaslFailure("malformed-request", f"unexpected <{el.name}/>"))

    def _on_auth(self, el: Element) -> list[StreamEvent]:
        mech = el.attrs.get("mechanism", "")
        self._scram = None
        self._scram_started = False
        self._mechanism = mech
        if mech not in self._offered_mechanisms():
            if mech == "PLAIN" and not self.secure and "PLAIN" in self.settings.mechanisms:
                return self._sasl_failure(SaslFailure("encryption-required"))
            return self._sasl_failure(SaslFailure("invalid-mechanism"))
        data = self._decode(el)
        if data is None:
            return self._sasl_failure(SaslFailure("incorrect-encoding"))
        if mech == "PLAIN":
            try:
                authzid, username, password = parse_plain(data)
            except SaslFailure as e:
                return self._sasl_failure(e)
            if not self._authzid_ok(authzid, username):
                return self._sasl_failure(SaslFailure("invalid-authzid"))
            assert self.domain is not None
            self.state = State.LOOKUP_PENDING
            self._pending_user = username
            return [NeedCredentials(self.domain, username, "SHA-256", password)]
        parsed = parse_mechanism(mech)
        assert parsed is not None
        hash_name, plus = parsed
        self._scram = ScramServer(
            hash_name,
            plus=plus,
            channel_bindings=self.channel_bindings,
            cb_offered=any(m.endswith("-PLUS") for m in self._offered_mechanisms()),
        )
        if not data:
            # No initial response: empty challenge, the client-first message follows (RFC 6120 §6.4.2).
            self._out.append(b"<challenge xmlns='" + SASL.encode() + b"'/>")
            self.state = State.SASL_CHALLENGE
            return []
        return self._scram_start(data)

    def _scram_start(self, data: bytes) -> list[StreamEvent]:
        assert self._scram is not None and self.domain is not None
        try:
            username = self._scram.start(data)
        except SaslFailure as e:
            return self._sasl_failure(e)
        self._scram_started = True
        if not self._authzid_ok(self._scram.authzid, username):
            return self._sasl_failure(SaslFailure("invalid-authzid"))
        self._pending_user = username
        self.state = State.LOOKUP_PENDING
        return [NeedCredentials(self.domain, username, self._scram_hash())]

    def _scram_hash(self) -> str:
        parsed = parse_mechanism(self._mechanism)
        assert parsed is not None
        return parsed[0]

    def _authzid_ok(self, authzid: str | None, username: str) -> bool:
        """RFC 6120 §6.4.6: an authzid, if given, must be the account's own bare JID."""
        if not authzid:
            return True
        try:
            jid = JID.parse(authzid)
        except JIDError:
            return False
        return jid.local == username and jid.domain == self.domain and jid.resource is None

    def _decode(self, el: Element) -> bytes | None:
        text = el.text.strip()
        if text == "=":  # RFC 6120 §6.4.2: explicitly empty
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None

    def _send_sasl(self, name: str, data: bytes) -> None:
        el = Element(name, SASL)
        if data:
            el.children.append(base64.b64encode(data).decode())
        self._out.append(serialize(el).encode())

    def _sasl_failure(self, failure: SaslFailure) -> list[StreamEvent]:
        user = self._pending_user
        self._scram = None
        self._scram_started = False
        self._pending_user = None
        el = Element("failure", SASL)
        el.add(failure.condition)
        if failure.text:
            el.add("text", attrs={"xml:lang": "en"}, text=failure.text)
        self._out.append(serialize(el).encode())
        self.state = State.WAIT_STARTTLS_OR_AUTH
        events: list[StreamEvent] = [AuthFailed(user, failure.condition)]
        if failure.condition != "aborted":
            self.auth_failures += 1
        if self.auth_failures >= self.settings.max_auth_failures:
            # RFC 6120 §6.4.5
            too_many = StreamError("policy-violation", "too many failed authentication attempts")
            return events + self._close(too_many)
        return events

    def _sasl_success(self, additional: bytes) -> list[StreamEvent]:
        assert self.domain is not None and self._pending_user is not None
        self.username = self._pending_user
        self._pending_user = None
        self._scram = None
        self._send_sasl("success", additional)
        # RFC 6120 §6.4.6: both sides discard the old stream; a new header follows.
        self.parser.reset()
        self._held.clear()
        self.state = State.WAIT_HEADER
        return [Authenticated(self.domain, self.username, self._mechanism)]

    # -- resource binding (RFC 6120 §7) ---------------------------------------------------------------
    def _on_prebind_stanza(self, stanza: Element) -> list[StreamEvent]:
        to = stanza.attrs.get("to")
        if to and to != self.domain:
            # RFC 6120 §7.1: nothing leaves before a resource is bound.
            return self._close(StreamError("not-authorized", "bind a resource first"))
        if stanza.name != "iq" or stanza.attrs.get("type") not in ("get", "set"):
            if stanza.attrs.get("type") in ("error", "result"):
                return []
            return self._reply_error(stanza, StanzaError("not-authorized", "bind a resource first"))
        payload = stanza.first()
        is_bind = payload is not None and payload.ns == BIND and payload.name == "bind"
        if payload is None or not is_bind or stanza.attrs.get("type") != "set":
            return self._reply_error(stanza, StanzaError("not-authorized", "bind a resource first"))
        if "id" not in stanza.attrs:
            return self._reply_error(stanza, StanzaError("bad-request", "an IQ needs an id"))
        resource_el = payload.find("resource", BIND)
        resource: str | None = None
        if resource_el is not None:
            try:
                resource = prepare_resource(resource_el.text)
            except JIDError:
                # RFC 6120 §7.7.2.1
                self.bind_failures += 1
                self._reply_error(stanza, StanzaError("bad-request", "resourcepart is not valid"))
                if self.bind_failures >= self.settings.max_bind_failures:
                    return self._close(StreamError("policy-violation", "too many failed resource bindings"))
                return []
        self._bind_iq = stanza
        self.state = State.BIND_PENDING
        return [NeedBind(resource)]

    def _reply_error(self, stanza: Element, error: StanzaError) -> list[StreamEvent]:
        self._send(error_reply(stanza, error))
        return []

    # -- closing ----------------------------------------------------------------------------------------
    def _close(self, error: StreamError | None, peer_closed: bool = False) -> list[StreamEvent]:
        if self.state is State.CLOSED:
            return []
        final: list[bytes] = []
        if error is not None:
            if not self._header_sent:
                # RFC 6120 §4.9.1.2: open our stream first, then send the error.
                if self.domain is None:
                    self.domain = next(iter(sorted(self.settings.domains)))
                if not self.stream_id:
                    self.stream_id = random_token(12)
                self._send_header()
            final.append(serialize(error.to_element(), CLIENT).encode())
        if self._header_sent:
            final.append(b"</stream:stream>")
        self.state = State.CLOSED
        # Not in _out: stanzas the peer sent before closing are still being answered (RFC 6120 §4.4).
        return [Closed(error, b"".join(final))]


_STANZA_NAMES = frozenset(("message", "presence", "iq"))
_WAITING_STATES = frozenset(
    (State.TLS_PENDING, State.LOOKUP_PENDING, State.REGISTER_PENDING, State.BIND_PENDING)
)
