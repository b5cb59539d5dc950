"""Prometheus metrics of one server: collectors, a registry, and the ``/metrics`` request handler.

Counters are incremented by :mod:`roost.modules.metrics` (stanzas in and out, by kind) and by the
transports (:func:`observe_login`); gauges that describe the present (sessions by transport and
state, connections, rooms, the storage write queue) are read from the server at scrape time, so
they cannot drift. Memory, CPU and open files come from prometheus-client's process collector.
Event-loop lag is measured by a task that sleeps a known time and records how late it wakes up.

The HTTP listener mounts :func:`metrics_handler`; it answers only the configured client addresses
(``[metrics] allow``), everybody else gets 403.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import weakref
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from roost.admin import http_login
from roost.admin.sessions import transport_name
from roost.util.gcstats import STATS as GC_STATS
from roost.util.latency import LatencyStats

if TYPE_CHECKING:
    from aiohttp import web

    from roost.core.server import Server

log = logging.getLogger("roost.metrics")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_BY_SERVER: weakref.WeakKeyDictionary[Server, ServerMetrics] = weakref.WeakKeyDictionary()


def _histogram(name: str, documentation: str, stats: LatencyStats) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], stats.cumulative(), stats.total)
    return family


def _gc_families() -> Iterator[GaugeMetricFamily | HistogramMetricFamily | CounterMetricFamily]:
    """Python's cyclic collector, per generation (:mod:`roost.util.gcstats`, process-wide): how long
    it stopped the event loop, and how much it found (cycles: anything above zero is a leak to hunt)."""
    pauses = HistogramMetricFamily(
        "roost_gc_pause_seconds", "Garbage-collection pauses (the event loop stands still)",
        labels=["generation"],
    )  # fmt: skip
    longest = GaugeMetricFamily(
        "roost_gc_pause_max_seconds", "Longest garbage-collection pause since start", labels=["generation"]
    )
    collected = CounterMetricFamily(
        "roost_gc_collected_objects", "Unreachable objects (reference cycles) the collector freed",
        labels=["generation"],
    )  # fmt: skip
    for generation, g in enumerate(GC_STATS.generations):
        label = [str(generation)]
        pauses.add_metric(label, g.pauses.cumulative(), g.pauses.total)
        longest.add_metric(label, g.max_pause_seconds)
        collected.add_metric(label, g.collected)
    yield pauses
    yield longest
    yield collected
    yield CounterMetricFamily(
        "roost_gc_frozen_objects", "Objects moved out of the collector's sight (gc.freeze), in all",
        value=GC_STATS.frozen,
    )  # fmt: skip
    yield CounterMetricFamily(
        "roost_malloc_trims", "Times the C heap's free pages were handed back (malloc_trim)",
        value=GC_STATS.malloc_trims,
    )  # fmt: skip


class _LiveCollector(Collector):
    """Gauges read from the server when scraped."""

    def __init__(self, server: Server) -> None:
        self._server = weakref.ref(server)

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily | CounterMetricFamily]:
        server = self._server()
        if server is None:
            return
        yield from _gc_families()
        sessions = GaugeMetricFamily(
            "roost_sessions", "Bound client sessions by transport and state", labels=["transport", "state"]
        )
        tally: Tally[tuple[str, str]] = Tally()
        for session in server.sessions:
            state = "available" if getattr(session, "available", False) else "bound"
            tally[(transport_name(session), state)] += 1
        for (transport, state), count in sorted(tally.items()):
            sessions.add_metric([transport, state], count)
        yield sessions
        pending = sum(1 for c in server.connections if not c.session.jid_str)
        yield GaugeMetricFamily(
            "roost_connections_unbound", "Connections not (yet) bound to a session", value=pending
        )
        users = len({(s.jid.domain, s.jid.local) for s in server.sessions})
        yield GaugeMetricFamily("roost_users_online", "Accounts with at least one session", value=users)
        try:
            from roost.modules.muc.module import find_runtime

            runtime = find_runtime(server)
            rooms = len(runtime.service.rooms) if runtime is not None else 0
        except ImportError:
            rooms = 0
        yield GaugeMetricFamily("roost_muc_rooms", "Chat rooms in memory", value=rooms)
        storage = server.storage
        queued = storage.pending_writes if storage is not None else 0
        yield GaugeMetricFamily(
            "roost_storage_write_queue", "Archive writes queued, not yet committed", value=queued
        )
        if server.route_stats is not None:
            yield _histogram(
                "roost_routing_seconds", "Time to route a stanza from a local client", server.route_stats
            )
        thread = storage.database_thread if storage is not None else None
        if thread is not None:
            yield _histogram(
                "roost_storage_seconds", "Time storage jobs ran (embedded database)", thread.run_times
            )
            yield _histogram(
                "roost_storage_wait_seconds",
                "Time storage jobs waited for the database thread",
                thread.wait_times,
            )
            yield GaugeMetricFamily(
                "roost_storage_queue", "Storage jobs waiting for the database", value=thread.queued
            )
        yield GaugeMetricFamily(
            "roost_uptime_seconds", "Seconds since the server started", value=time.time() - server.started_at
        )


class ServerMetrics:
    """Every metric of one server, in its own registry (tests run several servers in one process)."""

    def __init__(self, server: Server) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(_LiveCollector(server))
        self.stanzas_in = Counter(
            "roost_stanzas_in", "Stanzas received from local sessions", ["kind"], registry=self.registry
        )
        self.stanzas_out = Counter(
            "roost_stanzas_out", "Stanzas written to local sessions", ["kind"], registry=self.registry
        )
        self.logins = Counter(
            "roost_logins", "SASL authentications by mechanism and result", ["mechanism", "result"],
            registry=self.registry,
        )  # fmt: skip
        self.loop_lag = Gauge(
            "roost_event_loop_lag_seconds", "How late the event loop last ran a timer", registry=self.registry
        )
        self.loop_lag_histogram = Histogram(
            "roost_event_loop_lag", "How late the event loop runs timers (seconds)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )  # fmt: skip
        self.allow: tuple[Network, ...] = (
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        )
        #: Clients outside ``allow`` may log in as a server admin (HTTP Basic, :mod:`http_login`).
        self.admin_login = False
        self._lag_task: asyncio.Task[None] | None = None
        self.users = 0

    def start_lag_monitor(self, interval: float) -> None:
        if self._lag_task is None:
            self._lag_task = asyncio.get_running_loop().create_task(
                self._watch_lag(interval), name="loop-lag"
            )

    def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            self._lag_task = None

    async def _watch_lag(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - started - interval)
            self.loop_lag.set(lag)
            self.loop_lag_histogram.observe(lag)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def attach(server: Server) -> ServerMetrics:
    """The server's metrics, created on first use."""
    metrics = _BY_SERVER.get(server)
    if metrics is None:
        metrics = _BY_SERVER[server] = ServerMetrics(server)
    return metrics


