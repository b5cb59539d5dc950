"""The client side of a client-to-server stream: the stream core in the initiating role.

For tests (with :class:`roost.stream.pair.StreamPair`, no sockets), tools and, with other features
and ``jabber:server``, the outgoing half of server-to-server links. Negotiation: STARTTLS when
offered (or required by us), SASL SCRAM (``-PLUS`` when the driver passes channel bindings) or PLAIN
over TLS, then resource binding. The driver opens the stream with :meth:`C2SClientStream.start`, does
the TLS handshake on :class:`NeedTls` and reports it with :meth:`C2SClientStream.tls_established`;
events :class:`Authenticated`, :class:`Bound` and :class:`Established` report progress; stanzas
arrive as Elements and go out with :meth:`C2SClientStream.send`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from roost.stream.core import Feature, Role, Stream, StreamEvent
from roost.stream.features.bind import BindClient
from roost.stream.features.sasl import ALL_MECHANISMS, SaslClient
from roost.stream.features.tls import StartTls
from roost.stream.framing import Framing, XmlFraming
from roost.xml.ns import CLIENT


@dataclass(slots=True)
class ClientSettings:
    """Who logs in where, and how."""

    domain: str
    username: str
    password: str
    resource: str | None = None
    #: Refuse to authenticate over a stream that is not encrypted.
    require_tls: bool = True
    #: In order of preference (the strongest first).
    mechanisms: Sequence[str] = ALL_MECHANISMS
    lang: str = "en"
    max_stanza_bytes: int = 262144
    #: More features (after the built-in ones), e.g. a stream management client.
    features: Sequence[Feature] = field(default_factory=tuple)


class C2SClientStream(Stream):
    """One client's stream to its server (initiating role, ``jabber:client``)."""

    def __init__(
        self, settings: ClientSettings, *, secure: bool = False, framing: Framing | None = None
    ) -> None:
        self.settings = settings
        self._tls = StartTls(required=settings.require_tls)
        super().__init__(
            framing if framing is not None else XmlFraming(settings.max_stanza_bytes),
            [
                self._tls,
                SaslClient(settings.username, settings.password, mechanisms=settings.mechanisms),
                BindClient(settings.resource),
                *settings.features,
            ],
            role=Role.INITIATING,
            content_ns=CLIENT,
            secure=secure,
        )

    def open(self) -> None:
        """Send the initial stream header (RFC 6120 §4.2)."""
        self.start(self.settings.domain, lang=self.settings.lang)

    def tls_established(self, channel_bindings: Mapping[str, bytes]) -> list[StreamEvent]:
        """The TLS handshake finished: the stream restarts inside it (RFC 6120 §5.4.3.3)."""
        return self._tls.established(self, channel_bindings)
