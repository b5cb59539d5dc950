"""``pep``: PEP fan-out to +notify contacts (XEP-0163) and a PubSub service node's fan-out (XEP-0060).

PEP: ``user1`` has ``--contacts`` (500) mutual contacts (subscription "both", provisioned before the
server starts). Every contact logs in and sends presence with XEP-0115 caps whose disco#info has
``http://jabber.org/protocol/tune+notify``; the generator answers the server's disco#info queries for
that hash with exactly that disco#info (so the hash verifies). ``user1`` (no caps, no interest of its
own) then publishes ~100-byte tune items to its ``tune`` node; each contact gets every item at its
full JID and times it by the send stamp in the item.

Service: ``user1`` creates node ``bench`` on ``pubsub.localhost`` (open access), ``--subscribers``
(1,000) accounts subscribe to it with their bare JIDs, and ``user1`` publishes ~100-byte items to it.

For each part:

* one item at a time (``--single``, 20): time from the publish until *every* recipient has the event
  (p50 and max over the items);
* sustained: closed loop, ``--window`` (4) items in flight: the next item is published when the
  recipients have every delivery of all but ``window - 1`` items (so the server is never ahead by more
  than the window). Items fully delivered per second, deliveries per second, server CPU per delivery,
  and deliveries per second of server CPU (per core).

Recipients count deliveries by scanning for the stamp (no XML parsing). Prosody needs its pubsub
component's ``admins`` to create a node (bench/targets.py makes ``user1`` one there).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import statistics
import time
from typing import Any

from ..targets import PUBSUB_DOMAIN, Provisioning
from ..xmppload.client import Session
from ..xmppload.conn import XmppConn, XmppError
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
from .oneone import END, RE_STAMP

PUBSUB = "http://jabber.org/protocol/pubsub"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
TUNE = "http://jabber.org/protocol/tune"
SERVICE_NODE = "bench"
CAPS_NODE = "https://roost.im/bench"
IDENTITY = ("client", "pc", "", "bench")
FEATURES = (DISCO_INFO, TUNE + "+notify")
RE_IQ_GET = re.compile(rb"<iq\b([^>]*)>\s*<query\b([^>]*)>|<iq\b([^>]*)>\s*<query\b([^>]*)/>")
RE_ATTR = {
    name: re.compile(rb"\b" + name + rb"=(?:'([^']*)'|\"([^\"]*)\")") for name in (b"id", b"from", b"node")
}
STANZA_ENDS = (END, b"</iq>", b"</presence>")
RE_RESULT = re.compile(rb"<iq\b[^>]*\btype=['\"](result|error)['\"][^>]*>")


def caps_ver() -> str:
    """XEP-0115 §5.1 verification string of the generator's disco#info, SHA-1, Base64."""
    s = "/".join(IDENTITY) + "<" + "".join(f + "<" for f in sorted(FEATURES))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


VER = caps_ver()
CAPS_PRESENCE = (
    f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{VER}'/>"
    "</presence>"
).encode()


def _attr(name: bytes, attrs: bytes) -> bytes | None:
    m = RE_ATTR[name].search(attrs)
    return None if m is None else (m.group(1) if m.group(1) is not None else m.group(2))


def disco_answer(iq_id: bytes, to: bytes, node: bytes | None) -> bytes:
    category, type_, _, name = IDENTITY
    node_attr = b" node='" + node + b"'" if node else b""
    features = "".join(f"<feature var='{f}'/>" for f in FEATURES).encode()
    return (
        b"<iq type='result' id='" + iq_id + b"' to='" + to + b"'><query xmlns='" + DISCO_INFO.encode() + b"'"
        + node_attr + f"><identity category='{category}' type='{type_}' name='{name}'/>".encode()
        + features + b"</query></iq>"
    )  # fmt: skip


def item_payload(node: str) -> tuple[bytes, bytes]:
    """Publish IQ around a stamp: (prefix, suffix); ~100 bytes of item payload."""
    if node == TUNE:
        prefix = f"<iq type='set' id='p'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item id='current'>"
        prefix += f"<tune xmlns='{TUNE}'><title>T"
        suffix = ";" + "x" * 40 + "</title><artist>Bench</artist><length>300</length></tune>"
    else:
        prefix = (
            f"<iq type='set' id='p' to='{PUBSUB_DOMAIN}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
            f"<item><reading xmlns='urn:example:iot'><t>T"
        )
        suffix = ";" + "x" * 60 + "</t></reading>"
    suffix += "</item></publish></pubsub></iq>"
    return prefix.encode(), suffix.encode()