def metrics_of(server: Server) -> ServerMetrics | None:
    """The server's metrics, or None when metrics are off (the module is not loaded)."""
    return _BY_SERVER.get(server)


def detach(server: Server) -> None:
    metrics = _BY_SERVER.pop(server, None)
    if metrics is not None:
        metrics.stop()


def observe_login(server: Server, mechanism: str, success: bool) -> None:
    """A transport reports one SASL outcome (cheap no-op while metrics are off)."""
    metrics = _BY_SERVER.get(server)
    if metrics is not None:
        metrics.logins.labels(mechanism or "unknown", "success" if success else "failure").inc()


def parse_allow(entries: Iterable[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8", "::1"]`` → networks; ValueError names a bad entry."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def allowed(address: str | None, allow: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in allow)


def metrics_handler(server: Server) -> Any:
    """An aiohttp handler for ``GET /metrics`` (404 while metrics are off, 403 for other clients)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        metrics = metrics_of(server)
        if metrics is None:
            raise web.HTTPNotFound(text="metrics are off ([metrics] enabled = false)\n")
        if not allowed(request.remote, metrics.allow):
            if not metrics.admin_login:
                log.info("metrics: refused a scrape from %s (not in [metrics] allow)", request.remote)
                raise web.HTTPForbidden(text="this address may not read the metrics ([metrics] allow)\n")
            # XEP-0070 part (b): an admin's JID with a password, or with a transaction id confirmed in
            # their XMPP client, stands in for the address.
            verdict = await http_login.login(server, request, allowed=server.config.server.admins)
            if not verdict.ok:
                log.info("metrics: refused a scrape from %s (%s)", request.remote, verdict.reason)
                headers = {"WWW-Authenticate": 'Basic realm="Roost metrics", charset="UTF-8"'}
                return web.Response(status=verdict.status, text=verdict.reason + "\n", headers=headers)
            log.info("metrics: %s logged in from %s (%s)", verdict.jid, request.remote, verdict.how)
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


__all__ = [
    "ServerMetrics",
    "allowed",
    "attach",
    "detach",
    "metrics_handler",
    "metrics_of",
    "observe_login",
    "parse_allow",
]
