"""``mucfanout``: one chat room, many occupants (XEP-0045): groupchat fan-out, then join time.

Fan-out: ``--occupants`` (100) sessions join room ``fanout@conference.localhost``; ``--senders`` (5) of
them, spread over the join order, send ~100-byte groupchat messages. The room reflects every message to
every occupant, the sender included (XEP-0045 §7.4), so one message is ``occupants`` deliveries. Bodies
carry the send time; every occupant measures latency on every delivery.

* fixed offered loads (``--rates``, messages per second into the room, default 20 and 50): delivered
  groupchat stanzas/s and p50/p99 latency of the messages sent in the window, server CPU per delivery;
* saturation: closed loop, each sender keeps ``--window`` messages in flight (its own reflected copy
  releases the next one); delivered stanzas/s, latency, CPU per delivery.

Join: ``--join-occupants`` (500) sessions join one fresh room each for every value of
``--join-concurrency`` (default 1 and 50: one join at a time, then 50 joins in flight). A join is done
when the joiner has its own self-presence (status 110, sent after the presence of every occupant already
there, XEP-0045 §7.2.3). Reported: time from the first join to the last self-presence, joins/s, per-join
p50/p99, server CPU per join.

Every room is created by its first occupant, which then accepts the default configuration as an instant
room (XEP-0045 §10.1.2: an empty ``jabber:x:data`` submit), since a new room stays locked until then.
Every join asks for no history (``<history maxstanzas='0'/>``). The servers' room defaults are made
alike in bench/targets.py: public, temporary, no archive or log, up to 1,000 occupants, 20 messages of
history, no per-occupant message rate limit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import time
from typing import Any

from ..targets import MUC_DOMAIN, Provisioning
from ..xmppload.client import Session
from ..xmppload.conn import XmppConn, XmppError
from ..xmppload.procstat import Meter
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
from .oneone import BODY_BYTES, END, RE_STAMP, Window

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
FANOUT_ROOM = "fanout"
RE_CONFIG_RESULT = re.compile(rb"<iq\b[^>]*\bid=['\"]cfg1['\"]")


def room_jid(room: str) -> str:
    return f"{room}@{MUC_DOMAIN}"


def join_stanza(room: str, nick: str) -> bytes:
    return (
        f"<presence to='{room_jid(room)}/{nick}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>"
    ).encode()


def instant_room(room: str) -> bytes:
    """XEP-0045 §10.1.2: the owner accepts the default configuration."""
    return (
        f"<iq type='set' id='cfg1' to='{room_jid(room)}'><query xmlns='{NS_MUC_OWNER}'>"
        "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ).encode()


class JoinSink:
    """A session's sink while it joins: notices its own self-presence, then just counts presence."""

    __slots__ = ("_error", "_marks", "_tail", "joined", "presences", "presences_at_join")

    def __init__(self, room: str, nick: str) -> None:
        full = f"{room_jid(room)}/{nick}".encode()
        self._marks = (b"from='" + full + b"'", b'from="' + full + b'"')
        self._error = (b"type='error'", b'type="error"')
        self._tail = b""
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.presences = 0
        self.presences_at_join = 0  # presence stanzas up to the chunk holding the self-presence

    def __call__(self, data: bytes) -> None:
        self.presences += data.count(b"<presence")
        if self.joined.done():
            return
        chunk = self._tail + data
        if any(mark in chunk for mark in self._marks):
            self.presences_at_join = self.presences
            self.joined.set_result(None)
        elif any(e in chunk for e in self._error):
            at = max(chunk.find(e) for e in self._error)
            snippet = chunk[max(0, at - 300) : at + 200]
            self.joined.set_exception(XmppError(f"join refused: {snippet!r}"))
        else:
            self._tail = chunk[-200:]