class Fan:
    """Counts deliveries to every recipient; wakes the publisher when a target count is reached."""

    def __init__(self, recipients: int) -> None:
        self.recipients = recipients
        self.received = 0
        self.latencies_ns: list[int] = []
        self.measure_from = 0  # stamps sent from here (monotonic ns) are timed
        self.target = 0
        self.reached: asyncio.Event = asyncio.Event()
        self.on_progress: Any = None

    def add(self, n: int) -> None:
        self.received += n
        if self.received >= self.target:
            self.reached.set()
        if self.on_progress is not None:
            self.on_progress()


class Recipient:
    """A contact or subscriber: answers disco#info queries (caps) and counts timed events."""

    __slots__ = ("_buf", "conn", "fan", "got_any")

    def __init__(self, conn: XmppConn, fan: Fan) -> None:
        self.conn = conn
        self.fan = fan
        self.got_any = False
        self._buf = bytearray()
        conn.set_sink(self.on_data)

    def on_data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        # Everything before the end of the last complete stanza is complete stanzas.
        cut = max(buf.rfind(e) + len(e) if buf.rfind(e) >= 0 else 0 for e in STANZA_ENDS)
        if cut == 0:
            if len(buf) > 1 << 20:
                buf.clear()
            return
        region = bytes(buf[:cut])
        del buf[:cut]
        if b"disco#info" in region:
            self._answer_disco(region)
        if END not in region:
            return
        now = time.monotonic_ns()
        fan = self.fan
        n = 0
        for m in RE_STAMP.finditer(region):
            n += 1
            sent = int(m.group(1))
            if sent >= fan.measure_from:
                fan.latencies_ns.append(now - sent)
        if n:
            self.got_any = True
            fan.add(n)

    def _answer_disco(self, region: bytes) -> None:
        for m in RE_IQ_GET.finditer(region):
            iq_attrs = m.group(1) or m.group(3) or b""
            query = m.group(2) or m.group(4) or b""
            if DISCO_INFO.encode() not in query or b"get" not in iq_attrs:
                continue
            iq_id, frm = _attr(b"id", iq_attrs), _attr(b"from", iq_attrs)
            if iq_id is None or frm is None:
                continue
            self.conn.write(disco_answer(iq_id, frm, _attr(b"node", query)))


class Publisher:
    __slots__ = ("_tail", "conn", "errors", "prefix", "sent", "suffix")

    def __init__(self, conn: XmppConn, node: str) -> None:
        self.conn = conn
        self.prefix, self.suffix = item_payload(node)
        self.sent = 0
        self.errors = 0
        self._tail = b""
        conn.set_sink(self.on_data)

    def publish(self, count: int = 1) -> None:
        stamp = b"%019d" % time.monotonic_ns()
        self.conn.write((self.prefix + stamp + self.suffix) * count)
        self.sent += count

    def on_data(self, data: bytes) -> None:
        chunk = self._tail + data
        for m in RE_RESULT.finditer(chunk):
            if m.group(1) == b"error":
                self.errors += 1
                if self.errors == 1:
                    print(f"publish error: {chunk[m.start() : m.start() + 600]!r}")
        self._tail = chunk[-200:]


async def iq(conn: XmppConn, body: str, iq_id: str, time_limit: float) -> None:
    """Send an IQ and wait for its result; XmppError on an error reply."""
    pattern = re.compile(rb"<iq\b[^>]*\bid=['\"]" + re.escape(iq_id.encode()) + rb"['\"][^>]*>")
    conn.write(body.replace("<iq ", f"<iq id='{iq_id}' ", 1).encode())
    m = await conn.expect(pattern, time_limit)
    if b"type='error'" in m.group(0) or b'type="error"' in m.group(0):
        raise XmppError(f"{iq_id} refused: {m.string[m.start() : m.start() + 500]!r}")


