"""``presence``: accounts with mutual rosters come online; how long until everyone sees everyone.

``--accounts`` (200) accounts, each with ``--contacts`` (50) contacts, subscription "both" both ways,
provisioned into every server's own roster storage before it starts. The graph is a ring: user *i*'s
contacts are the ``contacts/2`` accounts on either side of it (wrapping around), so it is regular and
mutual, and identical on every server.

Each login is a full client login (STARTTLS, SCRAM-SHA-1, bind), a roster get (whose item count is
checked against the provisioning: a run fails when a roster is missing or short) and initial presence.
A session is *settled* once it has received available presence from every one of its contacts; the run
is settled when every session is. Two phases per pass, each measured from its first stanza until settled:

* ``logins``: every account logs in with ``--login-concurrency`` (50) logins in flight, each sending
  initial presence right after its roster get. Time, server CPU and stanzas include the logins
  themselves (TLS, SCRAM, roster) — this is "everyone comes online".
* ``burst``: every account logs in and gets its roster first (not measured, no presence), then all of
  them send initial presence in the same instant. Only presence work: probes, broadcasts, answers.

Stanzas delivered counts every presence stanza the clients receive until traffic stops (settled plus
``--quiet`` seconds without presence): at least accounts x contacts (one available presence per ordered
pair) plus one echo per session; servers send more when a probe answer and a broadcast cross.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..targets import Provisioning
from ..xmppload.client import INITIAL_PRESENCE, Session
from ..xmppload.conn import XmppConn
from ..xmppload.procstat import CpuDelta
from .base import (
    Metric,
    RunContext,
    Scenario,
    ServerResult,
    bench_accounts,
    check_interference,
    close_all,
    cpu_details,
    interfered,
    login_many,
    wait_idle,
)

ROSTER_GET = b"<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>"
RE_ROSTER_RESULT = re.compile(rb"<iq\b[^>]*\bid=['\"]roster1['\"][^>]*?(?:/>|>.*?</iq>)", re.S)
RE_ITEM = re.compile(rb"<item[\s/>]")
RE_PRESENCE_TAG = re.compile(rb"<presence\b([^>]*)>")
RE_FROM = re.compile(rb"\bfrom=(?:'([^']*)'|\"([^\"]*)\")")
RE_TYPE = re.compile(rb"\btype=(?:'([^']*)'|\"([^\"]*)\")")


def ring(n: int, k: int) -> list[list[int]]:
    """Contacts (0-based) of each of ``n`` accounts: the ``k/2`` neighbours on either side."""
    if k % 2 or not 0 < k < n:
        raise SystemExit(f"--contacts must be even and between 2 and accounts-1 (got {k} for {n} accounts)")
    half = k // 2
    return [sorted({(i + d) % n for d in range(-half, half + 1) if d}) for i in range(n)]


def _attr(pattern: re.Pattern[bytes], tag: bytes) -> bytes | None:
    m = pattern.search(tag)
    if m is None:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


@dataclass(slots=True)
class Progress:
    """Shared by every watcher of one phase."""

    sessions: int
    started: float = 0.0  # perf_counter at the phase's first stanza
    settled_at: float = math.nan
    complete: int = 0  # sessions that have seen all their contacts available
    presences: int = 0  # every presence stanza received, echoes and duplicates included
    contact_available: int = 0  # available presences from contacts (duplicates included)
    contact_unavailable: int = 0  # should stay 0 while nobody leaves
    other: int = 0  # presence from anyone else (not a contact, not the session's own echo)
    last_presence: float = 0.0
    active: bool = True
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Watcher:
    """Scans one session's incoming bytes for presence; notes when all its contacts are available."""

    __slots__ = ("_buf", "contacts", "index", "missing", "progress", "seen")

    def __init__(self, index: int, contacts: list[int], progress: Progress) -> None:
        self.index = index
        self.contacts = frozenset(contacts)
        self.missing = len(contacts)
        self.seen: set[int] = set()
        self.progress = progress
        self._buf = bytearray()

    def on_data(self, data: bytes) -> None:
        p = self.progress
        if not p.active:
            return
        buf = self._buf
        buf += data
        pos = 0
        for m in RE_PRESENCE_TAG.finditer(buf):
            pos = m.end()
            self._presence(m.group(1), p)
        cut = buf.rfind(b"<", pos)
        if cut < 0:
            buf.clear()
        else:
            del buf[:cut]  # an unfinished tag, or harmless leftovers

    def _presence(self, attrs: bytes, p: Progress) -> None:
        p.presences += 1
        p.last_presence = time.perf_counter()
        frm = _attr(RE_FROM, attrs)
        local = frm.split(b"@", 1)[0] if frm else b""
        idx = int(local[4:]) - 1 if local.startswith(b"user") and local[4:].isdigit() else -1
        if idx == self.index:
            return  # our own presence reflected (RFC 6121 §4.2.2)
        if idx not in self.contacts:
            p.other += 1
            return
        kind = _attr(RE_TYPE, attrs)
        if kind is None:
            p.contact_available += 1
            if idx not in self.seen:
                self.seen.add(idx)
                self.missing -= 1
                if self.missing == 0:
                    p.complete += 1
                    if p.complete == p.sessions:
                        p.settled_at = time.perf_counter()
                        p.done.set()
        elif kind == b"unavailable":
            p.contact_unavailable += 1
        else:
            p.other += 1


