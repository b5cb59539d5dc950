"""The server core: storage, hosts and their modules, listeners, timers, and an ordered shutdown.

It imports no transport and no module: the composition root (:mod:`roost.app`) hands it the module
classes to load and a starter per listener kind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from roost.config.schema import Config, ListenEntry
from roost.core import gc_policy, hooks
from roost.core.accounts import AccountService
from roost.core.control import ControlChannel
from roost.core.fast import FastTokens
from roost.core.hooks import StanzaEvent
from roost.core.host import Host
from roost.core.iq import IqTracker
from roost.core.router import Router
from roost.core.routes import RouteTable
from roost.core.sessions import SessionManager
from roost.stanza.errors import StreamError
from roost.storage.manager import StorageManager
from roost.stream.c2s import C2SSettings
from roost.stream.core import Feature
from roost.stream.csi import CsiFeature
from roost.stream.sasl.scram import set_unknown_user_secret
from roost.stream.sm import SmFeature
from roost.transports import tls
from roost.transports.batching import WriteBatcher
from roost.transports.certificates import Certificates, load_certificates
from roost.util.latency import LatencyStats
from roost.util.logging import task_context
from roost.xml.element import Element
from roost.xml.ns import CLIENT, PING

if TYPE_CHECKING:
    from roost.core.c2s import C2SDriver
    from roost.core.modules import Module


class Listener(Protocol):
    """A started listener (an ``asyncio.Server`` or an HTTP site)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


#: Starts one ``[[listen]]`` entry; returns the listener and the address it really bound.
ListenerStarter = Callable[["Server", ListenEntry], Awaitable[tuple[Listener, tuple[str, int]]]]

log = logging.getLogger("roost.server")

#: Sessions silent this long give back their XML parser's memory until they speak again.
RELEASE_PARSER_AFTER_SECONDS = 20.0


