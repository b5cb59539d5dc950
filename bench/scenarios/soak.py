"""``soak``: steady chat traffic while sessions come and go, for minutes (issue 15).

``--sessions`` accounts log in over TLS and stay. Every second ``--churn`` of them leave — half by a
clean logout (``</stream:stream>``, then waiting for the server's), half by dropping the TCP connection
without a word — and log back in (same resource) after ``--offline`` seconds. Meanwhile an open-loop
pacer sends ``--rate`` chat messages per second from random online sessions to the bare JIDs of random
other accounts, whatever those are doing at that moment. Every message has a unique id (``S<seq>;`` in
its body, with the send time), so each delivery is accounted for:

* **exactly once / duplicated / lost**, each loss classified by what its recipient was doing when it
  was sent: *online*; *online, then dropped* (its TCP connection dropped within ``--race-window``
  seconds after the send: a server without stream management cannot deliver what it wrote into a dead
  socket); *after clean logout* (logging out or back in: the server must store it offline and deliver
  it at the next login); *after abrupt drop* (dropped, not yet back: the server may not have noticed).
  Losses to online recipients or after a clean logout are bugs; the two drop classes are the price of
  running without XEP-0198.
* per ``--interval`` (10 s, by send time): messages sent, p50/p99/max delivery latency to recipients
  that were online, server RSS and open file descriptors, server CPU, logins done and failed.

After ``--minutes`` the churn and the traffic stop, everyone is back online, and the scenario waits
until deliveries stop (offline messages arrive with the reconnect) before it counts.

Stream management (``--sm``): :class:`StreamManagement` enables XEP-0198 after bind, acknowledges
what arrives, acknowledges everything before a clean logout (and counts nothing after that), and
resumes after an abrupt drop instead of logging in afresh. Then every kind of loss must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import random
import re
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from roost.core.gc_policy import collect_and_freeze
from roost.util.gcstats import GcStats

from ..targets import DOMAIN, Provisioning
from ..xmppload.client import STREAM_CLOSE, Account, Session, authenticate, login
from ..xmppload.conn import XmppError
from ..xmppload.procstat import tree_fds, tree_rss
from ..xmppload.sm import H_MOD, NS_SM, SmTracker
from ..xmppload.stats import percentile
from .base import (
    FOREIGN_LIMIT,
    Metric,
    RunContext,
    Scenario,
    ServerResult,
    bench_accounts,
    close_all,
    login_many,
)

RE_BODY = re.compile(rb"<body>S(\d+);R(\d+);")
END = b"</message>"
STREAM_END = b"</stream:stream>"
RE_RESUME_OUTCOME = re.compile(rb"<(resumed|failed)\b[^>]*?(?:/>|>.*?</\1>)", re.S)
RE_H = re.compile(rb"\bh=['\"](\d+)['\"]")
BODY_BYTES = 100

# What a recipient was doing when a message was sent to it.
ONLINE, AFTER_CLEAN, AFTER_DROP = 0, 1, 2
CLASS_NAMES = ("online", "after_clean_logout", "after_abrupt_drop")


class StreamManagement:
    """Generator-side XEP-0198 for the soak (``--sm``): one :class:`SmTracker` per account.

    Every login enables it with resumption; every received chunk is counted exactly (``<r/>`` is
    answered at once); a clean logout first acknowledges everything handled, and what arrives after
    that final ``<a/>`` is not counted as delivered (the server must treat it as unacknowledged and
    deliver it again, XEP-0198 §4); an abrupt drop is followed by ``<resume/>`` with the count of
    what was handled, and the stanzas of ours the server did not get are sent again (§5).
    """

    def __init__(self, ctx: RunContext, accounts: list[Account]) -> None:
        self.ctx = ctx
        self.accounts = accounts
        self.trackers: dict[int, SmTracker] = {}
        self.resumed = 0
        self.resume_failed: list[str] = []
        self.resent = 0

    def tracker(self, member: Member) -> SmTracker:
        t = self.trackers.get(member.idx)
        if t is None:
            t = self.trackers[member.idx] = SmTracker()
        return t

    def attach(self, member: Member, session: Session, resumed: bool) -> None:
        self.tracker(member).attach(session.conn.write, resumed)

    def detach(self, member: Member) -> None:
        self.tracker(member).detach()

    def on_received(self, member: Member, data: bytes) -> None:
        self.trackers[member.idx].feed(data)

    def counting(self, member: Member) -> bool:
        """False after the final ``<a/>`` of a clean logout: nothing more counts as delivered."""
        return not self.trackers[member.idx].closing

    def on_sent(self, member: Member, data: bytes) -> None:
        self.trackers[member.idx].on_sent(data)

    async def enable(self, member: Member) -> None:
        outcome = self.tracker(member).request_enable(asyncio.get_running_loop())
        name, _ = await asyncio.wait_for(outcome, self.ctx.timeout)
        if name != "enabled":
            raise RuntimeError(f"{member.user}: the server refused stream management ({name})")

    def before_close(self, member: Member) -> None:
        self.trackers[member.idx].final_ack()

    async def resume(self, member: Member) -> Session | None:
        """Log in again and resume; None when the server cannot (then the caller binds afresh)."""
        t = self.tracker(member)
        if t.resume_id is None:
            return None
        ctx = self.ctx
        account = self.accounts[member.idx]
        try:
            conn, features, timings, _ = await authenticate(
                ctx.target.endpoint, account, ctx.creds, ctx.login_options("send", member.idx)
            )
        except Exception as exc:
            self.resume_failed.append(f"{member.user}: {type(exc).__name__}: {exc}")
            return None
        try:
            if NS_SM not in features.string:
                raise XmppError("no stream management offered after authentication")
            conn.write(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>"
                       % (t.resume_id.encode(), t.handled % H_MOD))  # fmt: skip
            m = await conn.expect(RE_RESUME_OUTCOME, ctx.timeout)
        except Exception as exc:
            conn.abort()
            self.resume_failed.append(f"{member.user}: {type(exc).__name__}: {exc}")
            return None
        if m.group(1) != b"resumed":
            conn.abort()  # e.g. expired: the server re-routed what was unacknowledged
            self.resume_failed.append(f"{member.user}: {m.group(0)[:200]!r}")
            return None
        h = RE_H.search(m.group(0))
        self.resumed += 1
        session = Session(conn, account, f"{account.user}@{ctx.target.endpoint.domain}", timings)
        t.enabled = True  # the stanzas the server re-sends behind <resumed/> count (attach keeps h)
        if h is not None:
            again = t.resend_after(int(h.group(1)))
            for data in again:
                conn.write(data)
                t.on_sent(data)
            self.resent += len(again)
        return session


@dataclass(slots=True)
class Ledger:
    """Every message sent, and how often each arrived."""

    started_ns: int
    interval_ns: int
    sent_ns: array[int] = field(default_factory=lambda: array("q"))
    recipient: array[int] = field(default_factory=lambda: array("i"))
    klass: bytearray = field(default_factory=bytearray)
    count: bytearray = field(default_factory=bytearray)
    #: Latency (ns) of first deliveries to recipients that were online, by send interval.
    latencies: dict[int, list[int]] = field(default_factory=dict)
    received: int = 0
    bounced: int = 0
    stray: int = 0  # a message of ours at the wrong account, or an id we never sent

    def add(self, recipient: int, klass: int, now: int) -> int:
        seq = len(self.klass)
        self.sent_ns.append(now)
        self.recipient.append(recipient)
        self.klass.append(klass)
        self.count.append(0)
        return seq

    def arrived(self, seq: int, member: int, now: int) -> None:
        if seq >= len(self.count) or self.recipient[seq] != member:
            self.stray += 1
            return
        self.received += 1
        c = self.count[seq]
        if c < 255:
            self.count[seq] = c + 1
        if c == 0 and self.klass[seq] == ONLINE:
            sent = self.sent_ns[seq]
            bucket = (sent - self.started_ns) // self.interval_ns
            self.latencies.setdefault(bucket, []).append(now - sent)


class Member:
    """One account: its current connection (if any), what it is doing, and its receive sink."""

    __slots__ = ("_buf", "closing", "drops", "idx", "ledger", "session", "sm", "state")

    def __init__(self, idx: int, ledger: Ledger, sm: StreamManagement | None) -> None:
        self.idx = idx
        self.ledger = ledger
        self.sm = sm
        self.session: Session | None = None
        self.state = ONLINE
        self.drops: list[int] = []  # monotonic ns of each abrupt drop
        self.closing: asyncio.Future[None] | None = None
        self._buf = bytearray()

    @property
    def user(self) -> str:
        return f"user{self.idx + 1}"

    def attach(self, session: Session, resumed: bool = False) -> None:
        self.session = session
        self._buf.clear()
        if self.sm is not None:
            self.sm.attach(self, session, resumed)
        session.conn.set_sink(self.on_data)

    def on_data(self, data: bytes) -> None:
        sm = self.sm
        if sm is not None:
            sm.on_received(self, data)
            if not sm.counting(self):
                # After a clean logout's final <a/>: only the server's closing tag matters now.
                closing = self.closing
                if closing is not None and not closing.done() and STREAM_END in bytes(self._buf) + data:
                    closing.set_result(None)
                self._buf[:] = data[-len(STREAM_END) :]
                return
        buf = self._buf
        buf += data
        closing = self.closing
        if closing is not None and not closing.done() and STREAM_END in buf:
            closing.set_result(None)
        end = buf.rfind(END)
        if end < 0:
            if len(buf) > 1 << 20:
                del buf[: -len(STREAM_END)]  # no message traffic; keep the tail for a split closing tag
            return
        now = time.monotonic_ns()
        ledger = self.ledger
        for seg in bytes(buf[:end]).split(END):
            m = RE_BODY.search(seg)
            if m is None:
                continue
            start = seg.rfind(b"<message", 0, m.start())
            head = seg[start : seg.find(b">", start)]
            if b"'error'" in head or b'"error"' in head:
                ledger.bounced += 1  # an error reply carrying our body is not a delivery
                continue
            ledger.arrived(int(m.group(1)), self.idx, now)
        del buf[:end]


@dataclass(slots=True)
class IntervalSample:
    t: float  # seconds since traffic started, at the end of the interval
    rss_mb: float
    fds: int
    generator_gc_ms: float  # the generator's longest GC pause in the interval
    generator_lag_ms: float  # the generator's longest event-loop delay in the interval
    server_util: float
    generator_util: float
    others_load: float  # CPU of the server's core used by other processes (NaN when not pinned)
    sent: int
    online: int
    logins: int
    login_errors: int


class SoakScenario(Scenario):
    name = "soak"
    help = "steady chat under churn (clean logouts and dropped connections): delivery, latency, RSS"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sessions", type=int, default=2000, help="accounts online (at least 2)")
        parser.add_argument(
            "--churn", type=float, default=0.01, help="fraction of the sessions leaving per second"
        )
        parser.add_argument(
            "--abrupt-share", type=float, default=0.5,
            help="share of leavers that drop TCP instead of logging out",
        )  # fmt: skip
        parser.add_argument(
            "--offline", type=float, default=2.0, help="seconds a leaver stays away before logging back in"
        )
        parser.add_argument("--rate", type=float, default=500, help="messages per second, to bare JIDs")
        parser.add_argument("--minutes", type=float, default=30.0, help="length of the churn + traffic phase")
        parser.add_argument(
            "--warmup", type=float, default=60.0,
            help="seconds at the start left out of the after-warm-up figures",
        )  # fmt: skip
        parser.add_argument("--interval", type=float, default=10.0, help="seconds per reported interval")
        parser.add_argument(
            "--race-window", type=float, default=2.0,
            help="a loss counts as 'online, then dropped' if its recipient dropped TCP within this long",
        )  # fmt: skip
        parser.add_argument(
            "--drain", type=float, default=15.0,
            help="at the end, wait until no delivery for this long (an overloaded server may pause longer)",
        )  # fmt: skip
        parser.add_argument("--login-concurrency", type=int, default=50)
        parser.add_argument(
            "--sm", action="store_true",
            help="stream management (XEP-0198) with resumption: acks, resume after a TCP drop",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=1, help="random seed (senders, recipients, leavers)")

    def metric_specs(self) -> tuple[Metric, ...]:
        def m(
            key: str, label: str, unit: str = "", higher: bool = False, fmt: str = "{:.0f}", r: bool = False
        ) -> Metric:
            return Metric(key, label, unit, higher, fmt, ratio=r)

        return (
            m("sent", "messages sent"),
            m("exactly_once", "delivered exactly once"),
            m("duplicated", "delivered more than once"),
            m("lost.online", "lost: recipient online"),
            m("lost.online_then_dropped", "lost: recipient online, then dropped TCP"),
            m("lost.after_clean_logout", "lost: recipient after clean logout"),
            m("lost.after_abrupt_drop", "lost: recipient after TCP drop"),
            m("bounced", "error replies instead of deliveries"),
            m("p50_ms", "p50 latency after warm-up (online)", "ms", fmt="{:.2f}", r=True),
            m("p99_worst_ms", "worst interval p99 after warm-up (online)", "ms", fmt="{:.2f}", r=True),
            m("p99_median_ms", "median interval p99 after warm-up (online)", "ms", fmt="{:.2f}", r=True),
            m("max_ms", "slowest delivery after warm-up (online)", "ms", fmt="{:.1f}", r=True),
            m("rss_mb_warm", "server RSS at the end of warm-up", "MB", fmt="{:.1f}", r=True),
            m("rss_mb_end", "server RSS at the end", "MB", fmt="{:.1f}", r=True),
            m("rss_growth_pct", "RSS growth after warm-up", "%", fmt="{:.1f}"),
            m("rss_growth_last_half_pct", "RSS growth over the last half", "%", fmt="{:.1f}"),
            m("fds_end", "server open files at the end"),
            m("server_util", "server CPU use", "cores", fmt="{:.2f}", r=True),
            m("generator_util", "generator CPU use", "cores", fmt="{:.2f}"),
            m("others_load_max", "others on the pinned CPUs (worst interval)", "cores", fmt="{:.2f}"),
            m("logins", "re-logins"),
            m("login_errors", "failed logins"),
            m("server_closed", "sessions closed by the server"),
            m("sm_resumed", "SM: sessions resumed after a TCP drop"),
            m("sm_resume_failed", "SM: resumptions refused (then a fresh login)"),
            m("sm_resent", "SM: own stanzas sent again after resuming"),
        )

    def provisioning(self) -> Provisioning:
        return Provisioning(bench_accounts(max(2, self.args.sessions)))

    async def run(self, ctx: RunContext) -> ServerResult:
        prov = self.provisioning()
        sm = StreamManagement(ctx, prov.accounts) if self.args.sm else None
        return await SoakRun(self.args, ctx, sm=sm).run(prov)


class SoakRun:
    """One soak against one server."""

    def __init__(self, args: argparse.Namespace, ctx: RunContext, sm: StreamManagement | None) -> None:
        self.args = args
        self.ctx = ctx
        self.sm = sm
        self.rng = random.Random(args.seed)
        self.members: list[Member] = []
        self.online: list[int] = []  # indexes of ONLINE members (senders), with positions below
        self.position: dict[int, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.logins = 0
        self.login_errors: list[str] = []
        self.stopping = False
        self.ledger = Ledger(0, int(args.interval * 1e9))
        self.accounts: list[Account] = []
        self.server_closed = 0  # sessions the server closed on its own (should stay 0)
        pad = BODY_BYTES - len("S0000000;R00000;")
        self.pad = b"x" * max(0, pad)

    # -- membership -------------------------------------------------------------------------------
    def _set_online(self, m: Member) -> None:
        m.state = ONLINE
        self.position[m.idx] = len(self.online)
        self.online.append(m.idx)

    def _set_offline(self, m: Member, state: int) -> None:
        m.state = state
        pos = self.position.pop(m.idx)
        last = self.online.pop()
        if last != m.idx:
            self.online[pos] = last
            self.position[last] = pos

    async def _login(self, m: Member) -> None:
        """Log ``m`` back in (retrying), attach its sink, mark it online."""
        ctx = self.ctx
        while True:
            try:
                session = await login(
                    ctx.target.endpoint,
                    self.accounts[m.idx],
                    f"soak{m.idx}",
                    ctx.creds,
                    ctx.login_options("send", m.idx),
                )
            except Exception as exc:
                self.login_errors.append(f"{m.user}: {type(exc).__name__}: {exc}")
                if self.stopping and len(self.login_errors) > 1000:
                    return
                await asyncio.sleep(1.0)
                continue
            break
        # presence "send": nothing is read before the sink is attached, so offline messages and the
        # presence echo that follow the login all reach it.
        self._attach(m, session)
        self.logins += 1
        if self.sm is not None:
            await self.sm.enable(m)
        self._set_online(m)

    async def _leave_clean(self, m: Member) -> None:
        session = m.session
        assert session is not None
        conn = session.conn
        loop = asyncio.get_running_loop()
        m.closing = loop.create_future()
        try:
            if m.sm is not None:
                m.sm.before_close(m)
            conn.write(STREAM_CLOSE)
            # Keep reading (and counting) until the server's closing tag: what it sends before that
            # was delivered (RFC 6120 §4.4).
            await asyncio.wait_for(
                asyncio.wait([m.closing, conn.lost], return_when=asyncio.FIRST_COMPLETED), self.ctx.timeout
            )
        except TimeoutError:
            pass
        finally:
            m.closing = None
            if conn.transport is not None:
                conn.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(conn.lost), self.ctx.timeout)
        conn.abort()
        if m.sm is not None:
            m.sm.detach(m)
        m.session = None
        await asyncio.sleep(self.args.offline)
        await self._login(m)

    async def _leave_abrupt(self, m: Member) -> None:
        session = m.session
        assert session is not None
        m.drops.append(time.monotonic_ns())
        session.conn.abort()  # no closing tag, no close_notify
        if m.sm is not None:
            m.sm.detach(m)
        m.session = None
        await asyncio.sleep(self.args.offline)
        if self.sm is not None:
            resumed = await self.sm.resume(m)
            if resumed is not None:
                self._attach(m, resumed, resumed=True)
                self._set_online(m)
                return
        await self._login(m)

    def _attach(self, m: Member, session: Session, resumed: bool = False) -> None:
        m.attach(session, resumed)
        session.conn.lost.add_done_callback(lambda _: self._lost(m, session))

    def _lost(self, m: Member, session: Session) -> None:
        """The server closed an online session we did not close: count it, log it back in."""
        if m.session is not session or m.state != ONLINE or self.stopping:
            return
        self.server_closed += 1
        self._set_offline(m, AFTER_DROP)
        m.session = None
        self._spawn(self._login(m))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- load ---------------------------------------------------------------------------------------
    def _send(self, now: int) -> None:
        rng = self.rng
        members = self.members
        sender = members[self.online[rng.randrange(len(self.online))]]
        r = rng.randrange(len(members) - 1)
        if r >= sender.idx:
            r += 1
        recipient = members[r]
        seq = self.ledger.add(r, recipient.state, now)
        assert sender.session is not None
        data = b"<message to='user%d@%s' id='s%d' type='chat'><body>S%d;R%d;T%d;%s</body></message>" % (
            r + 1, DOMAIN.encode(), seq, seq, r, now, self.pad,
        )  # fmt: skip
        sender.session.conn.write(data)
        if sender.sm is not None:
            sender.sm.on_sent(sender, data)

    async def _pacer(self, end: float) -> None:
        rate = self.args.rate
        start = time.monotonic()
        sent = 0
        while not self.stopping:
            now = time.monotonic()
            if now >= end:
                return
            due = int(rate * (now - start)) - sent
            if due > 0 and self.online:
                ns = time.monotonic_ns()
                for _ in range(due):
                    self._send(ns)
                sent += due
            await asyncio.sleep(0.002)

    async def _churn(self, end: float) -> None:
        args = self.args
        per_second = args.churn * len(self.members)
        owed = 0.0
        step = 0.1
        while not self.stopping and time.monotonic() < end:
            await asyncio.sleep(step)
            owed += per_second * step
            while owed >= 1 and len(self.online) > 2:
                owed -= 1
                m = self.members[self.online[self.rng.randrange(len(self.online))]]
                abrupt = self.rng.random() < args.abrupt_share
                self._set_offline(m, AFTER_DROP if abrupt else AFTER_CLEAN)
                self._spawn(self._leave_abrupt(m) if abrupt else self._leave_clean(m))

    # -- the run ------------------------------------------------------------------------------------
    async def run(self, prov: Provisioning) -> ServerResult:
        args, ctx = self.args, self.ctx
        accounts = self.accounts = prov.accounts
        batch = await login_many(ctx, accounts, args.login_concurrency, "soak", presence="echo")
        if batch.errors:
            await close_all(batch.sessions, ctx.timeout)
            raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
        ctx.log(f"  {len(batch.sessions)} sessions online after {batch.wall:.1f}s")
        by_user = {s.account.user: s for s in batch.sessions}
        for i in range(len(accounts)):
            m = Member(i, self.ledger, self.sm)
            self._attach(m, by_user[m.user])
            self.members.append(m)
            self._set_online(m)
        if self.sm is not None:
            await asyncio.gather(*(self.sm.enable(m) for m in self.members))

        # The generator holds as many sessions as the server: left to Python's defaults, its own full
        # collections stalled it for ~200 ms every 20 s at 10,000 sessions, and every message in
        # flight then looked 200 ms late. Same cure as the server's (roost.core.gc_policy): freeze
        # what the logins built, collect and freeze the rest once per interval; its longest pause per
        # interval is reported, to tell its stalls from the server's.
        gen_gc = GcStats()
        gen_gc.install()
        collect_and_freeze()
        gc.set_threshold(5000, 10, 10)
        gen_gc.reset()

        duration = args.minutes * 60
        self.ledger.started_ns = time.monotonic_ns()
        t0 = time.monotonic()
        end = t0 + duration
        pid = ctx.target.pid
        samples: list[IntervalSample] = []
        lag = [0.0]  # the generator's own longest event-loop delay in the interval (seconds)
        lag_task = asyncio.get_running_loop().create_task(_watch_lag(lag))
        pacer = asyncio.get_running_loop().create_task(self._pacer(end))
        churn = asyncio.get_running_loop().create_task(self._churn(end))
        meter = ctx.meter()
        sent0, logins0, errors0 = 0, 0, 0
        rss0 = tree_rss(pid)
        ctx.log(f"  soak: {duration:.0f}s, server RSS {rss0 / 1e6:.1f} MB, {tree_fds(pid)} fds")
        try:
            next_t = t0 + args.interval
            while time.monotonic() < end - 1e-3:
                await asyncio.sleep(max(0.0, min(next_t, end) - time.monotonic()))
                delta = meter.stop()
                meter = ctx.meter()
                collect_and_freeze()
                gen_gc_ms = gen_gc.max_pause_seconds * 1000
                gen_gc.reset()
                gen_lag_ms, lag[0] = lag[0] * 1000, 0.0
                sent = len(self.ledger.klass)
                s = IntervalSample(
                    t=round(time.monotonic() - t0, 2),
                    rss_mb=tree_rss(pid) / 1e6,
                    fds=tree_fds(pid),
                    generator_gc_ms=gen_gc_ms,
                    generator_lag_ms=gen_lag_ms,
                    server_util=delta.server_util,
                    generator_util=delta.generator_util,
                    others_load=max(delta.foreign_load, delta.generator_foreign_load),
                    sent=sent - sent0,
                    online=len(self.online),
                    logins=self.logins - logins0,
                    login_errors=len(self.login_errors) - errors0,
                )
                samples.append(s)
                sent0, logins0, errors0 = sent, self.logins, len(self.login_errors)
                lat = self.ledger.latencies.get(len(samples) - 1, [])
                ctx.log(
                    f"  t={s.t:.0f}s sent {s.sent} p50 {_pct_ms(lat, 50):.2f} ms "
                    f"p99 {_pct_ms(lat, 99):.2f} ms "
                    f"max {max(lat, default=0) / 1e6:.1f} ms; RSS {s.rss_mb:.1f} MB, {s.fds} fds; "
                    f"server {s.server_util:.2f} cores; {s.online} online, {s.logins} logins; "
                    f"generator gc ≤{s.generator_gc_ms:.0f} ms, lag ≤{s.generator_lag_ms:.0f} ms"
                    + (f", {s.login_errors} failed" if s.login_errors else "")
                    + (
                        f"; BUSY: others used {s.others_load:.2f} cores"
                        if s.others_load > FOREIGN_LIMIT
                        else ""
                    )
                )
                next_t += args.interval
        finally:
            self.stopping = True
            gen_gc.uninstall()
            lag_task.cancel()
            for t in (pacer, churn):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(pacer, churn, return_exceptions=True)
        # Everyone back (the leavers finish their re-login), then wait for the last deliveries.
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=60)
        await self._quiet()
        rss_end = tree_rss(pid)
        fds_end = tree_fds(pid)
        result = self._result(samples, rss0, rss_end, fds_end)
        await close_all([m.session for m in self.members if m.session is not None], ctx.timeout)
        for t in list(self.tasks):
            t.cancel()
        return result

    async def _quiet(self) -> None:
        deadline = time.monotonic() + 120
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if self.ledger.received != last:
                last, since = self.ledger.received, time.monotonic()
            elif time.monotonic() - since >= self.args.drain:
                return

    def _result(self, samples: list[IntervalSample], rss0: int, rss_end: int, fds_end: int) -> ServerResult:
        args, ledger = self.args, self.ledger
        result = ServerResult()
        mt = result.metrics
        counts = ledger.count
        sent = len(counts)
        lost = {name: 0 for name in (*CLASS_NAMES, "online_then_dropped")}
        dup = {name: 0 for name in CLASS_NAMES}
        race_ns = int(args.race_window * 1e9)
        exactly = 0
        lost_examples: list[dict[str, Any]] = []  # losses that are bugs: for hunting them down
        for seq in range(sent):
            c = counts[seq]
            if c == 1:
                exactly += 1
                continue
            name = CLASS_NAMES[ledger.klass[seq]]
            if c > 1:
                dup[name] += 1
                continue
            if name == "online":
                drops = self.members[ledger.recipient[seq]].drops
                t = ledger.sent_ns[seq]
                i = bisect_left(drops, t)
                if i < len(drops) and drops[i] - t <= race_ns:
                    name = "online_then_dropped"
            lost[name] += 1
            if len(lost_examples) < 50 and name in ("online", "after_clean_logout"):
                lost_examples.append(
                    {
                        "id": f"s{seq}",
                        "to": self.members[ledger.recipient[seq]].user,
                        "class": name,
                        "sent_s": round((ledger.sent_ns[seq] - ledger.started_ns) / 1e9, 3),
                    }
                )
        mt["sent"] = sent
        mt["exactly_once"] = exactly
        mt["duplicated"] = sum(dup.values())
        for name, n in lost.items():
            mt[f"lost.{name}"] = n
        mt["bounced"] = ledger.bounced
        # latency per interval (by send time) and after warm-up
        intervals: list[dict[str, Any]] = []
        warm_buckets = math.ceil(args.warmup / args.interval)
        after: list[int] = []
        p99s: list[float] = []
        for i, s in enumerate(samples):
            lat = ledger.latencies.get(i, [])
            row = {
                "t": s.t,
                "sent": s.sent,
                "delivered_online": len(lat),
                "p50_ms": _pct_ms(lat, 50),
                "p99_ms": _pct_ms(lat, 99),
                "max_ms": max(lat, default=0) / 1e6 if lat else math.nan,
                "rss_mb": s.rss_mb,
                "fds": s.fds,
                "generator_gc_ms": s.generator_gc_ms,
                "generator_lag_ms": s.generator_lag_ms,
                "server_util": s.server_util,
                "generator_util": s.generator_util,
                "others_load": s.others_load,
                "online": s.online,
                "logins": s.logins,
                "login_errors": s.login_errors,
            }
            intervals.append(row)
            if i >= warm_buckets and lat:
                after += lat
                p99s.append(row["p99_ms"])
        if not after:  # a run shorter than its warm-up: report everything
            after = [x for v in ledger.latencies.values() for x in v]
            p99s = [r["p99_ms"] for r in intervals if not math.isnan(r["p99_ms"])]
        mt["p50_ms"] = _pct_ms(after, 50)
        mt["p99_worst_ms"] = max(p99s, default=math.nan)
        mt["p99_median_ms"] = percentile(p99s, 50) if p99s else math.nan
        mt["max_ms"] = max(after, default=0) / 1e6 if after else math.nan
        warm = samples[warm_buckets - 1] if 0 < warm_buckets <= len(samples) else None
        rss_warm = warm.rss_mb if warm is not None else rss0 / 1e6
        mt["rss_mb_warm"] = rss_warm
        mt["rss_mb_end"] = rss_end / 1e6
        mt["rss_growth_pct"] = (rss_end / 1e6 - rss_warm) / rss_warm * 100 if rss_warm else math.nan
        half = samples[len(samples) // 2 - 1].rss_mb if len(samples) >= 2 else rss0 / 1e6
        mt["rss_growth_last_half_pct"] = (rss_end / 1e6 - half) / half * 100 if half else math.nan
        mt["fds_end"] = fds_end
        mt["server_util"] = _mean([s.server_util for s in samples])
        mt["generator_util"] = _mean([s.generator_util for s in samples])
        loads = [s.others_load for s in samples if not math.isnan(s.others_load)]
        mt["others_load_max"] = max(loads, default=math.nan)
        busy = sum(1 for x in loads if x > FOREIGN_LIMIT)
        if busy:
            self.ctx.log(
                f"  warning: in {busy} of {len(samples)} intervals other processes used the pinned CPUs; "
                "latencies there are not the server's alone (is the machine idle?)"
            )
        mt["logins"] = self.logins
        mt["login_errors"] = len(self.login_errors)
        mt["server_closed"] = self.server_closed
        sm = self.sm
        mt["sm_resumed"] = sm.resumed if sm is not None else 0
        mt["sm_resume_failed"] = len(sm.resume_failed) if sm is not None else 0
        mt["sm_resent"] = sm.resent if sm is not None else 0
        result.details = {
            "intervals": intervals,
            "duplicated": dup,
            "lost": lost,
            "stray": ledger.stray,
            "lost_examples": lost_examples,
            "rss_mb_start": rss0 / 1e6,
            "login_error_examples": self.login_errors[:5],
            "drops": sum(len(m.drops) for m in self.members),
            "server_closed": self.server_closed,
            "sm_resume_failed_examples": sm.resume_failed[:5] if sm is not None else [],
            "sm_parse_errors": [t.error for t in sm.trackers.values() if t.error][:5]
            if sm is not None
            else [],
        }
        self.ctx.log(
            f"  {sent} sent: {exactly} exactly once, {mt['duplicated']} duplicated, lost {lost}; "
            f"RSS {rss_warm:.1f} → {rss_end / 1e6:.1f} MB; p99 worst {mt['p99_worst_ms']:.2f} ms"
        )
        if self.login_errors:
            self.ctx.log(f"  {len(self.login_errors)} failed logins, e.g. {self.login_errors[0]}")
        return result


def _pct_ms(values_ns: list[int], p: float) -> float:
    return percentile(values_ns, p) / 1e6 if values_ns else math.nan


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


async def _watch_lag(worst: list[float], period: float = 0.005) -> None:
    """Keep ``worst[0]`` at the longest the generator's event loop was late for a ``period`` sleep:
    a late generator reads late, and its messages look late."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(period)
        late = loop.time() - before - period
        if late > worst[0]:
            worst[0] = late
