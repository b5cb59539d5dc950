"""``idle``: server memory per authenticated, available session over TLS.

Sessions log in (STARTTLS, SCRAM, bind, initial presence) and stay idle; after each step of
``--sessions`` (default 5,000 then 10,000) and a settle pause, the server's RSS (whole process tree)
is read. Memory per session = (RSS now - RSS before the first session) / sessions.

File descriptors: every session is one socket on each side. The generator raises its soft
RLIMIT_NOFILE to the hard limit before starting anything and the servers inherit it; beyond ~28,000
sessions also spread the source addresses (``--local-addrs 127.0.0.1-4``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource

from ..targets import Provisioning
from ..xmppload.client import Session
from ..xmppload.procstat import tree_rss
from .base import Metric, RunContext, Scenario, ServerResult, bench_accounts, close_all, login_many


class IdleScenario(Scenario):
    name = "idle"
    help = "server RSS per authenticated, available, idle TLS session"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sessions", default="5000,10000", help="session counts to measure at")
        parser.add_argument("--login-concurrency", type=int, default=100)
        parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait before reading RSS")

    def counts(self) -> list[int]:
        return sorted(int(c) for c in str(self.args.sessions).split(",") if c.strip())

    def metric_specs(self) -> tuple[Metric, ...]:
        out = [Metric("baseline_rss_mb", "RSS before any session", "MB", False, "{:.1f}")]
        for k in self.counts():
            out += [
                Metric(f"s{k}.rss_mb", f"{k} sessions: RSS", "MB", False, "{:.1f}"),
                Metric(f"s{k}.kb_per_session", f"{k} sessions: KB per session", "KB", False, "{:.1f}"),
                Metric(f"s{k}.logins_per_s", f"{k} sessions: logins/s reaching it", "1/s", True, "{:.0f}"),
            ]
        return tuple(out)

    def provisioning(self) -> Provisioning:
        return Provisioning(bench_accounts(max(self.counts())))

    async def run(self, ctx: RunContext) -> ServerResult:
        args = self.args
        counts = self.counts()
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if max(counts) + 100 > fd_limit:
            raise RuntimeError(
                f"{max(counts)} sessions need more than the {fd_limit} file descriptors allowed"
            )
        accounts = self.provisioning().accounts
        result = ServerResult()
        # Load whatever the server loads lazily on first use, then take the baseline.
        warm = await login_many(ctx, accounts[:50], 10, "w", keep=False)
        if warm.errors:
            raise RuntimeError(f"warm-up logins failed, e.g. {warm.errors[0]}")
        await asyncio.sleep(args.settle)
        baseline = tree_rss(ctx.target.pid)
        result.metrics["baseline_rss_mb"] = baseline / 1e6
        ctx.log(f"  baseline RSS {baseline / 1e6:.1f} MB")
        online: list[Session] = []
        try:
            for k in counts:
                batch = await login_many(ctx, accounts[len(online) : k], args.login_concurrency, "i")
                online += batch.sessions
                if batch.errors:
                    raise RuntimeError(f"{len(batch.errors)} logins failed, e.g. {batch.errors[0]}")
                await asyncio.sleep(args.settle)
                rss = tree_rss(ctx.target.pid)
                m = result.metrics
                m[f"s{k}.rss_mb"] = rss / 1e6
                m[f"s{k}.kb_per_session"] = (rss - baseline) / 1e3 / k
                m[f"s{k}.logins_per_s"] = len(batch.sessions) / batch.logins_wall
                ctx.log(
                    f"  {k} sessions: RSS {rss / 1e6:.1f} MB, {m[f's{k}.kb_per_session']:.1f} KB/session "
                    f"(logged in at {m[f's{k}.logins_per_s']:.0f}/s)"
                )
        finally:
            await close_all(online, ctx.timeout)
        return result