async def join(conn: XmppConn, room: str, nick: str, time_limit: float) -> tuple[float, JoinSink]:
    """Join ``room`` as ``nick``; seconds until the self-presence arrived, and the sink left counting."""
    sink = JoinSink(room, nick)
    conn.set_sink(sink)
    t0 = time.perf_counter()
    conn.write(join_stanza(room, nick))
    try:
        await asyncio.wait_for(asyncio.shield(sink.joined), time_limit)
    except TimeoutError:
        raise XmppError(f"no self-presence from {room_jid(room)}/{nick} after {time_limit:.0f}s") from None
    return time.perf_counter() - t0, sink


async def create_room(conn: XmppConn, room: str, nick: str, time_limit: float) -> float:
    """Join as the first occupant (creating the room) and unlock it as an instant room."""
    t0 = time.perf_counter()
    _, sink = await join(conn, room, nick, time_limit)
    conn.set_sink(None)
    conn.write(instant_room(room))
    await conn.expect(RE_CONFIG_RESULT, time_limit)
    conn.set_sink(sink)
    return time.perf_counter() - t0


class FanStats:
    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.bounced = 0
        self.window = Window()
        self.in_window_sent = 0


class Occupant:
    """One occupant of the fan-out room: counts and times deliveries; a sender also sends."""

    __slots__ = ("_buf", "conn", "credits", "own", "prefix", "stats", "suffix")

    def __init__(self, conn: XmppConn, nick: str, stats: FanStats) -> None:
        self.conn = conn
        self.stats = stats
        self.prefix = f"<message to='{room_jid(FANOUT_ROOM)}' type='groupchat'><body>T".encode()
        pad = BODY_BYTES - len("T0000000000000000000;")
        self.suffix = b";" + b"x" * pad + b"</body></message>"
        self.own = f"{room_jid(FANOUT_ROOM)}/{nick}".encode()  # reflections of our own messages
        self.credits = False  # saturation: our own reflected message lets us send the next one
        self._buf = bytearray()
        conn.set_sink(self.on_data)

    def send(self, count: int) -> None:
        now = time.monotonic_ns()
        self.conn.write((self.prefix + b"%019d" % now + self.suffix) * count)
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
                buf.clear()
            return
        now = time.monotonic_ns()
        win = self.stats.window
        n = own = 0
        for seg in bytes(buf[:end]).split(END):
            m = RE_STAMP.search(seg)
            if m is None:
                continue
            start = seg.rfind(b"<message", 0, m.start())
            head = seg[start : seg.find(b">", start)]
            if b"'error'" in head or b'"error"' in head:
                self.stats.bounced += 1
                continue
            n += 1
            if self.own in head:
                own += 1
            sent = int(m.group(1))
            if win.start <= sent < win.end:
                win.latencies_ns.append(now - sent)
        del buf[:end]
        self.stats.received += n
        if own and self.credits:
            self.send(own)