class PepScenario(Scenario):
    name = "pep"
    help = "PEP fan-out to +notify contacts, and a PubSub service node's fan-out to subscribers"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--contacts", type=int, default=500, help="PEP: online +notify contacts")
        parser.add_argument("--subscribers", type=int, default=1000, help="service: subscribers of the node")
        parser.add_argument("--single", type=int, default=20, help="items published one at a time")
        parser.add_argument("--window", type=int, default=4, help="sustained: items in flight")
        parser.add_argument("--duration", type=float, default=10.0, help="sustained: seconds measured")
        parser.add_argument("--warmup", type=float, default=2.0, help="sustained: seconds before measuring")
        parser.add_argument("--login-concurrency", type=int, default=50)
        parser.add_argument("--phases", default="pep,service", help="pep, service or both (default both)")

    def phases(self) -> list[str]:
        out = [p.strip() for p in str(self.args.phases).split(",") if p.strip()]
        if not out or any(p not in ("pep", "service") for p in out):
            raise SystemExit(f"--phases: choose from pep, service (got {self.args.phases!r})")
        return out

    def metric_specs(self) -> tuple[Metric, ...]:
        out: list[Metric] = []
        for phase in self.phases():
            n = self.args.contacts if phase == "pep" else self.args.subscribers
            who = f"PEP, {n} contacts" if phase == "pep" else f"service, {n} subscribers"
            out += [
                Metric(f"{phase}.single_p50_ms", f"{who}: one item, time to all (p50)", "ms", False,
                       "{:.1f}"),
                Metric(f"{phase}.single_max_ms", f"{who}: one item, time to all (max)", "ms", False,
                       "{:.1f}"),
                Metric(f"{phase}.items_per_s", f"{who}: sustained items/s (all delivered)", "1/s", True,
                       "{:.1f}"),
                Metric(f"{phase}.delivered_per_s", f"{who}: sustained deliveries/s", "1/s", True, "{:.0f}"),
                Metric(f"{phase}.per_core", f"{who}: deliveries per server CPU-second", "1/s", True,
                       "{:.0f}"),
                Metric(f"{phase}.cpu_us_per_delivery", f"{who}: server CPU/delivery", "µs", False),
                Metric(f"{phase}.p50_ms", f"{who}: sustained p50 latency", "ms", False, "{:.1f}"),
                Metric(f"{phase}.server_util", f"{who}: server CPU use", "cores", False, "{:.2f}",
                       ratio=False),
                Metric(f"{phase}.generator_util", f"{who}: generator CPU use", "cores", False, "{:.2f}",
                       ratio=False),
            ]  # fmt: skip
        return tuple(out)

    def provisioning(self) -> Provisioning:
        args = self.args
        n = 1 + max(
            args.contacts if "pep" in self.phases() else 0,
            args.subscribers if "service" in self.phases() else 0,
        )
        accounts = bench_accounts(n)
        rosters: dict[str, list[str]] = {}
        if "pep" in self.phases():
            contacts = [a.user for a in accounts[1 : 1 + args.contacts]]
            rosters[accounts[0].user] = contacts
            for c in contacts:
                rosters[c] = [accounts[0].user]
        return Provisioning(accounts, rosters)

    async def run(self, ctx: RunContext) -> ServerResult:
        accounts = self.provisioning().accounts
        result = ServerResult()
        self.pep_contacts: list[Session] = []
        batch = await login_many(ctx, accounts, self.args.login_concurrency, "p", presence="none", keep=True)
        if batch.errors:
            await close_all(batch.sessions, ctx.timeout)
            raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
        by_user = {s.account.user: s for s in batch.sessions}
        sessions = [by_user[a.user] for a in accounts]
        ctx.log(f"  {len(sessions)} sessions online after {batch.wall:.1f}s")
        try:
            if "pep" in self.phases():
                await self._pep(ctx, sessions[0], sessions[1 : 1 + self.args.contacts], result)
            if "service" in self.phases():
                await self._service(ctx, sessions[0], sessions[1 : 1 + self.args.subscribers], result)
        finally:
            t0 = time.perf_counter()
            await close_all(sessions, max(ctx.timeout, 60.0))
            ctx.log(f"  closed {len(sessions)} sessions in {time.perf_counter() - t0:.1f}s")
        return result

    async def _pep(
        self, ctx: RunContext, owner: Session, contacts: list[Session], result: ServerResult
    ) -> None:
        self.pep_contacts = contacts
        fan = Fan(len(contacts))
        recipients = [Recipient(s.conn, fan) for s in contacts]
        owner.conn.write(b"<presence/>")
        for s in contacts:
            s.conn.write(CAPS_PRESENCE)
        publisher = Publisher(owner.conn, TUNE)
        # Warm-up: publish until every contact has had an event (the server has learnt the caps;
        # contacts that become interested also get the last item then).
        t0 = time.perf_counter()
        deadline = t0 + max(60.0, ctx.timeout)
        while not all(r.got_any for r in recipients):
            if time.perf_counter() > deadline:
                missing = sum(not r.got_any for r in recipients)
                raise RuntimeError(f"{missing} contacts never got a PEP event (caps not learnt?)")
            publisher.publish()
            await asyncio.sleep(0.5)
        ctx.log(f"  every contact gets events after {time.perf_counter() - t0:.1f}s")
        await asyncio.sleep(1.0)
        await self._measure(ctx, "pep", publisher, fan, result)

    async def _service(
        self, ctx: RunContext, owner: Session, subscribers: list[Session], result: ServerResult
    ) -> None:
        limit = max(ctx.timeout, 30.0)
        available = {s.account.user for s in self.pep_contacts}
        owner.conn.set_sink(None)
        owner.conn.clear()
        await iq(
            owner.conn,
            f"<iq type='set' to='{PUBSUB_DOMAIN}'><pubsub xmlns='{PUBSUB}'><create node='{SERVICE_NODE}'/>"
            f"</pubsub></iq>",
            "create",
            limit,
        )
        sem = asyncio.Semaphore(50)

        async def subscribe(s: Session) -> None:
            async with sem:
                s.conn.set_sink(None)
                s.conn.clear()
                if s.account.user not in available:  # bare-JID notifications go to available resources
                    s.conn.write(b"<presence/>")
                bare = s.jid.split("/")[0]
                await iq(
                    s.conn,
                    f"<iq type='set' to='{PUBSUB_DOMAIN}'><pubsub xmlns='{PUBSUB}'>"
                    f"<subscribe node='{SERVICE_NODE}' jid='{bare}'/></pubsub></iq>",
                    "sub",
                    limit,
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(subscribe(s) for s in subscribers))
        ctx.log(
            f"  {len(subscribers)} subscribed to {SERVICE_NODE} on {PUBSUB_DOMAIN} "
            f"in {time.perf_counter() - t0:.1f}s"
        )
        fan = Fan(len(subscribers))
        for s in subscribers:
            Recipient(s.conn, fan)
        publisher = Publisher(owner.conn, SERVICE_NODE)
        await asyncio.sleep(1.0)
        await self._measure(ctx, "service", publisher, fan, result)

    async def _wait(self, fan: Fan, target: int, limit: float) -> None:
        fan.target = target
        fan.reached.clear()
        if fan.received >= target:
            return
        await asyncio.wait_for(fan.reached.wait(), limit)

    async def _measure(
        self, ctx: RunContext, key: str, publisher: Publisher, fan: Fan, result: ServerResult
    ) -> None:
        args = self.args
        n = fan.recipients
        limit = max(ctx.timeout, 30.0)
        await asyncio.sleep(0.5)  # settle: what the warm-up published (and last items) has arrived
        # One item at a time.
        singles: list[float] = []
        for _ in range(args.single):
            target = fan.received + n
            t0 = time.perf_counter()
            publisher.publish()
            await self._wait(fan, target, limit)
            singles.append(time.perf_counter() - t0)
        # Sustained: at most `window` items not yet fully delivered.
        window = max(1, args.window)
        start = fan.received
        first_item = publisher.sent

        def refill() -> None:
            done = (fan.received - start) // n
            while publisher.sent - first_item - done < window:
                publisher.publish()

        fan.latencies_ns.clear()
        fan.on_progress = refill
        refill()
        await asyncio.sleep(args.warmup)
        fan.measure_from = time.monotonic_ns()
        meter = ctx.meter()
        before = fan.received
        timeline = []
        last = before
        for _ in range(max(1, round(args.duration / 0.5))):
            await asyncio.sleep(0.5)
            timeline.append(fan.received - last)
            last = fan.received
        delivered = fan.received - before
        delta = meter.stop()
        fan.on_progress = None
        fan.measure_from = 1 << 62
        expected = start + (publisher.sent - first_item) * n
        try:
            await self._wait(fan, expected, limit)
        except TimeoutError:
            ctx.log(f"  warning: {expected - fan.received} deliveries missing after the sustained phase")
        lat = summary_ms([x / 1e9 for x in fan.latencies_ns])
        single = summary_ms(singles)
        m = result.metrics
        m[f"{key}.single_p50_ms"] = single["p50"]
        m[f"{key}.single_max_ms"] = max(singles) * 1e3 if singles else float("nan")
        m[f"{key}.delivered_per_s"] = delivered / delta.wall
        m[f"{key}.items_per_s"] = delivered / n / delta.wall
        m[f"{key}.per_core"] = delivered / delta.server_cpu if delta.server_cpu else float("nan")
        m[f"{key}.cpu_us_per_delivery"] = delta.server_cpu * 1e6 / delivered if delivered else float("nan")
        m[f"{key}.p50_ms"] = lat["p50"]
        m[f"{key}.server_util"] = delta.server_util
        m[f"{key}.generator_util"] = delta.generator_util
        result.details[key] = {
            "recipients": n, "single_ms": [s * 1e3 for s in singles],
            "single_mean_ms": statistics.fmean(singles) * 1e3 if singles else None,
            "window": window, "latency_ms": lat, "delivered_per_half_second": timeline,
            "publish_errors": publisher.errors, **cpu_details(delta),
        }  # fmt: skip
        ctx.log(
            f"  {key}: one item to all {n}: p50 {single['p50']:.1f} ms, "
            f"max {m[f'{key}.single_max_ms']:.1f} ms; sustained {m[f'{key}.items_per_s']:.1f} items/s "
            f"= {m[f'{key}.delivered_per_s']:.0f} deliveries/s, "
            f"{m[f'{key}.cpu_us_per_delivery']:.1f} µs server CPU/delivery ({delta.server_util:.2f} cores), "
            f"generator {delta.generator_util:.2f} cores"
        )
        if publisher.errors:
            ctx.log(f"  warning: {publisher.errors} publishes were refused")
        check_interference(ctx, delta)
