"""``oneone``: one-to-one chat between online accounts.

``--accounts`` sessions (default 1,000) log in and stay online, paired up (user1<->user2, ...); each side
sends ~100-byte ``type='chat'`` messages to its partner's bare JID. Every body carries the generator's
monotonic send time, so the receiving side measures delivery latency without any bookkeeping per message.

Phases, each after a short warm-up:

* fixed offered loads (``--rates``, default 2,000 and 5,000 msg/s): an open-loop pacer spreads messages
  over all senders; delivered msgs/s and p50/p99 latency of the messages sent in the window.
* saturation: closed loop with ``--window`` messages in flight per direction (a receipt releases the
  next message); delivered msgs/s and the server's CPU per message.

With ``--sm`` every session enables stream management (XEP-0198, without resumption) after login and
answers each of the server's ``<r/>`` with an exact ``<a h/>``: the cost of acks on the hot path (the
server asks every 5 stanzas by default, ``[sm] ack_every``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import time
from dataclasses import dataclass, field

from ..targets import DOMAIN, Provisioning
from ..xmppload.client import Session
from ..xmppload.conn import XmppConn
from ..xmppload.procstat import Meter, tree_rss
from ..xmppload.stats import summary_ms
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

RE_STAMP = re.compile(rb"T(\d{19});")
SM_ENABLE = b"<enable xmlns='urn:xmpp:sm:3'/>"
RE_SM_ENABLED = re.compile(rb"<enabled\b[^>]*urn:xmpp:sm:3[^>]*>")
RE_SM_REQUEST = re.compile(rb"<r\s+xmlns=['\"]urn:xmpp:sm:3['\"]\s*/>")
SM_REQUEST_MAX = 32  # longest spelling of <r/> we look for (the tail kept between chunks)
END = b"</message>"
BODY_BYTES = 100


@dataclass(slots=True)
class Window:
    """Which messages count: those *sent* in [start, end) (monotonic ns)."""

    start: int = 0
    end: int = 0
    latencies_ns: list[int] = field(default_factory=list)


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.bounced = 0
        self.stray = 0
        self.window = Window()
        self.in_window_sent = 0


class Peer:
    """One online session: sends to its partner, counts and times what it receives."""

    __slots__ = (
        "_buf",
        "_tail",
        "conn",
        "credits_to",
        "handled",
        "partner_jid",
        "prefix",
        "sm",
        "stats",
        "suffix",
    )

    def __init__(
        self, conn: XmppConn, partner: str, stats: Stats, sm: bool = False, domain: str = DOMAIN
    ) -> None:
        self.conn = conn
        self.stats = stats
        #: XEP-0198 enabled: count stanzas received and answer the server's <r/>.
        self.sm = sm
        self.handled = 0
        self._tail = b""
        self.prefix = f"<message to='{partner}@{domain}' type='chat'><body>T".encode()
        self.partner_jid = f"{partner}@{domain}/".encode()  # deliveries come from the partner's full JID
        pad = BODY_BYTES - len("T0000000000000000000;")
        self.suffix = b";" + b"x" * pad + b"</body></message>"
        self._buf = bytearray()
        self.credits_to: Peer | None = None  # saturation mode: a receipt lets the partner send again
        conn.set_sink(self.on_data)

    def send(self, count: int) -> None:
        now = time.monotonic_ns()
        one = self.prefix + b"%019d" % now + self.suffix
        self.conn.write(one * count)
        st = self.stats
        st.sent += count
        if st.window.start <= now < st.window.end:
            st.in_window_sent += count

    def on_data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        end = buf.rfind(END)
        if end < 0:
            if len(buf) > 1 << 20:
                buf.clear()  # not message traffic; don't grow without bound
            if self.sm:
                self._answer_requests(data)
            return
        now = time.monotonic_ns()
        win = self.stats.window
        n = 0
        segments = bytes(buf[:end]).split(END)
        if self.sm:
            # Every message before an <r/> has its end tag in what we have: h is exact.
            self.handled += sum(1 for seg in segments if seg)  # the first may be the kept end tag
        for seg in segments:
            m = RE_STAMP.search(seg)
            if m is None:
                continue
            start = seg.rfind(b"<message", 0, m.start())
            head = seg[start : seg.find(b">", start)]
            if b"'error'" in head or b'"error"' in head:
                self.stats.bounced += 1  # an error reply carrying our payload is not a delivery
                continue
            if self.partner_jid not in head:
                self.stats.stray += 1  # e.g. our own message reflected back: not a delivery either
                continue
            n += 1
            sent = int(m.group(1))
            if win.start <= sent < win.end:
                win.latencies_ns.append(now - sent)
        del buf[:end]
        if self.sm:
            self._answer_requests(data)
        if n:
            self.stats.received += n
            if self.credits_to is not None:
                self.credits_to.send(n)

    def _answer_requests(self, data: bytes) -> None:
        """XEP-0198 §4: answer each <r/> at once with the count of stanzas received so far."""
        scan = self._tail + data
        requests = len(RE_SM_REQUEST.findall(scan))
        self._tail = scan[-SM_REQUEST_MAX:]
        if requests:
            self.conn.write(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (self.handled % (1 << 32)))


class OneOneScenario(Scenario):
    name = "oneone"
    help = "1:1 chat between online pairs: msgs/s at saturation, latency at fixed offered loads"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--accounts", type=int, default=1000, help="online sessions (even; pairs = half)")
        parser.add_argument("--rates", default="2000,5000", help="fixed offered loads in msg/s")
        parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
        parser.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic before measuring")
        parser.add_argument(
            "--window", type=int, default=4, help="saturation: messages in flight per direction"
        )
        parser.add_argument("--login-concurrency", type=int, default=50)
        parser.add_argument(
            "--sm",
            action="store_true",
            help="enable stream management (XEP-0198) and answer the server's acks",
        )

    def rates(self) -> list[int]:
        return [int(r) for r in str(self.args.rates).split(",") if r.strip()]

    def metric_specs(self) -> tuple[Metric, ...]:
        out = [
            Metric("saturation.msgs_per_s", "saturation: delivered msgs/s", "1/s", True, "{:.0f}"),
            Metric("saturation.cpu_us_per_msg", "saturation: server CPU/msg", "µs", False, "{:.1f}"),
            Metric(
                "saturation.generator_util",
                "saturation: generator CPU use",
                "cores",
                False,
                "{:.2f}",
                ratio=False,
            ),
        ]
        for r in self.rates():
            out += [
                Metric(f"rate{r}.msgs_per_s", f"{r}/s offered: delivered msgs/s", "1/s", True, "{:.0f}"),
                Metric(f"rate{r}.p50_ms", f"{r}/s offered: p50 latency", "ms", False, "{:.2f}"),
                Metric(f"rate{r}.p99_ms", f"{r}/s offered: p99 latency", "ms", False, "{:.2f}"),
                Metric(f"rate{r}.cpu_us_per_msg", f"{r}/s offered: server CPU/msg", "µs", False, "{:.1f}"),
                Metric(f"rate{r}.lost", f"{r}/s offered: undelivered", "", False, "{:.0f}", ratio=False),
            ]
        out.append(Metric("rss_mb_online", "server RSS with all sessions online", "MB", False, "{:.1f}"))
        out.append(Metric("bounced", "error replies instead of deliveries", "", False, "{:.0f}", ratio=False))
        out.append(Metric("stray", "stamped messages not from the partner", "", False, "{:.0f}", ratio=False))
        return tuple(out)

    def provisioning(self) -> Provisioning:
        n = self.args.accounts + (self.args.accounts % 2)
        return Provisioning(bench_accounts(n))

    async def run(self, ctx: RunContext) -> ServerResult:
        args = self.args
        accounts = self.provisioning().accounts
        result = ServerResult()
        batch = await login_many(
            ctx, accounts, args.login_concurrency, "c", keep=True, on_session=_enable_sm if args.sm else None
        )
        if batch.errors:
            raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
        ctx.log(f"  {len(batch.sessions)} sessions online after {batch.wall:.1f}s")
        result.metrics["rss_mb_online"] = tree_rss(ctx.target.pid) / 1e6
        by_user = {s.account.user: s for s in batch.sessions}
        stats = Stats()
        peers: list[Peer] = []
        for i in range(0, len(accounts), 2):
            a, b = accounts[i].user, accounts[i + 1].user
            pa = Peer(by_user[a].conn, b, stats, args.sm)
            pb = Peer(by_user[b].conn, a, stats, args.sm)
            peers += [pa, pb]
        try:
            for rate in self.rates():
                await self._fixed_rate(ctx, peers, stats, rate, result)
            await self._saturation(ctx, peers, stats, result)
        finally:
            await close_all(list(by_user.values()), ctx.timeout)
        result.metrics["bounced"] = stats.bounced
        result.metrics["stray"] = stats.stray
        if stats.bounced or stats.stray:
            ctx.log(f"  warning: {stats.bounced} messages came back as errors, {stats.stray} from elsewhere")
        return result

    async def _drain(self, stats: Stats, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if stats.received >= stats.sent:
                return
            await asyncio.sleep(0.05)

    async def _fixed_rate(
        self, ctx: RunContext, peers: list[Peer], stats: Stats, rate: int, result: ServerResult
    ) -> None:
        args = self.args
        await self._drain(stats, 10)
        start = time.monotonic_ns()
        warm_ns = int(args.warmup * 1e9)
        end = start + warm_ns + int(args.duration * 1e9)
        stats.window = Window(start + warm_ns, end)
        stats.in_window_sent = 0
        received_before = 0
        meter: Meter | None = None
        sent, rr, n = 0, 0, len(peers)
        now = start
        while now < end:
            due = int(rate * (now - start) / 1e9) - sent
            if due > 0:
                # spread over senders round-robin; one write per sender per tick
                base, extra = divmod(due, n)
                if base:
                    for p in peers:
                        p.send(base)
                for _ in range(extra):
                    peers[rr].send(1)
                    rr = (rr + 1) % n
                sent += due
            if meter is None and now >= stats.window.start:
                meter = ctx.meter()
                received_before = stats.received
            await asyncio.sleep(0.002)
            now = time.monotonic_ns()
        assert meter is not None
        delta = meter.stop()
        delivered_in_window = stats.received - received_before
        await self._drain(stats, 10)
        lat = summary_ms([x / 1e9 for x in stats.window.latencies_ns])
        m, key = result.metrics, f"rate{rate}"
        m[f"{key}.msgs_per_s"] = delivered_in_window / delta.wall
        m[f"{key}.p50_ms"] = lat["p50"]
        m[f"{key}.p99_ms"] = lat["p99"]
        m[f"{key}.cpu_us_per_msg"] = (
            delta.server_cpu * 1e6 / delivered_in_window if delivered_in_window else math.nan
        )
        lost = stats.in_window_sent - len(stats.window.latencies_ns)
        m[f"{key}.lost"] = lost
        result.details[key] = {
            "latency_ms": lat,
            "sent_in_window": stats.in_window_sent,
            **cpu_details(delta),
        }
        ctx.log(
            f"  {rate}/s offered: {m[f'{key}.msgs_per_s']:.0f} delivered/s, p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms, server {delta.server_util:.2f} cores, "
            f"generator {delta.generator_util:.2f} cores, {lost} undelivered"
        )
        check_interference(ctx, delta)

    async def _saturation(
        self, ctx: RunContext, peers: list[Peer], stats: Stats, result: ServerResult
    ) -> None:
        args = self.args
        await self._drain(stats, 10)
        partner = {id(peers[i]): peers[i ^ 1] for i in range(len(peers))}
        for p in peers:
            p.credits_to = partner[id(p)]  # what p receives came from its partner: let it send again
        start = time.monotonic_ns()
        stats.window = Window(
            start + int(args.warmup * 1e9), start + int((args.warmup + args.duration) * 1e9)
        )
        for p in peers:
            p.send(args.window)
        await asyncio.sleep(args.warmup)
        meter = ctx.meter()
        before = stats.received
        timeline = []  # delivered per 0.5 s: shows stalls that an average hides
        last = before
        for _ in range(max(1, round(args.duration / 0.5))):
            await asyncio.sleep(0.5)
            timeline.append(stats.received - last)
            last = stats.received
        delivered = stats.received - before
        delta = meter.stop()
        for p in peers:
            p.credits_to = None
        await self._drain(stats, 10)
        lat = summary_ms([x / 1e9 for x in stats.window.latencies_ns])
        m = result.metrics
        m["saturation.msgs_per_s"] = delivered / delta.wall
        m["saturation.cpu_us_per_msg"] = delta.server_cpu * 1e6 / delivered if delivered else math.nan
        m["saturation.p50_ms"] = lat["p50"]
        m["saturation.generator_util"] = delta.generator_util
        result.details["saturation"] = {
            "window_per_direction": args.window,
            "in_flight": args.window * len(peers),
            "delivered_per_half_second": timeline,
            "latency_ms": lat,
            **cpu_details(delta),
        }
        ctx.log(
            f"  saturation: {m['saturation.msgs_per_s']:.0f} msgs/s, "
            f"{m['saturation.cpu_us_per_msg']:.1f} µs server CPU/msg ({delta.server_util:.2f} cores), "
            f"generator {delta.generator_util:.2f} cores, p50 {lat['p50']:.2f} ms"
        )
        ctx.log(f"  delivered per 0.5 s: {timeline}")
        check_interference(ctx, delta)


async def _enable_sm(session: Session) -> None:
    """XEP-0198 §3: enable stream management (no resumption) once bound and available."""
    session.conn.write(SM_ENABLE)
    await session.conn.expect(RE_SM_ENABLED, 15.0)