async def roster_get(conn: XmppConn, time_limit: float) -> int:
    """Request the roster (RFC 6121 §2.1.3); the number of items in the result."""
    conn.write(ROSTER_GET)
    m = await conn.expect(RE_ROSTER_RESULT, time_limit)
    return len(RE_ITEM.findall(m.group(0)))


def _phase_metrics(prefix: str, label: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{prefix}.settled_s", f"{label}: time until settled", "s", False, "{:.3f}"),
        Metric(f"{prefix}.server_cpu_s", f"{label}: server CPU", "s", False, "{:.2f}"),
        Metric(f"{prefix}.cpu_ms_per_account", f"{label}: server CPU/account", "ms", False, "{:.2f}"),
        Metric(
            f"{prefix}.presences", f"{label}: presence stanzas delivered", "", False, "{:.0f}", ratio=False
        ),
        Metric(f"{prefix}.server_util", f"{label}: server CPU use", "cores", False, "{:.2f}", ratio=False),
        Metric(
            f"{prefix}.generator_util", f"{label}: generator CPU use", "cores", False, "{:.2f}", ratio=False
        ),
        Metric(
            f"{prefix}.foreign_load", f"{label}: others on server CPU", "cores", False, "{:.2f}", ratio=False
        ),
        Metric(f"{prefix}.missing", f"{label}: contact presences missing", "", False, "{:.0f}", ratio=False),
    )


