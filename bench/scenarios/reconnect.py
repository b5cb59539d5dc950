"""``reconnect``: what a phone pays to come back — a full login vs a FAST login with inline resumption.

Full: STARTTLS, SCRAM (RFC 6120 SASL, the generator's cached salted password), stream restart, bind,
roster get, close. FAST: each device first logs in once over SASL2 with its password, asks for a
FAST token and enables resumable stream management inline (Bind2), then drops its connection; the
measured pass connects, STARTTLS, and sends one ``<authenticate mechanism='HT-SHA-256-NONE'>`` with
``<resume/>`` inline, and drops again (so the next pass can resume too).

Round trips are counted by the client code (xmppload/modern.py). A server that offers no SASL2 with
FAST gets "n/a" (NaN) in the FAST rows and says so in its log line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from ..targets import Provisioning
from ..xmppload.client import Account, close
from ..xmppload.modern import Device, fast_resume, fast_setup, full_login, new_device, supports_fast
from ..xmppload.stats import summary_ms
from .base import Metric, RunContext, Scenario, ServerResult, bench_accounts


class ReconnectScenario(Scenario):
    name = "reconnect"
    help = "reconnect cost: full SCRAM login + bind + roster vs FAST token + inline SM resume (SASL2)"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=500, help="devices (accounts)")
        parser.add_argument("--concurrency", type=int, default=50, help="logins in flight")

    def metric_specs(self) -> tuple[Metric, ...]:
        c = self.args.concurrency
        return (
            Metric("full.logins_per_s", f"full login, {c} in flight", "1/s", True),
            Metric("full.p50_ms", "full login: p50", "ms", False, "{:.2f}"),
            Metric("full.round_trips", "full login: round trips", "", False, "{:.0f}", ratio=False),
            Metric("full.cpu_ms", "full login: server CPU/login", "ms", False, "{:.3f}"),
            Metric("fast.logins_per_s", f"FAST + resume, {c} in flight", "1/s", True),
            Metric("fast.p50_ms", "FAST + resume: p50", "ms", False, "{:.2f}"),
            Metric("fast.round_trips", "FAST + resume: round trips", "", False, "{:.0f}", ratio=False),
            Metric("fast.cpu_ms", "FAST + resume: server CPU/login", "ms", False, "{:.3f}"),
            Metric("fast.resumed", "FAST: sessions resumed", "%", True, "{:.0f}", ratio=False),
            Metric("speedup", "FAST vs full (logins/s)", "x", True, "{:.2f}", ratio=False),
            Metric("errors", "errors", "", False, "{:.0f}", ratio=False),
        )

    def provisioning(self) -> Provisioning:
        return Provisioning(bench_accounts(self.args.n))

    async def _pool(self, n: int, work: object) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                await work(queue.get_nowait())  # type: ignore[operator]

        await asyncio.gather(*(worker() for _ in range(min(self.args.concurrency, n) or 1)))

    async def _full_pass(
        self, ctx: RunContext, accounts: list[Account], errors: list[str]
    ) -> tuple[list[float], list[int], float, float]:
        """Every account logs in the RFC 6120 way and closes: latencies, round trips, wall, CPU."""
        endpoint = ctx.target.endpoint
        latencies: list[float] = []
        trips: list[int] = []
        closing: list[asyncio.Task[None]] = []

        async def full(i: int) -> None:
            try:
                session, n = await full_login(
                    endpoint, accounts[i], f"r{i}", ctx.creds, ctx.login_options("none", i)
                )
            except Exception as e:
                errors.append(f"full: {type(e).__name__}: {e}")
                return
            latencies.append(session.timings["login"])
            trips.append(n)
            closing.append(asyncio.create_task(close(session, ctx.timeout)))

        meter = ctx.meter()
        t0 = time.perf_counter()
        await self._pool(len(accounts), full)
        wall = time.perf_counter() - t0
        await asyncio.gather(*closing, return_exceptions=True)
        return latencies, trips, wall, meter.stop().server_cpu

    async def run(self, ctx: RunContext) -> ServerResult:
        accounts = self.provisioning().accounts
        endpoint = ctx.target.endpoint
        result = ServerResult()
        errors: list[str] = []

        # -- full logins (the first pass also fills the salted-password cache) --
        await self._full_pass(ctx, accounts, errors)
        latencies, trips, wall, cpu = await self._full_pass(ctx, accounts, errors)
        result.metrics["full.logins_per_s"] = len(latencies) / wall if wall else math.nan
        result.metrics["full.p50_ms"] = summary_ms(latencies)["p50"]
        result.metrics["full.round_trips"] = float(max(trips, default=0))
        result.metrics["full.cpu_ms"] = cpu * 1000 / len(latencies) if latencies else math.nan

        # -- FAST + resume --
        opts = ctx.login_options("none")
        if not await supports_fast(endpoint, opts, accounts[0]):
            ctx.log("  no SASL2 with FAST (HT-SHA-256-NONE) offered: FAST rows are n/a")
            for key in ("logins_per_s", "p50_ms", "round_trips", "cpu_ms", "resumed"):
                result.metrics[f"fast.{key}"] = math.nan
            result.metrics["speedup"] = math.nan
            result.metrics["errors"] = float(len(errors))
            return result
        devices: list[Device] = [new_device(a) for a in accounts]

        async def setup(i: int) -> None:
            try:
                await fast_setup(endpoint, devices[i], ctx.creds, ctx.login_options("none", i))
            except Exception as e:
                errors.append(f"setup: {type(e).__name__}: {e}")

        await self._pool(len(devices), setup)
        await asyncio.sleep(0.5)  # the server notices the drops and detaches the sessions
        ready = [d for d in devices if d.token]
        latencies.clear()
        trips.clear()
        resumed = 0

        async def fast(i: int) -> None:
            nonlocal resumed
            try:
                seconds, n, ok = await fast_resume(endpoint, ready[i], ctx.login_options("none", i))
            except Exception as e:
                errors.append(f"fast: {type(e).__name__}: {e}")
                return
            latencies.append(seconds)
            trips.append(n)
            resumed += ok

        meter = ctx.meter()
        t0 = time.perf_counter()
        await self._pool(len(ready), fast)
        wall = time.perf_counter() - t0
        delta = meter.stop()
        m = result.metrics
        m["fast.logins_per_s"] = len(latencies) / wall if wall else math.nan
        m["fast.p50_ms"] = summary_ms(latencies)["p50"]
        m["fast.round_trips"] = float(max(trips, default=0))
        m["fast.cpu_ms"] = delta.server_cpu * 1000 / len(latencies) if latencies else math.nan
        m["fast.resumed"] = 100.0 * resumed / len(latencies) if latencies else math.nan
        m["speedup"] = m["fast.logins_per_s"] / m["full.logins_per_s"] if m["full.logins_per_s"] else math.nan
        m["errors"] = float(len(errors))
        result.details["error_samples"] = errors[:5]
        ctx.log(
            f"  full {m['full.logins_per_s']:.1f}/s ({m['full.round_trips']:.0f} RTs, "
            f"p50 {m['full.p50_ms']:.1f} ms)  FAST {m['fast.logins_per_s']:.1f}/s "
            f"({m['fast.round_trips']:.0f} RTs, p50 {m['fast.p50_ms']:.1f} ms, "
            f"{m['fast.resumed']:.0f}% resumed), {len(errors)} errors"
        )
        for e in errors[:3]:
            ctx.log(f"    error: {e}")
        return result
