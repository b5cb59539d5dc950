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

from ..targets import Provisioning
from ..xmppload.client import STEPS
from ..xmppload.procstat import CpuMeter
from ..xmppload.stats import summary_ms
from .base import Metric, RunContext, Scenario, ServerResult, bench_accounts, cpu_details, login_many


def _phase_metrics(prefix: str, label: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{prefix}.logins_per_s", f"{label}: logins/s", "1/s", True),
        Metric(f"{prefix}.p50_ms", f"{label}: p50 latency", "ms", False, "{:.2f}"),
        Metric(f"{prefix}.p99_ms", f"{label}: p99 latency", "ms", False, "{:.2f}"),
        Metric(f"{prefix}.cpu_ms_per_login", f"{label}: server CPU/login", "ms", False, "{:.3f}"),
        Metric(f"{prefix}.server_util", f"{label}: server CPU use", "cores", False, "{:.2f}"),
        Metric(f"{prefix}.generator_util", f"{label}: generator CPU use", "cores", False, "{:.2f}"),
        Metric(f"{prefix}.errors", f"{label}: errors", "", False, "{:.0f}"),
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
        for prefix, concurrency in (("sequential", 1), ("concurrent", self.args.concurrency)):
            await asyncio.sleep(1.0)  # let the server finish tearing down the previous sessions
            meter = CpuMeter(ctx.target.pid)
            batch = await login_many(ctx, accounts, concurrency, prefix[0], self.args.presence, keep=False)
            delta = meter.stop()
            ok = len(batch.sessions)
            latencies = [s.login_seconds for s in batch.sessions]
            lat = summary_ms(latencies)
            m = result.metrics
            m[f"{prefix}.logins_per_s"] = ok / batch.logins_wall if batch.logins_wall > 0 else math.nan
            m[f"{prefix}.p50_ms"] = lat["p50"]
            m[f"{prefix}.p99_ms"] = lat["p99"]
            m[f"{prefix}.cpu_ms_per_login"] = delta.server_cpu * 1000 / ok if ok else math.nan
            m[f"{prefix}.server_util"] = delta.server_util
            m[f"{prefix}.generator_util"] = delta.generator_util
            m[f"{prefix}.errors"] = len(batch.errors)
            result.details[prefix] = {
                "concurrency": concurrency,
                "ok": ok,
                "errors": len(batch.errors),
                "error_samples": batch.errors[:5],
                "latency_ms": lat,
                # where the time goes, per login step (median and p99 in ms)
                "steps_ms": {
                    step: summary_ms([s.timings[step] for s in batch.sessions if step in s.timings])
                    for step in STEPS
                },
                **cpu_details(delta),
            }
            ctx.log(
                f"  {prefix:10s} c={concurrency:<3d} {m[f'{prefix}.logins_per_s']:8.1f} logins/s  "
                f"p50 {lat['p50']:7.2f} ms  p99 {lat['p99']:7.2f} ms  "
                f"server {m[f'{prefix}.cpu_ms_per_login']:.3f} ms CPU/login ({delta.server_util:.2f} cores), "
                f"generator {delta.generator_util:.2f} cores, {len(batch.errors)} errors"
            )
            for e in batch.errors[:3]:
                ctx.log(f"    error: {e}")
        return result
