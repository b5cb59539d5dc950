"""Federation: outgoing links per (local domain, remote domain), dialback verification, policies.

:class:`Federation` is the route table's remote side (:class:`~roost.core.routes.RemoteRouter`).
A stanza for another domain goes to the :class:`OutgoingLink` of its (sender's domain, recipient's
domain) pair: written at once when the link is up, else queued (bounded) while the link resolves
the domain (:mod:`roost.s2s.dns`), connects (Happy Eyeballs across the addresses), encrypts and
authenticates. When that fails, every queued stanza bounces with ``remote-server-not-found`` (no
such server, refused, policy) or ``remote-server-timeout`` (it took too long) — never an error in
reply to an error (RFC 6120 §8.3.1, §10.4.3). Links idle for ``idle_timeout_seconds`` close; the
next stanza opens them again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time
from asyncio import staggered
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from roost.config.schema import S2SSection
from roost.core.hooks import StanzaEvent
from roost.s2s.certs import load_store
from roost.s2s.dns import DnsResolver, NoService, Resolver
from roost.s2s.link import IncomingS2S, OutgoingS2S
from roost.stanza import error_reply
from roost.stanza.errors import StanzaError
from roost.xml.element import Element

if TYPE_CHECKING:
    from roost.core.server import Server
    from roost.transports.certificates import Certificates

log = logging.getLogger("roost.s2s")

#: Delay between connection attempts to the addresses of one host (RFC 8305 §5).
HAPPY_EYEBALLS_DELAY = 0.25


class OutgoingLink:
    """Our side of (local, remote): a queue while connecting, then one authenticated stream."""

    def __init__(self, federation: Federation, local: str, remote: str) -> None:
        self.federation = federation
        self.local = local
        self.remote = remote
        self.queue: deque[Element] = deque()
        self.conn: OutgoingS2S | None = None
        self.up = False
        self.connecting: asyncio.Task[None] | None = None
        self.last_used = time.monotonic()
        #: Dialback keys to verify for our incoming streams: (remote, local, stream id) → (key, id).
        self.verify_requests: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._failure: str | None = None
        self._settled = asyncio.Event()
        #: The peer refused our certificate once: use dialback from now on.
        self.skip_external = False

    def send(self, stanza: Element) -> None:
        self.last_used = time.monotonic()
        conn = self.conn
        if self.up and conn is not None and not conn.closed:
            conn.send(stanza)
            return
        if len(self.queue) >= self.federation.settings.max_queue:
            self.federation.bounce(
                stanza, StanzaError("resource-constraint", f"too many stanzas queued for {self.remote}")
            )
            return
        self.queue.append(stanza)
        self.ensure_connecting()

    def ensure_connecting(self) -> None:
        if self.connecting is not None or (self.conn is not None and not self.conn.closed):
            return
        self.up = False
        self._failure = None
        self._settled = asyncio.Event()
        self.connecting = self.federation.server.spawn(self._connect(), f"s2s-{self.local}-{self.remote}")

    async def _connect(self) -> None:
        settings = self.federation.settings
        try:
            await asyncio.wait_for(self._dial(), settings.connect_timeout_seconds)
        except TimeoutError:
            log.info("s2s out: %s → %s timed out", self.local, self.remote)
            self._fail("remote-server-timeout")
        except (OSError, NoService) as e:
            log.info("s2s out: %s → %s failed: %s", self.local, self.remote, e)
            self._fail("remote-server-not-found")
        except Exception:
            # A bug must not swallow what waited: every queued stanza is answered (never silently lost).
            log.exception("s2s out: %s → %s: connecting failed", self.local, self.remote)
            self._fail("internal-server-error")
        finally:
            self.connecting = None

    async def _dial(self) -> None:
        federation = self.federation
        targets = await federation.resolver.targets(self.remote)
        loop = asyncio.get_running_loop()
        source = federation.settings.source_address
        # Happy Eyeballs (RFC 8305): asyncio's own where the loop has it; uvloop, which `roost run`
        # uses when installed, has no such parameter, so there the race is ours (happy_eyeballs()).
        native = _has_happy_eyeballs(loop)
        eyeballs: dict[str, Any] = {"happy_eyeballs_delay": HAPPY_EYEBALLS_DELAY} if native else {}
        errors: list[str] = []
        for target in targets:
            for _ in range(2):
                tried_external = not self.skip_external
                conn = OutgoingS2S(
                    federation.server, federation, self, target.direct_tls, external=tried_external
                )
                self._settled = asyncio.Event()
                try:
                    if native:
                        await loop.create_connection(
                            lambda conn=conn: conn,
                            target.host,
                            target.port,
                            local_addr=(source, 0) if source else None,
                            **eyeballs,
                        )
                    else:
                        sock = await happy_eyeballs(target.host, target.port, source)
                        await loop.create_connection(functools.partial(_same, conn), sock=sock)
                except OSError as e:
                    errors.append(f"{target.host}:{target.port}: {e.strerror or e}")
                    break
                self.conn = conn
                log.debug(
                    "s2s out: %s → %s connected to %s:%d", self.local, self.remote, target.host, target.port
                )
                # Wait until the stream is authenticated (ready) or lost.
                await self._settled.wait()
                if self.up:
                    return
                if tried_external and self.skip_external:
                    continue  # the peer refused our certificate: once more, with dialback
                raise OSError(self._failure or "the stream closed before authentication")
        raise OSError("; ".join(errors) or "no address")

    def ready(self, conn: OutgoingS2S) -> None:
        """The stream is authenticated: send what waited."""
        self.up = True
        self._settled.set()
        queue = self.queue
        while queue:
            conn.send(queue.popleft())

    def failed(self, conn: OutgoingS2S, condition: str) -> None:
        self._failure = condition

    def lost(self, conn: OutgoingS2S) -> None:
        if conn is not self.conn:
            return
        was_up = self.up
        self.up = False
        self.conn = None
        self._settled.set()
        if was_up:
            log.info("s2s out: %s → %s closed", self.local, self.remote)
            if self.queue:
                self.ensure_connecting()
        # verify requests that were sent on it get no answer: the waiters time out.

    def _fail(self, condition: str) -> None:
        conn = self.conn
        self.conn = None
        if conn is not None and not conn.closed:
            conn.abort()
        queue, self.queue = self.queue, deque()
        error = StanzaError(condition, f"cannot reach {self.remote}")
        for stanza in queue:
            self.federation.bounce(stanza, error)
        for key in list(self.verify_requests):
            self.federation.verify_answer(*key, valid=None)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Federation:
    """The remote side of the route table (s2s out) and what incoming streams need from it."""

    def __init__(
        self, server: Server, settings: S2SSection, secret: bytes, resolver: Resolver | None = None
    ) -> None:
        self.server = server
        self.settings = settings
        self.secret = secret
        self.resolver: Resolver = resolver or DnsResolver()
        self.links: dict[tuple[str, str], OutgoingLink] = {}
        #: Incoming XEP-0288 streams that may carry our stanzas, by (local, remote) pair.
        self.bidi_in: dict[tuple[str, str], IncomingS2S] = {}
        self.store = load_store(settings.ca_file)
        self._verifies: dict[tuple[str, str, str], asyncio.Future[bool | None]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        #: Contexts made from ``server.certificates`` (made again when a reload replaces them).
        self._certificates: Certificates | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self._client_ctx: dict[str, ssl.SSLContext] = {}
        self._blocked = tuple(d.lower().rstrip(".") for d in settings.blocklist)
        self._sweeper: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self._sweeper = self.server.spawn(self._sweep(), "s2s-idle")

    # -- RemoteRouter --------------------------------------------------------------------------------
    def accepts(self, domain: str) -> bool:
        return not self.blocked(domain)

    def route(self, event: StanzaEvent) -> None:
        local = event.frm.domain
        remote = event.to.domain
        if local not in self.server.hosts:
            self.bounce(event.stanza, StanzaError("service-unavailable", "no federation for this sender"))
            return
        bidi = self.bidi_in.get((local, remote))
        if bidi is not None and not bidi.closed:
            link = self.links.get((local, remote))
            if link is None or not link.up:
                # The peer's bidirectional stream carries this pair: no stream of our own needed.
                bidi.send(event.stanza)
                return
        self.link(local, remote).send(event.stanza)

    def bidi_up(self, local: str, remote: str, conn: IncomingS2S) -> None:
        """An incoming XEP-0288 stream authenticated (remote → local): it carries local → remote too.
        Stanzas queued for a stream of our own still connecting go out on it at once."""
        self.bidi_in[(local, remote)] = conn
        link = self.links.get((local, remote))
        if link is not None and not link.up:
            queue, link.queue = link.queue, deque()
            for stanza in queue:
                conn.send(stanza)

    def bidi_down(self, conn: IncomingS2S) -> None:
        for key in [k for k, c in self.bidi_in.items() if c is conn]:
            del self.bidi_in[key]

    def link(self, local: str, remote: str) -> OutgoingLink:
        key = (local, remote)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = OutgoingLink(self, local, remote)
        return link

    # -- policies ------------------------------------------------------------------------------------
    def blocked(self, domain: str) -> bool:
        domain = domain.lower()
        return any(domain == b or domain.endswith("." + b) for b in self._blocked)

    def take_token(self, domain: str) -> bool:
        """Per-remote-domain token bucket (``rate_limit`` per second, burst of twice that)."""
        rate = self.settings.rate_limit
        now = time.monotonic()
        tokens, stamp = self._buckets.get(domain, (2 * rate, now))
        tokens = min(2 * rate, tokens + (now - stamp) * rate) - 1
        self._buckets[domain] = (tokens, now)
        return tokens >= 0

    def wait_for_token(self, domain: str) -> float:
        tokens, _ = self._buckets.get(domain, (0.0, 0.0))
        return max(0.0, -tokens / self.settings.rate_limit)

    # -- dialback ------------------------------------------------------------------------------------
    async def verify(self, remote: str, local: str, key: str, stream_id: str) -> bool | None:
        """Ask ``remote``'s authoritative server whether ``key`` is valid (XEP-0220 §2.3)."""
        ident = (remote, local, stream_id)
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._verifies[ident] = future
        link = self.link(local, remote)
        link.verify_requests[ident] = (key, stream_id)
        link.ensure_connecting()
        if link.conn is not None:
            link.conn.send_verifies()
        try:
            return await asyncio.wait_for(future, self.settings.connect_timeout_seconds)
        except TimeoutError:
            return None
        finally:
            self._verifies.pop(ident, None)
            link.verify_requests.pop(ident, None)

    def verify_answer(self, remote: str, local: str, stream_id: str, valid: bool | None) -> None:
        future = self._verifies.get((remote, local, stream_id))
        if future is not None and not future.done():
            future.set_result(valid)

    # -- errors --------------------------------------------------------------------------------------
    def bounce(self, stanza: Element, error: StanzaError) -> None:
        """Answer a stanza we could not deliver (never an error to an error; presence: dropped)."""
        if stanza.attrs.get("type") == "error" or stanza.name == "presence":
            return
        if stanza.name == "iq" and stanza.attrs.get("type") == "result":
            return
        reply = error_reply(stanza, error)
        self.server.router.send(reply)

    # -- TLS -----------------------------------------------------------------------------------------
    def _current(self) -> Certificates:
        certificates = self.server.certificates
        if certificates is not self._certificates:
            self._certificates, self._server_ctx, self._client_ctx = certificates, None, {}
        return certificates

    def server_tls_context(self) -> ssl.SSLContext:
        """Receiving side: the certificate for the name the peer asks for by SNI; the peer's
        certificate is asked for only with secure_auth."""
        certificates = self._current()
        if self._server_ctx is None:

            def ask_peer(ctx: ssl.SSLContext) -> None:
                if self.settings.secure_auth:
                    ctx.verify_mode = ssl.CERT_OPTIONAL
                    _load_cas(ctx, self.settings.ca_file)

            self._server_ctx = certificates.server_context(ask_peer)
        return self._server_ctx

    def client_tls_context(self, local: str) -> ssl.SSLContext:
        """Initiating side: ``local``'s certificate as the client certificate (for the peer's SASL
        EXTERNAL); the peer's certificate is checked after the handshake (:mod:`roost.s2s.certs`)."""
        certificates = self._current()
        files = certificates.files_for(local)
        ctx = self._client_ctx.get(str(files))
        if ctx is None:
            ctx = self._client_ctx[str(files)] = certificates.client_context(local)
        return ctx

    # -- housekeeping ----------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while not self.server.stopping:
            await asyncio.sleep(1.0)
            idle = self.settings.idle_timeout_seconds
            now = time.monotonic()
            for key, link in list(self.links.items()):
                if link.up and not link.queue and not link.verify_requests and now - link.last_used > idle:
                    log.info("s2s out: %s → %s idle; closing", link.local, link.remote)
                    link.close()
                    del self.links[key]
                elif (
                    link.conn is None
                    and link.connecting is None
                    and not link.queue
                    and not link.verify_requests
                ):
                    del self.links[key]


