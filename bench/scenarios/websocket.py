"""``websocket``: XMPP over WebSocket (RFC 7395, ``wss://``): logins/s and 1:1 messages/s.

Every server gets an HTTPS listener with the shared certificate and serves ``/xmpp-websocket``
(Roost: an ``https`` ``[[listen]]`` entry; Prosody 0.12: ``mod_websocket`` on ``https_ports``;
ejabberd: ``ejabberd_http_ws`` on a TLS ``ejabberd_http`` listener).

* ``login``: ``--n`` full logins with ``--concurrency`` in flight, each ``--repeat`` times (medians):
  TCP, TLS, HTTP upgrade (subprotocol ``xmpp``), ``<open/>``, SCRAM-SHA-1, ``<open/>`` again, bind,
  initial presence until echoed, then ``<close/>`` both ways and the WebSocket closing handshake (in
  the background; the server's CPU is measured until every close is done, so CPU/login includes it).
* ``oneone``: ``--accounts`` sessions online in pairs over WebSocket, each sending ~100-byte chat
  messages to its partner's bare JID, one message per WebSocket message, ``--window`` in flight per
  direction (closed loop, like ``oneone``'s saturation phase): delivered msgs/s and server CPU/msg.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from typing import Any

from ..targets import Provisioning
from ..xmppload.client import Session
from ..xmppload.stats import summary_ms
from ..xmppload.ws import WsConn, ws_close, ws_login
from .base import (
    Metric,
    RunContext,
    Scenario,
    ServerResult,
    bench_accounts,
    check_interference,
    close_all,
    cpu_details,
    login_many,
)
from .oneone import Peer, Stats, Window


class WsPeer(Peer):
    """A :class:`Peer` whose messages go one per WebSocket message (RFC 7395 §3.3.3)."""

    __slots__ = ()

    def __init__(self, conn: WsConn, partner: str, stats: Stats) -> None:
        super().__init__(conn, partner, stats)
        # RFC 7395 §3.3.3: each message declares its namespace.
        self.prefix = self.prefix.replace(b"<message ", b"<message xmlns='jabber:client' ", 1)

    def send(self, count: int) -> None:
        now = time.monotonic_ns()
        one = self.prefix + b"%019d" % now + self.suffix
        conn = self.conn
        assert isinstance(conn, WsConn)
        conn.write_many(one, count)
        st = self.stats
        st.sent += count
        if st.window.start <= now < st.window.end:
            st.in_window_sent += count


class WebSocketScenario(Scenario):
    name = "websocket"
    help = "XMPP over WebSocket (wss://): logins/s and 1:1 msgs/s"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=1000, help="logins per pass")
        parser.add_argument("--concurrency", type=int, default=50, help="logins in flight")
        parser.add_argument("--repeat", type=int, default=3, help="login passes; medians reported")
        parser.add_argument("--accounts", type=int, default=1000, help="1:1 phase: online sessions (pairs)")
        parser.add_argument("--duration", type=float, default=10.0, help="1:1 phase: seconds measured")
        parser.add_argument("--warmup", type=float, default=2.0, help="1:1 phase: seconds before measuring")
        parser.add_argument(
            "--window", type=int, default=4, help="1:1 phase: messages in flight per direction"
        )
        parser.add_argument("--phases", default="login,oneone", help="login, oneone or both")

    def phases(self) -> list[str]:
        return [p.strip() for p in str(self.args.phases).split(",") if p.strip()]

    def metric_specs(self) -> tuple[Metric, ...]:
        c = self.args.concurrency
        return (
            Metric("login.logins_per_s", f"login ({c} in flight): logins/s", "1/s", True),
            Metric("login.p50_ms", "login: p50 latency", "ms", False, "{:.2f}"),
            Metric("login.p99_ms", "login: p99 latency", "ms", False, "{:.2f}"),
            Metric("login.cpu_ms_per_login", "login: server CPU/login", "ms", False, "{:.3f}"),
            Metric("login.generator_util", "login: generator CPU use", "cores", False, "{:.2f}", ratio=False),
            Metric("login.errors", "login: errors", "", False, "{:.0f}", ratio=False),
            Metric("oneone.msgs_per_s", "1:1 saturation: delivered msgs/s", "1/s", True, "{:.0f}"),
            Metric("oneone.cpu_us_per_msg", "1:1 saturation: server CPU/msg", "µs", False, "{:.1f}"),
            Metric("oneone.p50_ms", "1:1 saturation: p50 latency", "ms", False, "{:.2f}"),
            Metric(
                "oneone.generator_util",
                "1:1 saturation: generator CPU use",
                "cores",
                False,
                "{:.2f}",
                ratio=False,
            ),
            Metric(
                "oneone.bounced", "1:1: error replies instead of deliveries", "", False, "{:.0f}", ratio=False
            ),
        )

    def provisioning(self) -> Provisioning:
        n = max(self.args.n, self.args.accounts + (self.args.accounts % 2))
        return Provisioning(bench_accounts(n), websocket=True)

    def _fns(self, ctx: RunContext) -> dict[str, Any]:
        target = ctx.target

        async def login_fn(endpoint, account, resource, creds, opts):  # type: ignore[no-untyped-def]
            return await ws_login(endpoint, target.ws_port, account, resource, creds, opts)

        return {"login_fn": login_fn, "close_fn": ws_close}

    async def run(self, ctx: RunContext) -> ServerResult:
        result = ServerResult()
        if "login" in self.phases():
            await self._logins(ctx, result)
        if "oneone" in self.phases():
            await self._oneone(ctx, result)
        return result

    async def _logins(self, ctx: RunContext, result: ServerResult) -> None:
        args = self.args
        accounts = bench_accounts(args.n)
        fns = self._fns(ctx)
        warm = await login_many(ctx, accounts, args.concurrency, "w", keep=False, **fns)
        if warm.errors:
            raise RuntimeError(f"{len(warm.errors)} warm-up logins failed, e.g. {warm.errors[0]}")
        runs: list[dict[str, float]] = []
        for i in range(args.repeat):
            meter = ctx.meter()
            batch = await login_many(ctx, accounts, args.concurrency, "r", keep=False, **fns)
            delta = meter.stop()
            done = len(batch.sessions)
            lat = summary_ms([s.login_seconds for s in batch.sessions])
            run = {
                "logins_per_s": done / batch.logins_wall if batch.logins_wall else math.nan,
                "p50_ms": lat["p50"],
                "p99_ms": lat["p99"],
                "cpu_ms_per_login": delta.server_cpu * 1e3 / done if done else math.nan,
                "generator_util": delta.generator_util,
                "errors": float(len(batch.errors)),
            }
            runs.append(run)
            ctx.log(
                f"  login pass {i + 1}: {run['logins_per_s']:.0f} logins/s, p50 {lat['p50']:.2f} ms, "
                f"{run['cpu_ms_per_login']:.3f} ms server CPU/login, {len(batch.errors)} errors"
            )
            if batch.errors:
                ctx.log(f"  e.g. {batch.errors[0]}")
            check_interference(ctx, delta)
            result.details.setdefault("login_runs", []).append({**run, **cpu_details(delta)})
        for key in runs[0]:
            result.metrics[f"login.{key}"] = statistics.median(r[key] for r in runs)

    async def _oneone(self, ctx: RunContext, result: ServerResult) -> None:
        args = self.args
        n = args.accounts + (args.accounts % 2)
        accounts = bench_accounts(n)
        fns = self._fns(ctx)
        batch = await login_many(ctx, accounts, 50, "c", keep=True, login_fn=fns["login_fn"])
        if batch.errors:
            raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
        by_user: dict[str, Session] = {s.account.user: s for s in batch.sessions}
        stats = Stats()
        peers: list[Peer] = []
        for i in range(0, n, 2):
            a, b = accounts[i].user, accounts[i + 1].user
            conn_a, conn_b = by_user[a].conn, by_user[b].conn
            assert isinstance(conn_a, WsConn) and isinstance(conn_b, WsConn)
            pa, pb = WsPeer(conn_a, b, stats), WsPeer(conn_b, a, stats)
            pa.credits_to, pb.credits_to = pb, pa  # a delivery lets its sender send again
            peers += [pa, pb]
        try:
            start = time.monotonic_ns()
            stats.window = Window(
                start + int(args.warmup * 1e9), start + int((args.warmup + args.duration) * 1e9)
            )
            for p in peers:
                p.send(args.window)
            await asyncio.sleep(args.warmup)
            meter = ctx.meter()
            before = stats.received
            await asyncio.sleep(args.duration)
            delivered = stats.received - before
            delta = meter.stop()
            for p in peers:
                p.credits_to = None
            lat = summary_ms([x / 1e9 for x in stats.window.latencies_ns])
            m = result.metrics
            m["oneone.msgs_per_s"] = delivered / delta.wall
            m["oneone.cpu_us_per_msg"] = delta.server_cpu * 1e6 / delivered if delivered else math.nan
            m["oneone.p50_ms"] = lat["p50"]
            m["oneone.generator_util"] = delta.generator_util
            m["oneone.bounced"] = stats.bounced
            result.details["oneone"] = {
                "latency_ms": lat,
                "in_flight": args.window * len(peers),
                **cpu_details(delta),
            }
            ctx.log(
                f"  1:1 over WebSocket: {m['oneone.msgs_per_s']:.0f} msgs/s, "
                f"{m['oneone.cpu_us_per_msg']:.1f} µs server CPU/msg ({delta.server_util:.2f} cores), "
                f"generator {delta.generator_util:.2f} cores, p50 {lat['p50']:.2f} ms"
            )
            check_interference(ctx, delta)
        finally:
            await close_all(list(by_user.values()), ctx.timeout, close_fn=ws_close)