class MucFanoutScenario(Scenario):
    name = "mucfanout"
    help = "one MUC room: groupchat fan-out (fixed rates and saturation) and join time for a big room"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--occupants", type=int, default=100, help="occupants of the fan-out room")
        parser.add_argument("--senders", type=int, default=5, help="occupants that send")
        parser.add_argument(
            "--rates", default="20,50", help="fixed offered loads, messages/s into the room (all senders)"
        )
        parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per load")
        parser.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic before measuring")
        parser.add_argument("--window", type=int, default=5, help="saturation: messages in flight per sender")
        parser.add_argument(
            "--join-occupants", type=int, default=500, help="occupants of each join-time room (0: skip)"
        )
        parser.add_argument(
            "--join-concurrency", default="1,50", help="joins in flight, one fresh room per value"
        )
        parser.add_argument("--login-concurrency", type=int, default=50)
        parser.add_argument("--phases", default="fanout,join", help="fanout, join or both (default both)")

    def rates(self) -> list[int]:
        return [int(r) for r in str(self.args.rates).split(",") if r.strip()]

    def join_levels(self) -> list[int]:
        if self.args.join_occupants <= 0 or "join" not in self.phases():
            return []
        return [int(c) for c in str(self.args.join_concurrency).split(",") if c.strip()]

    def phases(self) -> list[str]:
        out = [p.strip() for p in str(self.args.phases).split(",") if p.strip()]
        if not out or any(p not in ("fanout", "join") for p in out):
            raise SystemExit(f"--phases: choose from fanout, join (got {self.args.phases!r})")
        return out

    def metric_specs(self) -> tuple[Metric, ...]:
        out: list[Metric] = []
        if "fanout" in self.phases():
            o = self.args.occupants
            out += [
                Metric("saturation.delivered_per_s", f"{o} occupants, saturation: delivered/s", "1/s", True,
                       "{:.0f}"),
                Metric("saturation.p50_ms", "saturation: p50 latency", "ms", False, "{:.1f}"),
                Metric("saturation.p99_ms", "saturation: p99 latency", "ms", False, "{:.1f}"),
                Metric("saturation.cpu_us_per_delivery", "saturation: server CPU/delivery", "µs", False),
                Metric("saturation.generator_util", "saturation: generator CPU use", "cores", False, "{:.2f}",
                       ratio=False),
            ]  # fmt: skip
            for r in self.rates():
                out += [
                    Metric(f"rate{r}.delivered_per_s", f"{r} msgs/s offered: delivered/s", "1/s", True,
                           "{:.0f}"),
                    Metric(f"rate{r}.p50_ms", f"{r} msgs/s offered: p50 latency", "ms", False, "{:.2f}"),
                    Metric(f"rate{r}.p99_ms", f"{r} msgs/s offered: p99 latency", "ms", False, "{:.2f}"),
                    Metric(f"rate{r}.cpu_us_per_delivery", f"{r} msgs/s offered: server CPU/delivery", "µs",
                           False),
                    Metric(f"rate{r}.lost", f"{r} msgs/s offered: undelivered", "", False, "{:.0f}",
                           ratio=False),
                ]  # fmt: skip
        j = self.args.join_occupants
        for c in self.join_levels():
            out += [
                Metric(f"join{c}.total_s", f"{j} joins, {c} in flight: time to last self-presence", "s",
                       False, "{:.2f}"),
                Metric(f"join{c}.p50_ms", f"{j} joins, {c} in flight: p50 per join", "ms", False, "{:.2f}"),
                Metric(f"join{c}.p99_ms", f"{j} joins, {c} in flight: p99 per join", "ms", False, "{:.2f}"),
                Metric(f"join{c}.cpu_ms_per_join", f"{j} joins, {c} in flight: server CPU/join", "ms", False,
                       "{:.2f}"),
            ]  # fmt: skip
        out.append(Metric("bounced", "error replies instead of deliveries", "", False, "{:.0f}", ratio=False))
        return tuple(out)

    def sessions_needed(self) -> int:
        n = self.args.occupants if "fanout" in self.phases() else 0
        if self.join_levels():
            n = max(n, self.args.join_occupants)
        return n

    def provisioning(self) -> Provisioning:
        return Provisioning(bench_accounts(self.sessions_needed()))

    async def run(self, ctx: RunContext) -> ServerResult:
        args = self.args
        if "fanout" in self.phases() and not 0 < args.senders <= args.occupants:
            raise SystemExit("--senders must be between 1 and --occupants")
        accounts = self.provisioning().accounts
        result = ServerResult()
        batch = await login_many(ctx, accounts, args.login_concurrency, "m", keep=True)
        if batch.errors:
            await close_all(batch.sessions, ctx.timeout)
            raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
        by_user = {s.account.user: s for s in batch.sessions}
        sessions = [by_user[a.user] for a in accounts]  # in account order
        ctx.log(f"  {len(sessions)} sessions online after {batch.wall:.1f}s")
        stats = FanStats()
        try:
            if "fanout" in self.phases():
                await self._fanout(ctx, sessions[: args.occupants], stats, result)
            for c in self.join_levels():
                await asyncio.sleep(1.0)
                await self._join_phase(ctx, sessions[: args.join_occupants], c, result)
        finally:
            t0 = time.perf_counter()
            await close_all(sessions, max(ctx.timeout, 60.0))
            ctx.log(f"  closed {len(sessions)} sessions in {time.perf_counter() - t0:.1f}s")
        result.metrics["bounced"] = stats.bounced
        if stats.bounced:
            ctx.log(f"  warning: {stats.bounced} groupchat messages came back as errors")
        return result

    # -- fan-out ---------------------------------------------------------------------------------------
    async def _fanout(
        self, ctx: RunContext, sessions: list[Session], stats: FanStats, result: ServerResult
    ) -> None:
        args = self.args
        t0 = time.perf_counter()
        await create_room(sessions[0].conn, FANOUT_ROOM, "u0", ctx.timeout)
        await self._join_all(ctx, sessions[1:], FANOUT_ROOM, 1, 20)
        took = time.perf_counter() - t0
        ctx.log(f"  {len(sessions)} occupants in {room_jid(FANOUT_ROOM)} after {took:.1f}s")
        await asyncio.sleep(0.5)  # presence broadcasts of the last joins are through
        occupants = [Occupant(s.conn, f"u{i}", stats) for i, s in enumerate(sessions)]
        n, k = len(occupants), args.senders
        senders = [occupants[i * n // k] for i in range(k)]
        for rate in self.rates():
            await self._fixed_rate(ctx, senders, n, stats, rate, result)
        await self._saturation(ctx, senders, n, stats, result)

    async def _drain(self, stats: FanStats, occupants: int, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if stats.received + stats.bounced >= stats.sent * occupants:
                return
            await asyncio.sleep(0.05)

    def _record(
        self, ctx: RunContext, key: str, label: str, stats: FanStats, delivered: int, delta: Any,
        result: ServerResult, extra: dict[str, Any],
    ) -> None:  # fmt: skip
        lat = summary_ms([x / 1e9 for x in stats.window.latencies_ns])
        m = result.metrics
        m[f"{key}.delivered_per_s"] = delivered / delta.wall
        m[f"{key}.p50_ms"] = lat["p50"]
        m[f"{key}.p99_ms"] = lat["p99"]
        m[f"{key}.cpu_us_per_delivery"] = delta.server_cpu * 1e6 / delivered if delivered else math.nan
        m[f"{key}.generator_util"] = delta.generator_util
        result.details[key] = {"latency_ms": lat, **extra, **cpu_details(delta)}
        ctx.log(
            f"  {label}: {m[f'{key}.delivered_per_s']:.0f} delivered/s, p50 {lat['p50']:.2f} ms, "
            f"p99 {lat['p99']:.2f} ms, {m[f'{key}.cpu_us_per_delivery']:.1f} µs server CPU/delivery "
            f"({delta.server_util:.2f} cores), generator {delta.generator_util:.2f} cores"
        )
        check_interference(ctx, delta)

    async def _fixed_rate(
        self, ctx: RunContext, senders: list[Occupant], occupants: int, stats: FanStats, rate: int,
        result: ServerResult,
    ) -> None:  # fmt: skip
        args = self.args
        await self._drain(stats, occupants, 10)
        start = time.monotonic_ns()
        warm_ns = int(args.warmup * 1e9)
        end = start + warm_ns + int(args.duration * 1e9)
        stats.window = Window(start + warm_ns, end)
        stats.in_window_sent = 0
        received_before = 0
        meter: Meter | None = None
        sent, rr, k = 0, 0, len(senders)
        now = start
        while now < end:
            due = int(rate * (now - start) / 1e9) - sent
            for _ in range(due):
                senders[rr].send(1)
                rr = (rr + 1) % k
            sent += max(0, due)
            if meter is None and now >= stats.window.start:
                meter = ctx.meter()
                received_before = stats.received
            await asyncio.sleep(0.002)
            now = time.monotonic_ns()
        assert meter is not None
        delta = meter.stop()
        delivered = stats.received - received_before
        await self._drain(stats, occupants, 10)
        lost = stats.in_window_sent * occupants - len(stats.window.latencies_ns)
        key = f"rate{rate}"
        self._record(ctx, key, f"{rate} msgs/s offered", stats, delivered, delta, result,
                     {"sent_in_window": stats.in_window_sent, "lost": lost})  # fmt: skip
        result.metrics[f"{key}.lost"] = lost
        if lost:
            ctx.log(f"  {lost} deliveries of messages sent in the window are missing")

    async def _saturation(
        self, ctx: RunContext, senders: list[Occupant], occupants: int, stats: FanStats, result: ServerResult
    ) -> None:
        args = self.args
        await self._drain(stats, occupants, 10)
        start = time.monotonic_ns()
        warm_ns = int(args.warmup * 1e9)
        stats.window = Window(start + warm_ns, start + warm_ns + int(args.duration * 1e9))
        for s in senders:
            s.credits = True
            s.send(args.window)
        await asyncio.sleep(args.warmup)
        meter = ctx.meter()
        before = last = stats.received
        timeline = []
        for _ in range(max(1, round(args.duration / 0.5))):
            await asyncio.sleep(0.5)
            timeline.append(stats.received - last)
            last = stats.received
        delivered = stats.received - before
        delta = meter.stop()
        for s in senders:
            s.credits = False
        await self._drain(stats, occupants, 20)
        extra = {"window_per_sender": args.window, "delivered_per_half_second": timeline}
        self._record(ctx, "saturation", "saturation", stats, delivered, delta, result, extra)
        ctx.log(f"  delivered per 0.5 s: {timeline}")

    # -- joins -----------------------------------------------------------------------------------------
    async def _join_all(
        self, ctx: RunContext, sessions: list[Session], room: str, first_nick: int, concurrency: int,
        latencies: list[float] | None = None,
    ) -> int:  # fmt: skip
        """Join ``sessions`` (nicks u<first_nick>...) with ``concurrency`` joins in flight.

        Returns how many joiners got their self-presence before the presence of every occupant already
        there (XEP-0045 §7.2.3 puts it last); only checked one join at a time, where that is exact.
        """
        it = iter(enumerate(sessions, first_nick))
        time_limit = max(ctx.timeout, 60.0)
        early = 0

        async def worker() -> None:
            nonlocal early
            for i, s in it:
                took, sink = await join(s.conn, room, f"u{i}", time_limit)
                if concurrency == 1 and sink.presences_at_join < i + 1:
                    early += 1
                if latencies is not None:
                    latencies.append(took)

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(sessions))))))
        if early:
            ctx.log(f"  warning: {early} joiners got their self-presence before the other occupants'")
        return early

    async def _join_phase(self, ctx: RunContext, sessions: list[Session], concurrency: int,
                          result: ServerResult) -> None:  # fmt: skip
        room = f"join{concurrency}"
        latencies: list[float] = []
        meter = ctx.meter()
        t0 = time.perf_counter()
        latencies.append(await create_room(sessions[0].conn, room, "u0", ctx.timeout))
        early = await self._join_all(ctx, sessions[1:], room, 1, concurrency, latencies)
        total = time.perf_counter() - t0
        delta = meter.stop()
        lat = summary_ms(latencies)
        n = len(sessions)
        key = f"join{concurrency}"
        m = result.metrics
        m[f"{key}.total_s"] = total
        m[f"{key}.p50_ms"] = lat["p50"]
        m[f"{key}.p99_ms"] = lat["p99"]
        m[f"{key}.cpu_ms_per_join"] = delta.server_cpu * 1e3 / n
        # The last tenth of the joins, into an almost full room.
        tail = summary_ms(latencies[-max(1, n // 10) :])
        result.details[key] = {
            "joins": n, "concurrency": concurrency, "joins_per_s": n / total, "latency_ms": lat,
            "last_tenth_latency_ms": tail, "self_presence_too_early": early, **cpu_details(delta),
        }  # fmt: skip
        ctx.log(
            f"  {n} joins, {concurrency} in flight: {total:.2f} s ({n / total:.0f} joins/s), "
            f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (last tenth p50 {tail['p50']:.2f} ms), "
            f"{m[f'{key}.cpu_ms_per_join']:.2f} ms server CPU/join ({delta.server_util:.2f} cores), "
            f"generator {delta.generator_util:.2f} cores"
        )
        check_interference(ctx, delta)
