"""Server-to-server streams (``jabber:server``), both roles, on the stream core: sans-IO.

Authentication of the peer server, in order of preference:

* **SASL EXTERNAL** (RFC 6120 §6, XEP-0178): the peer's TLS certificate was validated for its domain
  (RFC 6125) by the driver; the receiving side offers EXTERNAL only then (:attr:`S2SPolicy.offer_external`
  tells it which domains the certificate covers). The initiating side tries it first when offered.
* **Server Dialback** (XEP-0220 with XEP-0185 keys): the initiating server sends
  ``<db:result>`` with a key only it and its authoritative server can compute; the receiving server
  asks that authoritative server (over its own outgoing stream: ``<db:verify>``) whether the key is
  right. The stream id binds the key to this stream.

**Bidirectional streams** (XEP-0288): the receiving side offers ``<bidi/>`` (once TLS is up, when
encryption is required); the initiating side asks for it before authenticating. Then the receiving
server may send stanzas back on the same stream, for the pairs the initiating server authenticated
(from the stream's ``to``, to the peer's domain: §2.2), and the peer needs no stream of its own.

The driver does the I/O: TLS handshakes and certificate checks, connecting to the authoritative
server. Events tell it what to do (:class:`NeedDialbackVerify`) and what happened
(:class:`PeerAuthenticated`, :class:`VerifyAnswer`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from roost.stanza.errors import StreamError
from roost.stream.core import Event, Feature, Phase, Role, Stream, StreamEvent
from roost.stream.features.tls import StartTls
from roost.stream.framing import XmlFraming, _header_attrs
from roost.xml.element import Element
from roost.xml.ns import SASL, SERVER, STREAM
from roost.xml.serializer import escape_attr, escape_text, serialize

DIALBACK: Final = "jabber:server:dialback"
#: XEP-0220 §2.5 stream feature (with <errors/>: we understand dialback errors).
DIALBACK_FEATURE: Final = "urn:xmpp:features:dialback"
#: XEP-0288: the stream feature, and the element that enables bidirectionality.
BIDI_FEATURE: Final = "urn:xmpp:features:bidi"
BIDI: Final = "urn:xmpp:bidi"


class S2SFraming(XmlFraming):
    """The XML stream, with the ``db`` prefix declared on the header (XEP-0220 §2.1: servers look
    for it to know that the other side speaks dialback)."""

    name = "xml-s2s"

    def header(self, attrs: Mapping[str, str], content_ns: str) -> bytes:
        return (
            f'<?xml version="1.0"?><stream:stream xmlns="{content_ns}" xmlns:stream="{STREAM}" '
            f'xmlns:db="{DIALBACK}"{_header_attrs(attrs)}>'
        ).encode()


def send_dialback(stream: Stream, el: Element) -> None:
    """Write a dialback element with the ``db:`` prefix the stream header declared.

    Some servers (ejabberd) match dialback elements by their prefixed name rather than their
    namespace, so ``<result xmlns='jabber:server:dialback'/>`` would go unrecognised there.
    """
    tag = "db:" + el.name
    attrs = "".join(f' {k}="{escape_attr(v)}"' for k, v in el.attrs.items())
    inner = "".join(
        escape_text(c) if isinstance(c, str) else serialize(c, stream.content_ns) for c in el.children
    )
    stream.send_raw((f"<{tag}{attrs}>{inner}</{tag}>" if inner else f"<{tag}{attrs}/>").encode())


def dialback_key(secret: bytes, receiving: str, originating: str, stream_id: str) -> str:
    """XEP-0185 §3: HMAC-SHA256 keyed with SHA-256(secret) over "receiving originating stream-id", hex."""
    key = hashlib.sha256(secret).hexdigest().encode()
    return hmac.new(key, f"{receiving} {originating} {stream_id}".encode(), hashlib.sha256).hexdigest()


def answer_verify(stream: Stream, secret: bytes, el: Element) -> None:
    """XEP-0220 §2.3: we are the authoritative server of ``to``; is the key one we made?"""
    frm, to, sid = el.attrs.get("from", ""), el.attrs.get("to", ""), el.attrs.get("id", "")
    valid = hmac.compare_digest(dialback_key(secret, frm, to, sid), el.text.strip())
    answer = {"from": to, "to": frm, "id": sid, "type": "valid" if valid else "invalid"}
    send_dialback(stream, Element("verify", DIALBACK, answer))


def dialback_error(stream: Stream, remote: str, local: str, condition: str, text: str) -> None:
    """XEP-0220 §2.4: a dialback error is answered on the result; the stream lives on."""
    result = Element("result", DIALBACK, {"from": local, "to": remote, "type": "error"})
    error = result.add("error", SERVER, {"type": "cancel"})
    error.add(condition, "urn:ietf:params:xml:ns:xmpp-stanzas")
    error.add("text", "urn:ietf:params:xml:ns:xmpp-stanzas", text=text)
    send_dialback(stream, result)


# -- events ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PeerAuthenticated(Event):
    """The peer server proved it is ``remote`` (talking to our ``local``), by ``method``."""

    remote: str
    local: str
    method: str  # "external" or "dialback"


@dataclass(frozen=True, slots=True)
class NeedDialbackVerify(Event):
    """Receiving role: ask ``remote``'s authoritative server whether ``key`` is right for this
    stream, then call :meth:`DialbackServer.verified`."""

    remote: str
    local: str
    key: str
    stream_id: str


@dataclass(frozen=True, slots=True)
class VerifyAnswer(Event):
    """Initiating role: the authoritative server answered one of our ``<db:verify/>`` requests."""

    remote: str
    local: str
    stream_id: str
    valid: bool


@dataclass(frozen=True, slots=True)
class BidiEnabled(Event):
    """XEP-0288: this stream carries stanzas both ways once the peer is authenticated."""


@dataclass(frozen=True, slots=True)
class ExternalRefused(Event):
    """Initiating role: the peer refused our certificate (SASL EXTERNAL failed); the stream closes.
    Connect again without trying EXTERNAL (``S2SPolicy.have_certificate = False``): dialback."""


@dataclass
class S2SPolicy:
    """What the driver decided about the peer and our own credentials."""

    #: Our dialback secret (XEP-0185).
    secret: bytes
    #: Domains the peer's certificate was validated for (receiving role: set after TLS).
    cert_domains: Collection[str] = field(default_factory=frozenset)
    #: Refuse dialback: only certificate-authenticated peers (``[s2s] secure_auth``).
    secure_auth: bool = False
    #: Refuse dialback and stanzas on an unencrypted stream (``[s2s] require_encryption``).
    require_encryption: bool = True
    #: Initiating role: we presented a certificate (EXTERNAL is worth trying).
    have_certificate: bool = True
    #: Offer (receiving) and ask for (initiating) bidirectional streams (XEP-0288, ``[s2s] bidi``).
    bidi: bool = True

    def bidi_allowed(self, stream: Stream) -> bool:
        """XEP-0288 §2.2: with TLS in use, STARTTLS comes before bidi; bidi comes before authentication."""
        return self.bidi and not stream.authenticated and (stream.secure or not self.require_encryption)


def _error_condition(el: Element) -> str:
    error = el.find("error", SERVER) or el.find("error", el.ns)
    if error is None:
        return "undefined-condition"
    return next((c.name for c in error.elements() if c.name != "text"), "undefined-condition")


# -- receiving role ----------------------------------------------------------------------------------
class SaslExternalServer(Feature):
    """Receiving role: SASL EXTERNAL for a peer whose certificate covers the domain it claims."""

    def __init__(self, policy: S2SPolicy) -> None:
        self.policy = policy

    def cache_key(self, stream: Stream) -> object:
        return (stream.secure, stream.authenticated, tuple(sorted(self.policy.cert_domains)))

    def advertise(self, stream: Stream) -> Element | None:
        if stream.authenticated or not stream.secure or not self.policy.cert_domains:
            return None
        mechanisms = Element("mechanisms", SASL)
        mechanisms.add("mechanism", text="EXTERNAL")
        return mechanisms

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != SASL or el.name != "auth" or stream.authenticated:
            return None
        if el.attrs.get("mechanism") != "EXTERNAL" or not stream.secure:
            return self._failure(stream, "invalid-mechanism")
        text = el.text.strip()
        try:
            claimed = "" if text in ("", "=") else base64.b64decode(text, validate=True).decode()
        except (binascii.Error, ValueError):
            return self._failure(stream, "incorrect-encoding")
        # XEP-0178 §3: the authorization identity, if given, is the peer's domain; otherwise the
        # domain of the stream header's 'from'.
        remote = claimed or stream.peer_header.get("from", "")
        if not remote or remote not in self.policy.cert_domains:
            return self._failure(stream, "not-authorized")
        stream.send_raw(b"<success xmlns='" + SASL.encode() + b"'/>")
        stream.authenticated = True
        stream.username = remote
        local = stream.domain or ""
        stream.restart()
        return [PeerAuthenticated(remote, local, "external")]

    @staticmethod
    def _failure(stream: Stream, condition: str) -> list[StreamEvent]:
        failure = Element("failure", SASL)
        failure.add(condition)
        stream.send(failure)
        return []


class DialbackServer(Feature):
    """Receiving role: ``<db:result/>`` (the peer wants to be authenticated) and ``<db:verify/>``
    (a server we are authoritative for asks whether a key is ours), during negotiation and after."""

    nonza_namespaces = frozenset((DIALBACK,))

    def __init__(self, policy: S2SPolicy) -> None:
        self.policy = policy
        #: (remote, local) pairs waiting for the authoritative server's answer.
        self.pending: set[tuple[str, str]] = set()

    def cache_key(self, stream: Stream) -> object:
        return (self.policy.secure_auth, stream.authenticated)

    def advertise(self, stream: Stream) -> Element | None:
        if self.policy.secure_auth or stream.authenticated:
            return None
        offer = Element("dialback", DIALBACK_FEATURE)
        offer.add("errors")
        return offer

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != DIALBACK:
            return None
        if el.name == "verify":
            return self._verify(stream, el)
        if el.name == "result":
            if "type" in el.attrs:
                # We never ask on a stream the peer opened: an answer here proves nothing
                # (XEP-0288 §4, the "unsolicited dialback" note of XEP-0220). Ignored.
                return []
            return self._result(stream, el)
        return None

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        return self.handle(stream, el)

    def _verify(self, stream: Stream, el: Element) -> list[StreamEvent]:
        answer_verify(stream, self.policy.secret, el)
        return []

    def _result(self, stream: Stream, el: Element) -> list[StreamEvent]:
        remote, local = el.attrs.get("from", ""), el.attrs.get("to", "")
        if self.policy.secure_auth:
            return self._error(
                stream, remote, local, "not-authorized", "only certificate-authenticated servers"
            )
        if self.policy.require_encryption and not stream.secure:
            return stream.close(StreamError("policy-violation", "encrypt the stream first (STARTTLS)"))
        if local not in stream.domains:
            return self._error(stream, remote, local, "item-not-found", f"{local} is not served here")
        if not remote:
            return stream.close(StreamError("improper-addressing", "db:result needs 'from'"))
        self.pending.add((remote, local))
        return [NeedDialbackVerify(remote, local, el.text.strip(), stream.stream_id)]

    def verified(self, stream: Stream, remote: str, local: str, valid: bool | None) -> list[StreamEvent]:
        """The authoritative server's answer (None: it could not be reached)."""
        if (remote, local) not in self.pending or stream.closed:
            return []
        self.pending.discard((remote, local))
        if valid is None:
            return self._error(stream, remote, local, "remote-server-timeout", "cannot reach your server")
        attrs = {"from": local, "to": remote, "type": "valid" if valid else "invalid"}
        send_dialback(stream, Element("result", DIALBACK, attrs))
        if not valid:
            return stream.close(StreamError("not-authorized", "dialback key is invalid"))
        events: list[StreamEvent] = [PeerAuthenticated(remote, local, "dialback")]
        if stream.phase is not Phase.ESTABLISHED:
            stream.authenticated = True
            events += stream.establish()
        return events

    @staticmethod
    def _error(stream: Stream, remote: str, local: str, condition: str, text: str) -> list[StreamEvent]:
        dialback_error(stream, remote, local, condition, text)
        return []


