"""SASL (RFC 6120 §6) with SCRAM (RFC 5802/7677, -PLUS with channel binding) and PLAIN, both roles.

Receiving role: the account's keys live in storage, so the feature emits :class:`NeedCredentials`
and holds the stream until the driver answers (:meth:`SaslServer.credentials`). Room for EXTERNAL
(s2s, certificates): another mechanism branch in :meth:`SaslServer._on_auth` and an event asking the
driver to check the peer certificate.

Initiating role (:class:`SaslClient`): picks the strongest offered SCRAM mechanism (-PLUS when the
driver gave channel bindings), or PLAIN over TLS, and verifies the server's signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from roost.jid import JID, JIDError
from roost.stanza.errors import StreamError
from roost.stream.core import Feature, Phase, Role, Stream, StreamEvent
from roost.stream.events import Authenticated, AuthFailed, NeedCredentials
from roost.stream.sasl.plain import parse_plain
from roost.stream.sasl.scram import (
    HASH_NAMES,
    SaslFailure,
    ScramClient,
    ScramCredentials,
    ScramServer,
    mechanism_name,
    parse_mechanism,
    ssdp_string,
    tls_version_code,
)
from roost.xml.element import Element
from roost.xml.ns import SASL, SASL_CB
from roost.xml.serializer import serialize

ALL_MECHANISMS: tuple[str, ...] = (
    *(mechanism_name(h, plus) for h in reversed(HASH_NAMES) for plus in (True, False)),
    "PLAIN",
)
_CB_PREFERENCE = ("tls-exporter", "tls-server-end-point")
_EMPTY_CHALLENGE = b"<challenge xmlns='" + SASL.encode() + b"'/>"


def _decode(el: Element) -> bytes | None:
    text = el.text.strip()
    if text == "=":  # RFC 6120 §6.4.2: explicitly empty
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _sasl_element(name: str, data: bytes | None) -> bytes:
    el = Element(name, SASL)
    if data:
        el.children.append(base64.b64encode(data).decode())
    return serialize(el).encode()


class SaslServer(Feature):
    """Receiving role: ``<mechanisms/>`` before authentication; ``<auth/>`` → ``<success/>``."""

    __slots__ = (
        "_disabled",
        "_mechanism",
        "_pending_user",
        "_scram",
        "_scram_started",
        "challenging",
        "failures",
        "max_failures",
        "mechanisms",
        "pending",
        "require_encryption",
    )

    def __init__(
        self,
        *,
        mechanisms: Sequence[str] = ALL_MECHANISMS,
        require_encryption: bool = True,
        max_failures: int = 3,
    ) -> None:
        self.mechanisms = mechanisms
        self.require_encryption = require_encryption
        self.max_failures = max_failures
        self.failures = 0
        self.challenging = False
        self.pending = False
        self._scram: ScramServer | None = None
        self._scram_started = False
        self._mechanism = ""
        self._pending_user: str | None = None
        #: Why the account may not log in (an operator's lock), told only once the proof checks out.
        self._disabled: str | None = None

    def offered(self, stream: Stream) -> list[str]:
        offered = []
        for mech in self.mechanisms:
            if mech == "PLAIN":
                if stream.secure:  # PLAIN only over TLS
                    offered.append(mech)
                continue
            parsed = parse_mechanism(mech)
            if parsed is None:
                continue
            if parsed[1] and not stream.channel_bindings:
                continue
            offered.append(mech)
        return offered

    def advertise(self, stream: Stream) -> list[Element] | None:
        if stream.authenticated or (self.require_encryption and not stream.secure):
            return None
        mechs = Element("mechanisms", SASL)
        for m in self.offered(stream):
            mechs.add("mechanism", text=m)
        if not stream.channel_bindings:
            return [mechs]
        # XEP-0440: which channel-binding types this connection supports.
        cb = Element("sasl-channel-binding", SASL_CB)
        for kind in sorted(stream.channel_bindings):
            cb.add("channel-binding", attrs={"type": kind})
        return [mechs, cb]

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != SASL or stream.authenticated:
            return None
        if self.require_encryption and not stream.secure:
            return stream.close(StreamError("policy-violation", "encryption is required"))
        if el.name == "auth" and not self.challenging:
            return self._on_auth(stream, el)
        if el.name == "response" and self._scram is not None and self.challenging:
            data = _decode(el)
            if data is None:
                return self._failure(stream, SaslFailure("incorrect-encoding"))
            try:
                if not self._scram_started:
                    return self._scram_start(stream, data)
                final = self._scram.finish(data)
            except SaslFailure as e:
                return self._failure(stream, e)
            return self._success(stream, final)
        if el.name == "abort":
            return self._failure(stream, SaslFailure("aborted"))
        return self._failure(stream, SaslFailure("malformed-request", f"unexpected <{el.name}/>"))

    def credentials(
        self, stream: Stream, creds: ScramCredentials | None, password_ok: bool, disabled: str | None = None
    ) -> list[StreamEvent]:
        """The driver's answer to :class:`NeedCredentials` (``creds`` None: no such account;
        ``disabled``: why the account is locked — said only to someone who proves the password)."""
        if not self.pending:
            return []
        self.pending = False
        self._disabled = disabled
        stream.pending_on = None
        if self._scram is not None:
            try:
                challenge = self._scram.challenge(creds)
            except SaslFailure as e:
                return self._failure(stream, e) + stream.resume()
            self._send_challenge(stream, challenge)
            self.challenging = True
            stream.active = self
            return stream.resume()
        # PLAIN
        if creds is None or not password_ok:
            return self._failure(stream, SaslFailure("not-authorized")) + stream.resume()
        events = self._success(stream, b"")
        if self.pending:
            return events  # SASL2: the driver sets the session up first
        return events + stream.resume(Phase.WAIT_HEADER)

    def _on_auth(self, stream: Stream, el: Element) -> list[StreamEvent]:
        return self._start(stream, el.attrs.get("mechanism", ""), _decode(el))

    def _start(self, stream: Stream, mech: str, data: bytes | None) -> list[StreamEvent]:
        """Begin an exchange with ``mech`` and the initial response (None: it was not valid base64)."""
        self._scram = None
        self._scram_started = False
        self._mechanism = mech
        offered = self.offered(stream)
        if mech not in offered:
            if mech == "PLAIN" and not stream.secure and "PLAIN" in self.mechanisms:
                return self._failure(stream, SaslFailure("encryption-required"))
            return self._failure(stream, SaslFailure("invalid-mechanism"))
        if data is None:
            return self._failure(stream, SaslFailure("incorrect-encoding"))
        if mech == "PLAIN":
            try:
                authzid, username, password = parse_plain(data)
            except SaslFailure as e:
                return self._failure(stream, e)
            if not self._authzid_ok(stream, authzid, username):
                return self._failure(stream, SaslFailure("invalid-authzid"))
            assert stream.domain is not None
            self._pending_user = username
            self._wait(stream)
            return [NeedCredentials(stream.domain, username, "SHA-256", password)]
        parsed = parse_mechanism(mech)
        assert parsed is not None
        hash_name, plus = parsed
        self._scram = ScramServer(
            hash_name,
            plus=plus,
            channel_bindings=stream.channel_bindings,
            cb_offered=any(m.endswith("-PLUS") for m in offered),
            ssdp=ssdp_string(offered, sorted(stream.channel_bindings) if stream.channel_bindings else None),
            tls_version=tls_version_code(stream.channel_bindings),
        )
        self.challenging = True
        stream.active = self
        if not data:
            # No initial response: empty challenge, the client-first message follows (RFC 6120 §6.4.2).
            self._send_challenge(stream, b"")
            return []
        return self._scram_start(stream, data)

    def _wait(self, stream: Stream) -> None:
        self.pending = True
        self.challenging = False
        stream.active = None
        stream.wait(self)

    def _scram_start(self, stream: Stream, data: bytes) -> list[StreamEvent]:
        assert self._scram is not None and stream.domain is not None
        try:
            username = self._scram.start(data)
        except SaslFailure as e:
            return self._failure(stream, e)
        self._scram_started = True
        if not self._authzid_ok(stream, self._scram.authzid, username):
            return self._failure(stream, SaslFailure("invalid-authzid"))
        self._pending_user = username
        self._wait(stream)
        parsed = parse_mechanism(self._mechanism)
        assert parsed is not None
        return [NeedCredentials(stream.domain, username, parsed[0])]

    @staticmethod
    def _authzid_ok(stream: Stream, authzid: str | None, username: str) -> bool:
        """RFC 6120 §6.4.6: an authzid, if given, must be the account's own bare JID."""
        if not authzid:
            return True
        try:
            jid = JID.parse(authzid)
        except JIDError:
            return False
        return jid.local == username and jid.domain == stream.domain and jid.resource is None

    def _failure(self, stream: Stream, failure: SaslFailure) -> list[StreamEvent]:
        user = self._pending_user
        self._scram = None
        self._scram_started = False
        self._pending_user = None
        self.challenging = False
        stream.active = None
        stream.send_raw(serialize(self._failure_element(failure)).encode())
        events: list[StreamEvent] = [AuthFailed(user, failure.condition, self._mechanism)]
        if failure.condition != "aborted":
            self.failures += 1
        if self.failures >= self.max_failures:
            # RFC 6120 §6.4.5
            too_many = StreamError("policy-violation", "too many failed authentication attempts")
            return events + stream.close(too_many)
        return events

    def _send_challenge(self, stream: Stream, data: bytes) -> None:
        stream.send_raw(_sasl_element("challenge", data) if data else _EMPTY_CHALLENGE)

    def _failure_element(self, failure: SaslFailure) -> Element:
        el = Element("failure", SASL)
        el.add(failure.condition)
        if failure.text:
            el.add("text", attrs={"xml:lang": "en"}, text=failure.text)
        return el

    def _success(self, stream: Stream, additional: bytes) -> list[StreamEvent]:
        assert stream.domain is not None and self._pending_user is not None
        if self._disabled is not None:
            # RFC 6120 §6.5.1, after the proof: nobody learns of the lock without the password.
            return self._failure(stream, SaslFailure("account-disabled", self._disabled))
        stream.username = self._pending_user
        stream.authenticated = True
        self._pending_user = None
        self._scram = None
        self.challenging = False
        stream.send_raw(_sasl_element("success", additional) if additional else _SUCCESS)
        # RFC 6120 §6.4.6: both sides discard the old stream; a new header follows.
        stream.restart()
        return [Authenticated(stream.domain, stream.username, self._mechanism)]


