"""``login``: full client logins, one at a time and many in flight.

One login = TCP connect, stream, STARTTLS, SCRAM-SHA-1, resource bind, initial presence (until the
server echoes it back, RFC 6121 §4.2.2), then a clean close (``</stream:stream>`` both ways). Latency
runs from connect to the presence echo. The close runs in the background while the worker starts its
next login (ejabberd takes ~100 ms to answer a closing tag, which would otherwise cap throughput at
concurrency / 0.1 s); logins/s counts until the last login completed, the server's CPU is measured until
the last close completed, so CPU/login includes the close.

A warm-up pass logs every account in once before anything is measured: it fills the generator's
salted-password cache (no PBKDF2 during measurement) and warms the server (JIT-less caches, Erlang
process pools, SQLite pages) the same way for everyone.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
from typing import Any

from ..targets import Provisioning
from ..xmppload.client import STEPS, Account
from ..xmppload.procstat import CpuDelta
from ..xmppload.stats import summary_ms
from .base import (
    Metric,
    RunContext,
    Scenario,
    ServerResult,
    bench_accounts,
    check_interference,
    cpu_details,
    interfered,
    login_many,
    wait_idle,
)


def _phase_metrics(prefix: str, label: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{prefix}.logins_per_s", f"{label}: logins/s", "1/s", True),
        Metric(f"{prefix}.p50_ms", f"{label}: p50 latency", "ms", False, "{:.2f}"),
        Metric(f"{prefix}.p99_ms", f"{label}: p99 latency", "ms", False, "{:.2f}"),
        Metric(f"{prefix}.cpu_ms_per_login", f"{label}: server CPU/login", "ms", False, "{:.3f}"),
        Metric(f"{prefix}.server_util", f"{label}: server CPU use", "cores", False, "{:.2f}", ratio=False),
        Metric(
            f"{prefix}.generator_util", f"{label}: generator CPU use", "cores", False, "{:.2f}", ratio=False
        ),
        Metric(
            f"{prefix}.foreign_load", f"{label}: others on server CPU", "cores", False, "{:.2f}", ratio=False
        ),
        Metric(f"{prefix}.errors", f"{label}: errors", "", False, "{:.0f}", ratio=False),
    )


class LoginScenario(Scenario):
    name = "login"
    help = "full logins (STARTTLS, SCRAM-SHA-1, bind, presence, close): sequential and concurrent"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=2000, help="logins per phase (and accounts)")
        parser.add_argument("--concurrency", type=int, default=50, help="logins in flight, concurrent phase")
        parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured warm-up pass")
        parser.add_argument(
            "--repeat", type=int, default=3, help="measured passes per phase; medians reported"
        )
        parser.add_argument(
            "--presence", choices=("echo", "send", "none"), default="echo",
            help="initial presence: wait for its echo (default), send without waiting, or skip",
        )  # fmt: skip

    def metric_specs(self) -> tuple[Metric, ...]:
        c = self.args.concurrency
        return _phase_metrics("sequential", "sequential") + _phase_metrics("concurrent", f"{c} in flight")

    def provisioning(self) -> Provisioning:
        return Provisioning(bench_accounts(self.args.n))

    async def run(self, ctx: RunContext) -> ServerResult:
        accounts = self.provisioning().accounts
        result = ServerResult()
        if not self.args.no_warmup:
            batch = await login_many(
                ctx, accounts, self.args.concurrency, "w", self.args.presence, keep=False
            )
            ctx.log(
                f"  warm-up: {len(batch.sessions)} logins in {batch.wall:.1f}s, {len(batch.errors)} errors"
            )
            result.details["warmup_errors"] = batch.errors[:5]
            if len(batch.errors) == len(accounts):
                raise RuntimeError(f"every warm-up login failed, e.g. {batch.errors[0]}")
        repeat = max(1, self.args.repeat)
        for prefix, concurrency in (("sequential", 1), ("concurrent", self.args.concurrency)):
            runs: list[tuple[dict[str, float], dict[str, Any]]] = []
            for r in range(repeat):
                for attempt in range(ctx.retry_busy + 1):
                    await asyncio.sleep(1.0)  # let the server finish tearing down the previous sessions
                    metrics, details, delta = await self._phase(
                        ctx, accounts, concurrency, f"{prefix[0]}{r}-"
                    )
                    if not interfered(delta) or attempt == ctx.retry_busy:
                        break
                    ctx.log("  discarding that run (another process used the pinned CPUs); measuring again")
                    await wait_idle(max(ctx.wait_idle_s, 120.0), ctx.log, ctx.target.pid)
                details["attempts"] = attempt + 1
                runs.append((metrics, details))
            # Each metric is the median over the repeats; every run's figures stay in the details.
            for key in runs[0][0]:
                result.metrics[f"{prefix}.{key}"] = statistics.median(run[0][key] for run in runs)
            if repeat == 1:
                result.details[prefix] = runs[0][1]
            else:
                result.details[prefix] = {"concurrency": concurrency, "runs": [run[1] for run in runs]}
                m = result.metrics
                ctx.log(
                    f"  {prefix:10s} median of {repeat}: {m[f'{prefix}.logins_per_s']:.1f} logins/s, "
                    f"p50 {m[f'{prefix}.p50_ms']:.2f} ms, p99 {m[f'{prefix}.p99_ms']:.2f} ms, "
                    f"{m[f'{prefix}.cpu_ms_per_login']:.3f} ms server CPU/login"
                )
        return result

    async def _phase(
        self, ctx: RunContext, accounts: list[Account], concurrency: int, tag: str
    ) -> tuple[dict[str, float], dict[str, Any], CpuDelta]:
        """One measured pass over every account; metrics (unprefixed) and details."""
        meter = ctx.meter()
        batch = await login_many(ctx, accounts, concurrency, tag, self.args.presence, keep=False)
        delta = meter.stop()
        ok = len(batch.sessions)
        lat = summary_ms([s.login_seconds for s in batch.sessions])
        m = {
            "logins_per_s": ok / batch.logins_wall if batch.logins_wall > 0 else math.nan,
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "cpu_ms_per_login": delta.server_cpu * 1000 / ok if ok else math.nan,
            "server_util": delta.server_util,
            "generator_util": delta.generator_util,
            "foreign_load": delta.foreign_load,
            "errors": float(len(batch.errors)),
        }
        details = {
            "concurrency": concurrency,
            "ok": ok,
            "errors": len(batch.errors),
            "error_samples": batch.errors[:5],
            "latency_ms": lat,
            # where the time goes, per login step (ms)
            "steps_ms": {
                step: summary_ms([s.timings[step] for s in batch.sessions if step in s.timings])
                for step in STEPS
            },
            **cpu_details(delta),
        }
        ctx.log(
            f"  c={concurrency:<3d} {m['logins_per_s']:8.1f} logins/s  "
            f"p50 {lat['p50']:7.2f} ms  p99 {lat['p99']:7.2f} ms  "
            f"server {m['cpu_ms_per_login']:.3f} ms CPU/login ({delta.server_util:.2f} cores), "
            f"generator {delta.generator_util:.2f} cores, {len(batch.errors)} errors"
        )
        for e in batch.errors[:3]:
            ctx.log(f"    error: {e}")
        check_interference(ctx, delta)
        return m, details, delta