class PresenceScenario(Scenario):
    name = "presence"
    help = "accounts with mutual rosters come online: time until all see each other, server CPU"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--accounts", type=int, default=200, help="accounts (all online at the end)")
        parser.add_argument("--contacts", type=int, default=50, help="mutual contacts per account (even)")
        parser.add_argument(
            "--login-concurrency", type=int, default=50,
            help="logins in flight (logins phase, and the unmeasured logins of the burst phase)",
        )  # fmt: skip
        parser.add_argument("--repeat", type=int, default=3, help="passes per phase; medians reported")
        parser.add_argument(
            "--settle-timeout", type=float, default=60.0, help="seconds to wait for everyone to settle"
        )
        parser.add_argument(
            "--quiet", type=float, default=0.5, help="traffic has stopped after this long without presence"
        )
        parser.add_argument(
            "--phases", default="logins,burst", help="which phases to run: logins, burst or both"
        )

    def phases(self) -> list[str]:
        out = [p.strip() for p in str(self.args.phases).split(",") if p.strip()]
        bad = [p for p in out if p not in ("logins", "burst")]
        if bad or not out:
            raise SystemExit(f"--phases: choose from logins, burst (got {self.args.phases!r})")
        return out

    def metric_specs(self) -> tuple[Metric, ...]:
        labels = {"logins": f"logins ({self.args.login_concurrency} in flight)", "burst": "all at once"}
        out: tuple[Metric, ...] = ()
        for phase in self.phases():
            out += _phase_metrics(phase, labels[phase])
        return out

    def provisioning(self) -> Provisioning:
        n, k = self.args.accounts, self.args.contacts
        accounts = bench_accounts(n)
        graph = ring(n, k)
        rosters = {accounts[i].user: [accounts[j].user for j in graph[i]] for i in range(n)}
        return Provisioning(accounts, rosters)

    async def run(self, ctx: RunContext) -> ServerResult:
        args = self.args
        result = ServerResult()
        graph = ring(args.accounts, args.contacts)
        result.details["graph"] = {"kind": "ring", "accounts": args.accounts, "contacts": args.contacts}
        for phase in self.phases():
            runs: list[tuple[dict[str, float], dict[str, Any]]] = []
            for r in range(max(1, args.repeat)):
                for attempt in range(ctx.retry_busy + 1):
                    await asyncio.sleep(1.0)  # let the server finish with the previous sessions
                    metrics, details, delta = await self._phase(ctx, phase, graph, f"{phase[0]}{r}-")
                    if not interfered(delta) or attempt == ctx.retry_busy:
                        break
                    ctx.log("  discarding that run (another process used the pinned CPUs); measuring again")
                    await wait_idle(max(ctx.wait_idle_s, 120.0), ctx.log, ctx.target.pid)
                details["attempts"] = attempt + 1
                runs.append((metrics, details))
            for key in runs[0][0]:
                values = [run[0][key] for run in runs]
                finite = [v for v in values if not math.isnan(v)]
                result.metrics[f"{phase}.{key}"] = statistics.median(finite) if finite else math.nan
            result.details[phase] = {"runs": [run[1] for run in runs]}
            if len(runs) > 1:
                m = result.metrics
                ctx.log(
                    f"  {phase} median of {len(runs)}: settled in {m[f'{phase}.settled_s']:.3f} s, "
                    f"server CPU {m[f'{phase}.server_cpu_s']:.2f} s, "
                    f"{m[f'{phase}.presences']:.0f} presence stanzas"
                )
        return result

    async def _phase(
        self, ctx: RunContext, phase: str, graph: list[list[int]], tag: str
    ) -> tuple[dict[str, float], dict[str, Any], CpuDelta]:
        args = self.args
        n, k = args.accounts, args.contacts
        accounts = bench_accounts(n)
        progress = Progress(n)
        roster_sizes: list[int] = []
        watchers: list[Watcher] = []
        concurrency = args.login_concurrency if args.login_concurrency > 0 else n

        def setup(send_presence: bool) -> Callable[[Session], Awaitable[None]]:
            async def on_session(s: Session) -> None:
                roster_sizes.append(await roster_get(s.conn, ctx.timeout))
                index = int(s.account.user[4:]) - 1
                w = Watcher(index, graph[index], progress)
                watchers.append(w)
                s.conn.set_sink(w.on_data)
                if send_presence:
                    s.conn.write(INITIAL_PRESENCE)

            return on_session

        sessions: list[Session] = []
        try:
            if phase == "logins":
                meter = ctx.meter()
                progress.started = time.perf_counter()
                batch = await login_many(ctx, accounts, concurrency, tag, "none", on_session=setup(True))
                sessions = batch.sessions
                last_sent = time.perf_counter() - progress.started
            else:
                batch = await login_many(ctx, accounts, concurrency, tag, "none", on_session=setup(False))
                sessions = batch.sessions
                await asyncio.sleep(0.5)  # whatever the logins set off has ended
                meter = ctx.meter()
                progress.started = time.perf_counter()
                for s in sessions:
                    s.conn.write(INITIAL_PRESENCE)
                last_sent = time.perf_counter() - progress.started
            if batch.errors:
                raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
            if min(roster_sizes) != k or max(roster_sizes) != k:
                raise RuntimeError(
                    f"roster gets returned {min(roster_sizes)}..{max(roster_sizes)} items, not {k}: "
                    "the rosters were not provisioned as expected"
                )
            try:
                await asyncio.wait_for(progress.done.wait(), args.settle_timeout)
            except TimeoutError:
                ctx.log(f"  not settled after {args.settle_timeout:.0f}s")
            # Until the presence traffic stops (late duplicates count as delivered, and as CPU).
            deadline = time.perf_counter() + 10.0
            while time.perf_counter() < deadline:
                quiet_for = time.perf_counter() - max(progress.last_presence, progress.started)
                if quiet_for >= args.quiet:
                    break
                await asyncio.sleep(min(0.05, args.quiet - quiet_for + 0.001))
            delta = meter.stop()
            progress.active = False
        finally:
            progress.active = False
            await close_all(sessions, ctx.timeout)

        settled = progress.settled_at - progress.started
        active = progress.last_presence - progress.started  # until the last presence arrived
        missing = sum(w.missing for w in watchers) + (n - len(watchers)) * k
        m = {
            "settled_s": settled,
            "server_cpu_s": delta.server_cpu,
            "cpu_ms_per_account": delta.server_cpu * 1e3 / n,
            "presences": float(progress.presences),
            "server_util": delta.server_cpu / active if active > 0 else math.nan,
            "generator_util": delta.generator_util,
            "foreign_load": delta.foreign_load,
            "missing": float(missing),
        }
        details = {
            "last_presence_sent_s": last_sent,
            "contact_available": progress.contact_available,
            "contact_unavailable": progress.contact_unavailable,
            "other_presence": progress.other,
            "minimum_presences": n * k + n,
            "roster_items": [min(roster_sizes), max(roster_sizes)],
            **cpu_details(delta),
        }
        ctx.log(
            f"  {phase}: settled in {settled:.3f} s (last presence sent at {last_sent:.3f} s), "
            f"server CPU {delta.server_cpu:.2f} s, {progress.presences} presence stanzas "
            f"(minimum {n * k + n}), generator {delta.generator_util:.2f} cores, {missing} missing"
        )
        if progress.contact_unavailable or progress.other:
            ctx.log(
                f"  warning: {progress.contact_unavailable} unavailable and {progress.other} "
                "unexpected presences"
            )
        check_interference(ctx, delta)
        return m, details, delta
