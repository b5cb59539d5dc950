"""The server side of a client-to-server stream: the stream core with the c2s features.

Bytes (or WebSocket messages, or BOSH payloads) go in through :meth:`C2SStream.receive_data`; the
stream answers with bytes to write (:meth:`C2SStream.data_to_send`) and events for the driver (the
transport/session layer), which owns the socket, the storage and the session table. Where
negotiation needs something only the driver can provide (a TLS handshake, the account's SCRAM keys,
a resource), the stream emits an event, holds any further input, and resumes when the driver answers
(:meth:`tls_established`, :meth:`credentials`, :meth:`bound`, :meth:`bind_failed`,
:meth:`register_reply`).

Negotiation order (RFC 6120 §4.3, XEP-0170): STARTTLS → SASL → stream restart → resource binding,
each a feature of :mod:`roost.stream.features`; the stream itself is :class:`roost.stream.core.Stream`.
Modules add post-authentication features (``extra_features``) and, through ``C2SSettings.features``,
whole negotiation or nonza features (stream management).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto

from roost.jid import JID
from roost.stanza.errors import StanzaError
from roost.stream.core import Closed, Feature, Phase, Role, Stream, StreamEvent
from roost.stream.events import (
    Authenticated,
    AuthFailed,
    NeedBind,
    NeedCredentials,
    NeedTls,
    RegisterRequest,
)
from roost.stream.features.bind import BindServer, ExtraFeatures, LegacySession, Limits
from roost.stream.features.register import PreAuthRegister
from roost.stream.features.sasl import ALL_MECHANISMS, SaslServer
from roost.stream.features.sasl2 import (
    NeedToken,
    NeedUpgrades,
    Sasl2Login,
    Sasl2Server,
    ScramUpgrade,
    StoredToken,
    StoreUpgrade,
)
from roost.stream.features.tls import StartTls
from roost.stream.framing import Framing, XmlFraming
from roost.stream.sasl.scram import ScramCredentials
from roost.xml.element import Element
from roost.xml.ns import CLIENT

__all__ = [
    "ALL_MECHANISMS",
    "AuthFailed",
    "Authenticated",
    "C2SSettings",
    "C2SStream",
    "Closed",
    "NeedBind",
    "NeedCredentials",
    "NeedTls",
    "NeedToken",
    "NeedUpgrades",
    "RegisterRequest",
    "Sasl2Login",
    "ScramUpgrade",
    "State",
    "StoreUpgrade",
    "StreamEvent",
]


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
    #: Extra post-bind stream features contributed by modules (advertised only).
    extra_features: Callable[[], Sequence[Element]] = field(default=lambda: ())
    #: Whether unauthenticated clients may register an account on this domain (XEP-0077 §3.1.1).
    #: If so, the stream advertises the iq-register feature and emits :class:`RegisterRequest`.
    preauth_register: Callable[[str], bool] = field(default=lambda domain: False)
    #: More features for each stream (negotiation steps or nonza handlers, e.g. stream management):
    #: called once per stream, after the built-in ones.
    features: Callable[[], Sequence[Feature]] = field(default=lambda: ())
    #: XEP-0386: the namespaces of features a Bind2 request may enable inline (carbons, CSI, SM).
    bind2_features: Callable[[], Sequence[str]] = field(default=lambda: ())
    #: XEP-0484: offer FAST token authentication in SASL2.
    fast: bool = True
    #: XEP-0480: the SCRAM hashes a client may add keys for in a SASL2 upgrade task.
    scram_upgrades: Sequence[str] = ()
    #: Serialized <stream:features/> by what they depend on (every login sends three features
    #: elements; they hardly ever differ).
    features_cache: dict[Hashable, tuple[bytes, bool]] = field(default_factory=dict)
    #: The advertise-only features, which keep no per-stream state: made once, shared by all streams.
    shared_features: tuple[Feature, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        self.shared_features = (
            LegacySession(),
            Limits(self.max_stanza_bytes, self.idle_seconds),
            ExtraFeatures(self.extra_features),
        )


class State(Enum):
    """Where a c2s stream is in its negotiation (derived from the core's phase and features)."""

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


class C2SStream(Stream):
    """One client connection's stream, receiving (server) role."""

    def __init__(
        self, settings: C2SSettings, *, secure: bool = False, framing: Framing | None = None
    ) -> None:
        self.settings = settings
        framing = framing if framing is not None else XmlFraming(settings.max_stanza_bytes)
        # STARTTLS exists on XML streams only: WebSocket and BOSH are secured by their HTTP layer.
        tls_available = settings.tls_available and isinstance(framing, XmlFraming)
        self._tls = StartTls(available=tls_available, required=settings.require_encryption)
        self._sasl = SaslServer(
            mechanisms=settings.mechanisms,
            require_encryption=settings.require_encryption,
            max_failures=settings.max_auth_failures,
        )
        self._sasl2 = Sasl2Server(
            mechanisms=settings.mechanisms,
            require_encryption=settings.require_encryption,
            max_failures=settings.max_auth_failures,
            bind_features=settings.bind2_features,
            fast=settings.fast,
            upgrades=settings.scram_upgrades,
        )
        self._register = PreAuthRegister(
            settings.preauth_register, require_encryption=settings.require_encryption
        )
        self._bind = BindServer(max_failures=settings.max_bind_failures)
        super().__init__(
            framing,
            [
                self._tls,
                self._sasl,
                self._sasl2,
                self._register,
                self._bind,
                *settings.shared_features,
                *settings.features(),
            ],
            role=Role.RECEIVING,
            content_ns=CLIENT,
            domains=settings.domains,
            secure=secure,
            features_cache=settings.features_cache,
        )

    # -- driver API ------------------------------------------------------------------------------
    def tls_established(self, channel_bindings: Mapping[str, bytes]) -> list[StreamEvent]:
        """The TLS handshake finished; the client restarts the stream (RFC 6120 §5.4.3.3).

        Its new header may already have arrived (decrypted) and be held: it is processed now.
        """
        return self._tls.established(self, channel_bindings)

    def credentials(
        self, creds: ScramCredentials | None, password_ok: bool = False, disabled: str | None = None
    ) -> list[StreamEvent]:
        """Answer a :class:`NeedCredentials` (``creds`` None: no such account; ``disabled``: the
        reason the account is locked, refused with <account-disabled/> after a correct proof)."""
        sasl = self._sasl2 if self.pending_on is self._sasl2 else self._sasl
        return sasl.credentials(self, creds, password_ok, disabled)

    def tokens(self, stored: Sequence[StoredToken], disabled: str | None = None) -> list[StreamEvent]:
        """Answer a :class:`NeedToken` with the client's stored FAST tokens (``disabled``: the
        account is locked, as for :meth:`credentials`)."""
        return self._sasl2.tokens(self, stored, disabled)

    def sasl2_complete(
        self,
        jid: JID | None,
        extra: Sequence[Element] = (),
        bound: Sequence[Element] = (),
        *,
        resumed: bool = False,
    ) -> list[StreamEvent]:
        """Answer a :class:`Sasl2Login`: ``<success/>`` (bound to ``jid`` if the client asked)."""
        return self._sasl2.complete(self, jid, extra, bound, resumed=resumed)

    def sasl2_upgrades(self, needed: Sequence[ScramUpgrade]) -> list[StreamEvent]:
        """Answer a :class:`NeedUpgrades` with the XEP-0480 tasks the account needs (maybe none)."""
        return self._sasl2.upgrades(self, needed)

    def sasl2_upgraded(self, ok: bool = True) -> list[StreamEvent]:
        """Answer a :class:`StoreUpgrade`: the keys are stored (or could not be: ``ok`` False)."""
        return self._sasl2.upgraded(self, ok)

    def sasl2_refuse(self, condition: str, text: str | None = None) -> list[StreamEvent]:
        """Answer a :class:`Sasl2Login` with a SASL failure (RFC 6120 §6.5 ``condition``)."""
        return self._sasl2.refuse(self, condition, text)

    def bound(self, jid: JID) -> list[StreamEvent]:
        """Answer a :class:`NeedBind` with the session's full JID."""
        return self._bind.bound(self, jid)

    def bind_failed(self, error: StanzaError) -> list[StreamEvent]:
        """Answer a :class:`NeedBind` with an error (RFC 6120 §7.6.2, §7.7.2)."""
        return self._bind.bind_failed(self, error)

    def register_reply(self, reply: Element) -> list[StreamEvent]:
        """Answer a :class:`RegisterRequest` with the IQ result or error to write."""
        return self._register.reply(self, reply)

    # -- state, as the driver and the tests knew it ------------------------------------------------
    @property
    def state(self) -> State:
        phase = self.phase
        if phase is Phase.ESTABLISHED:
            return State.ESTABLISHED
        if phase is Phase.CLOSED:
            return State.CLOSED
        if phase is Phase.PENDING:
            waiting = self.pending_on
            if waiting is self._tls:
                return State.TLS_PENDING
            if waiting is self._register:
                return State.REGISTER_PENDING
            if waiting is self._bind or (waiting is self._sasl2 and self.authenticated):
                return State.BIND_PENDING
            return State.LOOKUP_PENDING
        if phase is Phase.WAIT_HEADER:
            return State.WAIT_HEADER
        if self.authenticated:
            return State.WAIT_BIND
        return (
            State.SASL_CHALLENGE
            if self._sasl.challenging or self._sasl2.challenging
            else State.WAIT_STARTTLS_OR_AUTH
        )

    @property
    def auth_failures(self) -> int:
        return self._sasl.failures + self._sasl2.failures

    @property
    def bind_failures(self) -> int:
        return self._bind.failures