class BidiServer(Feature):
    """Receiving role: offer XEP-0288 and take the peer's ``<bidi/>`` (no answer is sent, §2.2)."""

    def __init__(self, policy: S2SPolicy) -> None:
        self.policy = policy
        self.enabled = False

    def cache_key(self, stream: Stream) -> object:
        return self.policy.bidi

    def advertise(self, stream: Stream) -> Element | None:
        return Element("bidi", BIDI_FEATURE) if self.policy.bidi_allowed(stream) else None

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != BIDI or el.name != "bidi":
            return None
        if not self.policy.bidi_allowed(stream):
            return stream.close(
                StreamError("policy-violation", "bidi needs TLS first, before authentication")
            )
        self.enabled = True
        return [BidiEnabled()]


# -- initiating role ---------------------------------------------------------------------------------
class S2SAuthClient(Feature):
    """Initiating role: SASL EXTERNAL when offered (and we have a certificate), else dialback.

    Also receives the answers to ``<db:verify/>`` requests the driver sends on this stream.
    """

    nonza_namespaces = frozenset((DIALBACK,))

    def __init__(self, local: str, remote: str, policy: S2SPolicy) -> None:
        self.local = local
        self.remote = remote
        self.policy = policy
        self.method = ""
        self.tried_external = False
        #: XEP-0288 is enabled on this stream (we asked; the peer offered it).
        self.bidi = False
        #: Whether the stream is ready to carry our <db:verify/> requests (past TLS).
        self.ready_for_verify = False

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        if stream.authenticated:
            self.ready_for_verify = True
            return None
        if self.policy.require_encryption and not stream.secure:
            return stream.close(StreamError("policy-violation", "encryption is required"))
        events: list[StreamEvent] = []
        if (
            not self.bidi
            and features.find("bidi", BIDI_FEATURE) is not None
            and self.policy.bidi_allowed(stream)
        ):
            # XEP-0288 §2.2: before SASL or dialback.
            self.bidi = True
            stream.send_raw(b"<bidi xmlns='" + BIDI.encode() + b"'/>")
            events.append(BidiEnabled())
        mechanisms = features.find("mechanisms", SASL)
        offered = (
            {m.text.strip() for m in mechanisms.elements("mechanism")} if mechanisms is not None else set()
        )
        if (
            "EXTERNAL" in offered
            and stream.secure
            and self.policy.have_certificate
            and not self.tried_external
        ):
            self.tried_external = True
            self.method = "external"
            auth = Element("auth", SASL, {"mechanism": "EXTERNAL"})
            auth.children.append(base64.b64encode(self.local.encode()).decode())
            stream.send(auth)
            return events
        return events + self._dialback(stream)

    def _dialback(self, stream: Stream) -> list[StreamEvent]:
        self.method = "dialback"
        self.ready_for_verify = True
        key = dialback_key(self.policy.secret, self.remote, self.local, stream.stream_id)
        result = Element("result", DIALBACK, {"from": self.local, "to": self.remote})
        result.children.append(key)
        send_dialback(stream, result)
        return []

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns == SASL and self.method == "external":
            if el.name == "success":
                stream.authenticated = True
                stream.restart()  # RFC 6120 §6.4.6; the new features are empty: established
                return [PeerAuthenticated(self.remote, self.local, "external")]
            if el.name == "failure":
                # XEP-0178 §3: try something else. Some servers ignore dialback on the stream where
                # EXTERNAL failed (ejabberd 23), so close it; the driver reconnects for dialback.
                return [ExternalRefused(), *stream.close()]
            return None
        if el.ns != DIALBACK:
            return None
        if el.name == "verify" and "type" not in el.attrs and self.bidi:
            # Bidi: the peer asks us, on our stream, as the authoritative server of a key.
            answer_verify(stream, self.policy.secret, el)
            return []
        if el.name == "result" and "type" not in el.attrs and self.bidi and stream.authenticated:
            # Bidi: the peer would authenticate another domain pair on our stream (§2.2 "target
            # piggybacking"); not supported here, so it opens a stream of its own (XEP-0220 §2.4).
            frm, to = el.attrs.get("from", ""), el.attrs.get("to", "")
            dialback_error(stream, frm, to, "not-acceptable", "open a stream of your own for this pair")
            return []
        if el.name == "verify":
            valid = el.attrs.get("type") == "valid"
            # from/to as the authoritative server wrote them: from = the remote, to = us.
            return [
                VerifyAnswer(el.attrs.get("from", ""), el.attrs.get("to", ""), el.attrs.get("id", ""), valid)
            ]
        if el.name == "result" and self.method == "dialback" and not stream.authenticated:
            type_ = el.attrs.get("type")
            if type_ == "valid":
                stream.authenticated = True
                return [PeerAuthenticated(self.remote, self.local, "dialback"), *stream.establish()]
            condition = _error_condition(el) if type_ == "error" else "not-authorized"
            return stream.close(StreamError("not-authorized", f"dialback refused ({condition})"))
        return None

    def nonza(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        return self.handle(stream, el)


# -- builders ----------------------------------------------------------------------------------------
def receiving_stream(
    policy: S2SPolicy, domains: frozenset[str], *, tls_available: bool, max_stanza_bytes: int = 262144
) -> tuple[Stream, StartTls, SaslExternalServer, DialbackServer]:
    """An incoming s2s stream and its features (the driver answers through them)."""
    tls = StartTls(available=tls_available, required=policy.require_encryption)
    external = SaslExternalServer(policy)
    dialback = DialbackServer(policy)
    features = [tls, BidiServer(policy), external, dialback]
    stream = Stream(S2SFraming(max_stanza_bytes), features, content_ns=SERVER, domains=domains)
    return stream, tls, external, dialback


def initiating_stream(
    local: str, remote: str, policy: S2SPolicy, *, tls_available: bool, max_stanza_bytes: int = 262144
) -> tuple[Stream, StartTls, S2SAuthClient]:
    """An outgoing s2s stream from ``local`` to ``remote`` (call ``stream.start(remote, from_=local)``)."""
    tls = StartTls(available=tls_available, required=policy.require_encryption)
    auth = S2SAuthClient(local, remote, policy)
    stream = Stream(S2SFraming(max_stanza_bytes), [tls, auth], role=Role.INITIATING, content_ns=SERVER)
    return stream, tls, auth


Verifier = Callable[[str, str, str, str], None]
