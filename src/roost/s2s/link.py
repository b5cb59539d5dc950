"""s2s connections: the thin drivers around the sans-IO s2s streams (:mod:`roost.stream.s2s`).

:class:`IncomingS2S` is a stream another server opened to us: it authenticates the peer (SASL
EXTERNAL when its certificate validates, else dialback verified through :class:`Federation`) and
hands the peer's stanzas to ``Router.from_remote``, in order, rate limited per remote domain.
:class:`OutgoingS2S` is one we opened for one (local domain, remote domain) pair: it authenticates us
(EXTERNAL first, then dialback), then carries our stanzas, and the ``<db:verify/>`` requests of our
incoming streams. Both write through one batched buffer per event-loop turn, TLS over memory BIOs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from roost.s2s.certs import chain_of, valid_for
from roost.stanza.errors import StreamError
from roost.stream.core import Established, StreamEvent
from roost.stream.events import NeedTls
from roost.stream.features.tls import StartTls
from roost.stream.s2s import (
    DIALBACK,
    DialbackServer,
    ExternalRefused,
    NeedDialbackVerify,
    PeerAuthenticated,
    S2SAuthClient,
    S2SPolicy,
    VerifyAnswer,
    initiating_stream,
    receiving_stream,
    send_dialback,
)
from roost.transports.link import StreamConnection
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.s2s.manager import Federation, OutgoingLink

log = logging.getLogger("roost.s2s")

class IncomingS2S(StreamConnection):
    """A stream another server opened to us."""


    kind = "s2s"

    def __init__(self, server: Server, federation: Federation) -> None:
        super().__init__(server, "s2s")
        self.federation = federation
        self.policy = S2SPolicy(
            federation.secret,
            secure_auth=federation.settings.secure_auth,
            require_encryption=federation.settings.require_encryption,
        )
        self.stream, self.starttls, self.external, self.dialback = receiving_stream(
            self.policy,
            frozenset(server.hosts),
            tls_available=True,
            max_stanza_bytes=server.config.c2s.max_stanza_bytes,
        )
        #: (remote, local) pairs the peer authenticated on this stream.
        self.pairs: set[tuple[str, str]] = set()
        self._remotes: set[str] = set()
        self._locals: set[str] = set()

    def describe(self) -> str:
        remotes = ", ".join(sorted(self._remotes)) or self.stream.peer_header.get("from", "?")
        return f"{remotes} ({self.peer}, incoming)"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        log.debug("%s: s2s connection from %s", self.id, self.peer)
        # A peer that never authenticates does not keep a connection (dialback itself may take a
        # round trip to its authoritative server: twice the connect timeout).
        limit = 2 * self.federation.settings.connect_timeout_seconds
        asyncio.get_running_loop().call_later(limit, self._auth_deadline)

    def _auth_deadline(self) -> None:
        if not self._closed and not self.pairs:
            self.close(StreamError("connection-timeout", "authenticate sooner"))

    def _event(self, event: StreamEvent) -> None:
        if isinstance(event, NeedTls):
            self._start_tls(True, self.federation.server_tls_context())
        elif isinstance(event, NeedDialbackVerify):
            if self.federation.blocked(event.remote):
                self.close(StreamError("policy-violation", "your domain is blocked here"))
                return
            self.server.spawn(self._verify(event), f"{self.id}-verify")
        elif isinstance(event, PeerAuthenticated):
            if self.federation.blocked(event.remote):
                self.close(StreamError("policy-violation", "your domain is blocked here"))
                return
            self.pairs.add((event.remote, event.local))
            self._remotes.add(event.remote)
            self._locals.add(event.local)
            log.info(
                "s2s in: %s → %s authenticated by %s (%s, %s)",
                event.remote,
                event.local,
                event.method,
                self.peer,
                self.id,
            )

    def _tls_done(self) -> None:
        tls = self.tls
        assert tls is not None
        claimed = self.stream.peer_header.get("from")
        if self.federation.settings.secure_auth and claimed:
            why = valid_for(chain_of(tls.obj), claimed, self.federation.store)
            if why is None:
                self.policy.cert_domains = frozenset((claimed,))
            else:
                log.info("%s: certificate of %s not accepted: %s", self.id, claimed, why)
        self._handle(self.starttls.established(self.stream, {}))

    async def _verify(self, event: NeedDialbackVerify) -> None:
        valid = await self.federation.verify(event.remote, event.local, event.key, event.stream_id)
        if not self._closed:
            self._handle(self.dialback.verified(self.stream, event.remote, event.local, valid))

    def _route(self, stanza: Element) -> Awaitable[None] | None:
        frm = stanza.attrs.get("from", "")
        domain = frm.rpartition("@")[2].partition("/")[0] if frm else ""
        if domain and not self.federation.take_token(domain) and not self._paused:
            # Over the domain's rate: stop reading until the bucket refills (nothing is dropped).
            self._pause()
            self.server.spawn(self._slow_down(domain), f"{self.id}-rate")
        return self.server.router.from_remote(self, stanza)

    async def _slow_down(self, domain: str) -> None:
        await asyncio.sleep(self.federation.wait_for_token(domain))
        if self._inbox is None:
            self._resume()

    # -- Link --------------------------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        """Incoming streams carry the peer's stanzas only (no XEP-0288 bidirectional s2s yet)."""

    def may_send_from(self, domain: str) -> bool:
        return domain in self._remotes

    def may_send_to(self, domain: str) -> bool:
        return domain in self._locals

    def _lost(self) -> None:
        if self._remotes:
            log.info("s2s in: stream from %s closed (%s)", ", ".join(sorted(self._remotes)), self.id)