class Server:
    """One Roost process."""

    def __init__(
        self,
        config: Config,
        *,
        modules: Sequence[type[Module]] = (),
        listeners: Mapping[str, ListenerStarter] | None = None,
    ) -> None:
        self.config = config
        self.started_at = time.time()
        #: Module classes loaded on every served domain (in this order), and listener starters by kind.
        self.module_classes = tuple(modules)
        self.listener_starters: Mapping[str, ListenerStarter] = listeners or {}
        self.sessions = SessionManager(self, max_resources=config.c2s.max_resources)
        self.accounts = AccountService(self)
        self.fast = FastTokens(self)
        self.control = ControlChannel(self)
        self.hosts: dict[str, Host] = {}
        #: Routes to domains that are not ours (components, s2s, cluster peers): domain → deliver.
        self.routes: dict[str, Callable[[StanzaEvent], None]] = {}
        #: Where addresses live: local sessions, components, federation (modules ask here).
        self.route_table = RouteTable(self)
        self.router = Router(self)
        self.iq_tracker = IqTracker()
        #: Routing latency of stanzas from local clients, kept while metrics are on (None: off).
        self.route_stats: LatencyStats | None = None
        #: Live c2s connections (their drivers), for liveness checks and shutdown.
        self.connections: set[C2SDriver] = set()
        self.writes = WriteBatcher()
        self.storage: StorageManager = None  # type: ignore[assignment]  # set in start()
        self.tls_context: ssl.SSLContext = None  # type: ignore[assignment]
        self.certificate_der: bytes | None = None
        self.certificate_files: tuple[Path, Path] = (Path(), Path())
        #: Every certificate, by domain (SNI); replaced on reload.
        self.certificates: Certificates = None  # type: ignore[assignment]
        self._servers: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.stopping = False
        self._features: tuple[Element, ...] = ()
        self._features_key: tuple[int, ...] | None = None
        #: Addresses actually bound, by listener name (tests use port 0).
        self.addresses: dict[str, tuple[str, int]] = {}
        #: --set/--log-level overrides from the command line, applied again by a reload.
        self.config_overrides: dict[str, str] = {}
        #: The c2s settings the listeners give new streams (a reload updates them in place).
        self.listen_settings: C2SSettings | None = None

    @property
    def account_removal(self) -> AccountService:
        """Former name of :attr:`accounts`."""
        return self.accounts

    # -- tasks ---------------------------------------------------------------------------------------
    def spawn(self, awaitable: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run ``awaitable`` as an owned, named task; its failure is logged, never lost."""
        coro = awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)
        # Started while a connection's input is handled: the task's log lines keep its id.
        task = asyncio.get_running_loop().create_task(coro, name=name, context=task_context())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # -- start/stop ----------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        data_dir = config.server.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # keys, secrets, the database
        # First: it refuses to start a second server on the same data directory.
        await self.control.start(data_dir)
        self.storage = await StorageManager.open(
            config.storage_url,
            progress=lambda m: log.info("%s", m),
            max_pending=config.storage.archive_queue,
        )
        # Fake SCRAM salts for unknown users must be stable across restarts, or an attacker could tell
        # real accounts (stable salt) from unknown ones (salt changes on restart).
        set_unknown_user_secret(load_secret(data_dir / "server.secret"))
        if config.tls.cert is not None and config.tls.key is not None:
            cert, key = config.tls.cert, config.tls.key
        else:
            cert, key = tls.ensure_certificate(data_dir, config.server.domains)
        self.certificates = load_certificates(config, (cert, key))
        self.tls_context = self.certificates.server_context()
        #: The default certificate and key files.
        self.certificate_files = (cert, key)
        self.certificate_der = tls.certificate_der(cert)

        for domain in config.server.domains:
            host = Host(self, domain)
            self.hosts[domain] = host
            self.accounts.attach(host)
        for host in list(self.hosts.values()):
            for cls in self.module_classes:
                options = config.module_options(cls.name)
                if options.enabled:
                    await host.modules.load(cls, options)
        await self._listen()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="idle-sweeper")
        for host in self.hosts.values():
            await host.bus.fire(hooks.SERVER_STARTED, hooks.ServerEvent())
        log.info(
            "Roost serving %s; %s",
            ", ".join(config.server.domains),
            ", ".join(f"{k} on {a[0]}:{a[1]}" for k, a in self.addresses.items()) or "no listeners",
        )
        gc_policy.start(self)  # last: freezes what start-up built (issue 15)

    def c2s_settings(self) -> C2SSettings:
        c2s = self.config.c2s
        return C2SSettings(
            domains=frozenset(self.hosts_with_accounts()),
            require_encryption=c2s.require_encryption,
            tls_available=True,
            mechanisms=tuple(c2s.sasl_mechanisms),
            max_stanza_bytes=c2s.max_stanza_bytes,
            max_auth_failures=c2s.max_auth_failures,
            idle_seconds=int(c2s.idle_ping_seconds),
            extra_features=self.stream_features,
            preauth_register=self._preauth_register,
            bind2_features=self.bind2_features,
            fast=c2s.fast,
            scram_upgrades=tuple(self.config.storage.scram_hashes) if c2s.scram_upgrade else (),
            features=_nonza_features,
        )

    def bind2_features(self) -> tuple[str, ...]:
        """What a Bind2 request may enable inline (XEP-0386 §3.3): the namespaces handled on the
        ``BIND2_INLINE`` hook by loaded modules (declared as their ``bind2_inline``)."""
        key = tuple(host.modules.generation for host in self.hosts.values())
        cached = self.__dict__.get("_bind2_cache")
        if cached is not None and cached[0] == key:
            return cached[1]  # type: ignore[no-any-return]
        found: dict[str, None] = {}
        for host in self.hosts.values():
            for module in host.modules.loaded.values():
                found.update(dict.fromkeys(getattr(module, "bind2_inline", ())))
        self.__dict__["_bind2_cache"] = (key, tuple(found))
        return tuple(found)

    def _preauth_register(self, domain: str) -> bool:
        """Whether a module takes account registrations on unauthenticated streams (XEP-0077 §3.1.1)."""
        host = self.hosts.get(domain)
        return host is not None and host.bus.has_handlers(hooks.C2S_REGISTER)

    def stream_features(self) -> tuple[Element, ...]:
        """Post-authentication stream features of the loaded modules (one of each, any domain).

        Built again only when modules are loaded or unloaded: the same tuple comes back otherwise,
        so streams can cache what they make of it (every login asks for it).
        """
        key = tuple(host.modules.generation for host in self.hosts.values())
        if key != self._features_key:
            seen: set[tuple[str, str]] = set()
            features: list[Element] = []
            for host in self.hosts.values():
                for module in host.modules.loaded.values():
                    for feature in module.stream_features():
                        if (feature.ns, feature.name) not in seen:
                            seen.add((feature.ns, feature.name))
                            features.append(feature)
            self._features, self._features_key = tuple(features), key
        return self._features

    def hosts_with_accounts(self) -> list[str]:
        return [d for d, h in self.hosts.items() if h.has_accounts]

    async def _listen(self) -> None:
        # One settings object for every c2s listener: a reload changes it in place (roost.core.reload).
        self.listen_settings = self.c2s_settings()
        counts: dict[str, int] = {}
        for entry in self.config.listeners:
            starter = self.listener_starters.get(entry.kind)
            if starter is None:
                raise OSError(f"no transport for listeners of kind {entry.kind!r}")
            listener, address = await starter(self, entry)
            self._servers.append(listener)
            n = counts.get(entry.kind, 0)
            counts[entry.kind] = n + 1
            self.addresses[entry.kind if n == 0 else f"{entry.kind}.{n}"] = address

    async def stop(self) -> None:
        """Ordered shutdown: stop listening, <system-shutdown/> to every stream, drain, close storage."""
        if self.stopping:
            return
        self.stopping = True
        log.info("shutting down")
        for srv in self._servers:
            srv.close()
        await self.control.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for host in list(self.hosts.values()):
            await host.bus.fire(hooks.SERVER_STOPPING, hooks.ServerEvent())
        shutdown = StreamError("system-shutdown", "the server is shutting down")
        for conn in list(self.connections):
            conn.close(shutdown, reason="shutdown")
        for session in list(self.sessions):
            session.close(shutdown, reason="shutdown")  # detached ones, and any without a driver
        for link in list(self.route_table.links):
            link.close(shutdown, reason="shutdown")
        # Let SESSION_CLOSED handlers (unavailable presence, offline state) and writes finish.
        deadline = time.monotonic() + 5
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2)
            except TimeoutError:
                pass
        for host in list(self.hosts.values()):
            await host.modules.unload_all()
        if self.storage is not None:
            await self.storage.close()
        log.info("stopped")

    async def account_exists(self, domain: str, username: str) -> bool:
        """Whether a local account exists (online sessions answer without storage)."""
        if self.sessions.is_online(domain, username):
            return True
        return await self.storage.accounts.exists(domain, username)

    # -- liveness (XEP-0199) ------------------------------------------------------------------------
    async def _sweep(self) -> None:
        c2s = self.config.c2s
        interval = max(
            0.5, min(c2s.idle_ping_seconds, c2s.ping_timeout_seconds, c2s.auth_timeout_seconds) / 4
        )
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            released = 0
            for conn in list(self.connections):
                try:
                    released += self._check_liveness(conn, now)
                except Exception:
                    log.exception("liveness check failed for %s", conn.id)
            if released:
                log.debug("%d idle sessions released their parser memory", released)

    def _check_liveness(self, conn: C2SDriver, now: float) -> bool:
        """Ping, time out or release the parser of one connection; True if released just now."""
        c2s = self.config.c2s
        session = conn.session
        if not session.jid_str:
            if now - session.connected_at > c2s.auth_timeout_seconds:
                timeout = StreamError("connection-timeout", "authentication took too long")
                conn.close(timeout, reason="timeout")
            return False
        if conn.ping_sent_at:
            if now - conn.ping_sent_at > c2s.ping_timeout_seconds:
                conn.close(StreamError("connection-timeout", "no answer to ping"), reason="timeout")
            return False
        idle = now - session.last_received
        released = False
        if idle > RELEASE_PARSER_AFTER_SECONDS:
            released = conn.release_parser()
        if c2s.idle_ping_seconds and idle > c2s.idle_ping_seconds:
            conn.ping_sent_at = now
            attrs = {
                "type": "get",
                "id": self.iq_tracker.new_id(),
                "from": session.jid.domain,
                "to": session.jid_str,
            }
            ping = Element("iq", CLIENT, attrs)
            ping.add("ping", PING)
            session.send(ping)
        return released


def load_secret(path: Path) -> bytes:
    """A per-installation random secret, created on first start (mode 0600)."""
    try:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def run_until_signalled(server: Server, ready: Callable[[], None] | None = None) -> int:
    """Start ``server``, run until SIGTERM/SIGINT, stop it; the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:  # SIGHUP (logrotate, certbot hooks, a closed terminal) reloads, never kills
        from roost.core.reload import reload_in_background

        loop.add_signal_handler(signal.SIGHUP, reload_in_background, server)
    except (NotImplementedError, RuntimeError, AttributeError):
        pass
    try:
        await server.start()
    except OSError as e:
        log.error("cannot start: %s", e)
        await server.stop()
        return 1
    if ready is not None:
        ready()
    await stop.wait()
    await server.stop()
    return 0


def _nonza_features() -> tuple[Feature, ...]:
    """Per-stream features beyond negotiation: XEP-0198 and XEP-0352 nonzas (answered in core/sm.py)."""
    return (SmFeature(), CsiFeature())