_SUCCESS = b"<success xmlns='" + SASL.encode() + b"'/>"


class SaslClient(Feature):
    """Initiating role: authenticate as ``username`` with ``password``."""

    __slots__ = ("_scram", "mechanism", "mechanisms", "password", "username")

    def __init__(self, username: str, password: str, *, mechanisms: Sequence[str] = ALL_MECHANISMS) -> None:
        self.username = username
        self.password = password
        self.mechanisms = mechanisms
        self.mechanism = ""
        self._scram: ScramClient | None = None

    def select(self, stream: Stream, features: Element) -> list[StreamEvent] | None:
        offer = features.find("mechanisms", SASL)
        if offer is None or stream.authenticated:
            return None
        offered = [m.text for m in offer.elements("mechanism")]
        cb_offer = features.find("sasl-channel-binding", SASL_CB)
        cb_types = [c.attrs.get("type", "") for c in cb_offer.elements()] if cb_offer is not None else []
        for mech in self.mechanisms:
            if mech not in offered:
                continue
            if mech == "PLAIN":
                if not stream.secure:
                    continue
                self.mechanism = mech
                data = b"\0" + self.username.encode() + b"\0" + self.password.encode()
                return self._auth(stream, data)
            parsed = parse_mechanism(mech)
            if parsed is None:
                continue
            hash_name, plus = parsed
            usable = [
                t for t in _CB_PREFERENCE if t in stream.channel_bindings and (not cb_types or t in cb_types)
            ]
            cb_type = usable[0] if usable else None
            if plus and cb_type is None:
                continue
            self.mechanism = mech
            self._scram = ScramClient(
                hash_name,
                self.username,
                self.password,
                plus=plus,
                cb_type=cb_type,
                cb_data=stream.channel_bindings.get(cb_type, b"") if cb_type else b"",
                server_supports_plus=any(m.endswith("-PLUS") for m in offered),
                ssdp=ssdp_string(offered, cb_types if cb_offer is not None else None),
                tls_version=tls_version_code(stream.channel_bindings) if stream.secure else "",
            )
            return self._auth(stream, self._scram.first())
        return stream.close(StreamError("policy-violation", "no usable SASL mechanism offered"))

    def _auth(self, stream: Stream, data: bytes) -> list[StreamEvent]:
        el = Element("auth", SASL, {"mechanism": self.mechanism})
        el.children.append(base64.b64encode(data).decode() if data else "=")
        stream.send(el)
        return []

    def handle(self, stream: Stream, el: Element) -> list[StreamEvent] | None:
        if el.ns != SASL or stream.role is not Role.INITIATING:
            return None
        data = _decode(el)
        try:
            if el.name == "challenge" and self._scram is not None and data is not None:
                stream.send_raw(_sasl_element("response", self._scram.respond(data)))
                return []
            if el.name == "success":
                if self._scram is not None:
                    if data is None:
                        raise SaslFailure("incorrect-encoding")
                    self._scram.verify(data)
                stream.authenticated = True
                stream.username = self.username
                assert stream.domain is not None
                stream.restart()  # RFC 6120 §6.4.6
                return [Authenticated(stream.domain, self.username, self.mechanism)]
            if el.name == "failure":
                condition = next((c.name for c in el.elements() if c.name != "text"), "not-authorized")
                return [AuthFailed(self.username, condition), *stream.close()]
        except SaslFailure as e:
            # The server could not prove it knows the password: not the server we meant.
            refused = StreamError("policy-violation", e.text)
            return [AuthFailed(self.username, e.condition), *stream.close(refused)]
        return stream.close(StreamError("unsupported-stanza-type", f"unexpected <{el.name}/> during SASL"))