class OutgoingS2S(StreamConnection):
    """A stream we opened from ``local`` to ``remote`` (owned by an :class:`OutgoingLink`)."""


    def __init__(
        self,
        server: Server,
        federation: Federation,
        link: OutgoingLink,
        direct_tls: bool,
        *,
        external: bool = True,
    ) -> None:
        super().__init__(server, "s2s")
        self.federation = federation
        self.link = link
        self.direct_tls = direct_tls
        self.policy = S2SPolicy(
            federation.secret,
            secure_auth=federation.settings.secure_auth,
            require_encryption=federation.settings.require_encryption,
            have_certificate=external,
        )
        self.stream, self.starttls, self.auth = initiating_stream(
            link.local,
            link.remote,
            self.policy,
            tls_available=True,
            max_stanza_bytes=server.config.c2s.max_stanza_bytes,
        )
        self.established = False
        self.method = ""
        self._verifies_sent: set[tuple[str, str, str]] = set()

    def describe(self) -> str:
        return f"{self.link.remote} ({self.peer}, outgoing from {self.link.local})"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.direct_tls:
            self.stream.secure = True
            self._start_tls(False, self.federation.client_tls_context(), self.link.remote)
        else:
            self.stream.start(self.link.remote, from_=self.link.local)
            self._flush_stream()

    def _tls_done(self) -> None:
        tls = self.tls
        assert tls is not None
        why = valid_for(chain_of(tls.obj), self.link.remote, self.federation.store)
        if why is not None:
            if self.federation.settings.secure_auth:
                log.info("%s: refusing %s: %s", self.id, self.link.remote, why)
                self.link.failed(self, "remote-server-not-found")
                self.close(StreamError("policy-violation", "your certificate does not validate"))
                return
            log.info(
                "%s: certificate of %s not validated (%s); dialback decides", self.id, self.link.remote, why
            )
        if self.direct_tls:
            self.stream.start(self.link.remote, from_=self.link.local)
            self._flush_stream()
            return
        self._handle(self.starttls.established(self.stream, {}))

    def _event(self, event: StreamEvent) -> None:
        if isinstance(event, NeedTls):
            self._start_tls(False, self.federation.client_tls_context(), self.link.remote)
        elif isinstance(event, PeerAuthenticated):
            self.method = event.method
        elif isinstance(event, ExternalRefused):
            log.info(
                "%s: %s refused our certificate (SASL EXTERNAL); trying dialback", self.id, self.link.remote
            )
            self.link.skip_external = True
        elif isinstance(event, Established):
            self.established = True
            log.info(
                "s2s out: %s → %s authenticated by %s (%s, %s)",
                self.link.local,
                self.link.remote,
                self.method or "?",
                self.peer,
                self.id,
            )
            self.link.ready(self)
        elif isinstance(event, VerifyAnswer):
            self.federation.verify_answer(event.remote, event.local, event.stream_id, event.valid)

    def _handle(self, events: list[StreamEvent]) -> None:
        super()._handle(events)
        self.send_verifies()

    def send_verifies(self) -> None:
        """Send the ``<db:verify/>`` requests waiting for this stream, once it can carry them."""
        if self._closed or not (self.auth.ready_for_verify or self.established):
            return
        for key, (remote_key, sid) in list(self.link.verify_requests.items()):
            if key in self._verifies_sent:
                continue
            self._verifies_sent.add(key)
            verify = Element("verify", DIALBACK, {"from": self.link.local, "to": self.link.remote, "id": sid})
            verify.children.append(remote_key)
            send_dialback(self.stream, verify)
        self._flush_stream()

    def send(self, stanza: Element) -> None:
        if self._closed or self.stream.closed:
            return
        self.last_active = time.monotonic()
        self.stream.send(stanza)
        self._flush_stream()

    def _route(self, stanza: Element) -> Awaitable[None] | None:
        # No XEP-0288: the peer's stanzas belong on its own stream to us.
        log.debug("%s: ignoring a stanza on our outgoing stream", self.id)
        return None

    def may_send_from(self, domain: str) -> bool:
        return False

    def may_send_to(self, domain: str) -> bool:
        return False

    def _lost(self) -> None:
        self.link.lost(self)


#: Features the receiving stream answers through (re-exported for tests).
__all__ = ["DialbackServer", "IncomingS2S", "OutgoingS2S", "S2SAuthClient", "StartTls"]