def _load_cas(ctx: ssl.SSLContext, ca_file: Path | None) -> None:
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)


async def happy_eyeballs(
    host: str, port: int, source: str | None = None, delay: float = HAPPY_EYEBALLS_DELAY
) -> socket.socket:
    """A connected socket to ``host``: its addresses tried in RFC 8305 order (families interleaved,
    §4), a new attempt every ``delay`` seconds while earlier ones are still pending (§5); the first to
    connect wins and the rest are cancelled. Raises ``OSError`` when every address failed."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if source:
        families = {info[0] for info in await loop.getaddrinfo(source, 0, type=socket.SOCK_STREAM)}
        infos = [info for info in infos if info[0] in families]
    if not infos:
        raise OSError(f"{host}: no address to connect to")
    by_family: dict[int, list[Any]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    ordered: list[Any] = []
    queues = list(by_family.values())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))

    async def attempt(info: Any) -> socket.socket:
        family, kind, proto, _, address = info
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    attempts = [functools.partial(attempt, info) for info in ordered]
    winner, _, errors = await staggered.staggered_race(attempts, delay)
    if winner is None:
        raise OSError("; ".join(str(e) for e in errors if e is not None) or f"{host}: no address")
    return cast(socket.socket, winner)


def _same(conn: OutgoingS2S) -> OutgoingS2S:
    """The protocol factory of a connection whose protocol object exists already."""
    return conn


def _has_happy_eyeballs(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.create_connection`` takes ``happy_eyeballs_delay`` (asyncio's loops; not uvloop's)."""
    return isinstance(loop, asyncio.BaseEventLoop)
