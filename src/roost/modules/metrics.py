"""Prometheus metrics (``[metrics]``, off by default): counts stanzas and runs the event-loop lag probe.

The numbers live in :mod:`roost.admin.metrics`; the HTTP listener serves them at ``/metrics`` to
the addresses in ``allow``. See docs/metrics.md.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from roost.admin import metrics as server_metrics
from roost.config.schema import ModuleOptions
from roost.core import hooks
from roost.core.hooks import StanzaEvent
from roost.core.modules import Module, hook
from roost.core.session import Session
from roost.transports.web import http_routes
from roost.util.latency import LatencyStats

Delivery = tuple[Session, StanzaEvent]


class MetricsOptions(ModuleOptions):
    """Options of [metrics]."""

    enabled: bool = Field(
        default=False, description="Collect metrics and serve them at /metrics on the HTTP listener."
    )
    allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Client addresses or networks that may read /metrics; everybody else gets 403.",
        examples=[["127.0.0.1", "10.0.0.0/8"]],
    )
    admin_login: bool = Field(
        default=False,
        description="Also serve /metrics to clients outside allow that log in with HTTP Basic as a server "
        "admin (server.admins): JID and password, or — with [http_auth] enabled — JID and a transaction "
        "id the admin confirms in their XMPP client (XEP-0070). Over HTTPS (or from this machine) only.",
        examples=[True],
    )
    lag_interval_seconds: float = Field(
        default=1.0, gt=0.01, le=60, description="How often the event-loop lag probe runs."
    )

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, value: list[str]) -> list[str]:
        server_metrics.parse_allow(value)
        return value


METRICS_PATH = "/metrics"


class Metrics(Module):
    """Counts stanzas in and out of local sessions for Prometheus."""

    name = "metrics"
    Options = MetricsOptions
    options: MetricsOptions

    async def start(self) -> None:
        self.metrics = server_metrics.attach(self.server)
        self.metrics.allow = server_metrics.parse_allow(self.options.allow)
        self.metrics.admin_login = self.options.admin_login
        self.metrics.users += 1
        self.metrics.start_lag_monitor(self.options.lag_interval_seconds)
        if self.server.route_stats is None:
            self.server.route_stats = LatencyStats()
        self._in = {k: self.metrics.stanzas_in.labels(k) for k in ("message", "presence", "iq")}
        self._out = {k: self.metrics.stanzas_out.labels(k) for k in ("message", "presence", "iq")}
        routes = http_routes(self.server)
        if routes.find(METRICS_PATH) is None:
            # Served on every http/https listener ([[listen]]); the allow-list guards it.
            routes.mount(METRICS_PATH, server_metrics.metrics_handler(self.server), owner=self.name)

    async def stop(self) -> None:
        self.metrics.users -= 1
        if self.metrics.users <= 0:
            server_metrics.detach(self.server)
            http_routes(self.server).unmount(METRICS_PATH)
            self.server.route_stats = None

    # Lowest priority: counts what the other filters let through.
    @hook(hooks.PRE_MESSAGE, priority=-10_000)
    @hook(hooks.PRE_PRESENCE, priority=-10_000)
    @hook(hooks.PRE_IQ, priority=-10_000)
    def count_in(self, event: StanzaEvent) -> StanzaEvent:
        self._in[event.stanza.name].inc()
        return event

    @hook(hooks.DELIVER_MESSAGE, priority=-10_000)
    @hook(hooks.DELIVER_PRESENCE, priority=-10_000)
    @hook(hooks.DELIVER_IQ, priority=-10_000)
    def count_out(self, value: Delivery) -> Delivery:
        self._out[value[1].stanza.name].inc()
        return value
