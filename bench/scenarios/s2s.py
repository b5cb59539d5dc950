"""``s2s``: messages from users on server A to users on server B over one s2s link.

Two instances of the same server (``a.localhost`` on ``--server-cpu``, ``b.localhost`` on
``--client-cpu``; the generator is not pinned and shares both CPUs), each with a certificate for its
domain from a CA made for the run. ``--pairs`` accounts log in on each side; ``userN@a.localhost``
sends ~100-byte chat messages to ``userN@b.localhost`` (bare JID), so every message crosses A's
outgoing link. For each ``--auth`` mode a fresh pair of instances is started:

* link set-up: the first message, sent once everyone is online and no link exists yet, until it is
  delivered on B: SRV lookups (where the server does them), TCP, STARTTLS, authentication (SASL
  EXTERNAL, or dialback with B's verification connection back to A) and the stanza itself.
* with the last mode's link: fixed offered loads (``--rates``, open loop) and saturation (closed
  loop, ``--window`` messages in flight per sender; a delivery on B releases the sender's next),
  as in ``oneone``. CPU per message is **both servers' CPU summed**.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

from ..targets import Provisioning
from .base import LaunchPair, Metric, RunContext, ServerResult, bench_accounts, close_all, login_many
from .oneone import OneOneScenario, Peer, Stats, Window

A_DOMAIN = "a.localhost"
B_DOMAIN = "b.localhost"
AUTH_MODES = ("external", "dialback")


class Receiver(Peer):
    """A session on B: counts and times deliveries and releases its sender; never sends itself."""

    __slots__ = ()

    def send(self, count: int) -> None:
        del count


class S2SScenario(OneOneScenario):
    name = "s2s"
    help = "users on A to users on B over one s2s link: link set-up per auth mode, msgs/s, CPU/msg"
    pair = True

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pairs", type=int, default=100, help="senders on A = receivers on B")
        parser.add_argument(
            "--auth", default="external,dialback",
            help="link authentication modes, one fresh pair of servers each (throughput: the last)",
        )  # fmt: skip
        parser.add_argument("--rates", default="1000", help="fixed offered loads in msg/s ('' for none)")
        parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
        parser.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic before measuring")
        parser.add_argument("--window", type=int, default=4, help="saturation: messages in flight per sender")
        parser.add_argument("--login-concurrency", type=int, default=50)

    def modes(self) -> list[str]:
        modes = [m.strip() for m in str(self.args.auth).split(",") if m.strip()]
        bad = [m for m in modes if m not in AUTH_MODES]
        if bad or not modes:
            raise SystemExit(f"--auth: expected a list of {', '.join(AUTH_MODES)}, got {self.args.auth!r}")
        return modes

    def metric_specs(self) -> tuple[Metric, ...]:
        out = [
            Metric(f"setup_{m}_ms", f"link set-up, {m} (first stanza delivered)", "ms", False)
            for m in self.modes()
        ]
        out += [
            Metric("saturation.msgs_per_s", "saturation: delivered msgs/s", "1/s", True, "{:.0f}"),
            Metric("saturation.cpu_us_per_msg", "saturation: CPU/msg, A+B", "µs", False),
            Metric("saturation.cpu_a_us_per_msg", "saturation: CPU/msg, A (sending)", "µs", False),
            Metric("saturation.cpu_b_us_per_msg", "saturation: CPU/msg, B (receiving)", "µs", False),
            Metric("saturation.p50_ms", "saturation: p50 latency", "ms", False, "{:.2f}"),
            Metric(
                "saturation.generator_util", "saturation: generator CPU use", "cores", False, "{:.2f}",
                ratio=False,
            ),
        ]  # fmt: skip
        for r in self.rates():
            out += [
                Metric(f"rate{r}.msgs_per_s", f"{r}/s offered: delivered msgs/s", "1/s", True, "{:.0f}"),
                Metric(f"rate{r}.p50_ms", f"{r}/s offered: p50 latency", "ms", False, "{:.2f}"),
                Metric(f"rate{r}.p99_ms", f"{r}/s offered: p99 latency", "ms", False, "{:.2f}"),
                Metric(f"rate{r}.cpu_us_per_msg", f"{r}/s offered: CPU/msg, A+B", "µs", False),
                Metric(f"rate{r}.lost", f"{r}/s offered: undelivered", "", False, "{:.0f}", ratio=False),
            ]
        out.append(Metric("bounced", "error replies instead of deliveries", "", False, "{:.0f}", ratio=False))
        out.append(Metric("stray", "stamped messages not from the sender", "", False, "{:.0f}", ratio=False))
        return tuple(out)

    def provisioning(self) -> Provisioning:
        return Provisioning(bench_accounts(self.args.pairs))

    async def run(self, ctx: RunContext) -> ServerResult:
        raise RuntimeError("s2s needs two servers: the driver calls run_pair")

    async def run_pair(self, launch: LaunchPair) -> ServerResult:
        result = ServerResult()
        stats = Stats()
        modes = self.modes()
        for i, mode in enumerate(modes):
            async with launch(mode) as ctx:
                assert ctx.peer is not None
                async with self._online(ctx, ctx.peer, stats) as peers:
                    await self._link_setup(ctx, peers, stats, mode, result)
                    if i == len(modes) - 1:
                        senders = peers[0::2]
                        for rate in self.rates():
                            await self._fixed_rate(ctx, senders, stats, rate, result)
                        await self._saturation(ctx, peers, stats, result)
                        self._split_cpu(result)
        result.metrics["bounced"] = stats.bounced
        result.metrics["stray"] = stats.stray
        result.details["throughput_auth"] = modes[-1]
        return result

    @contextlib.asynccontextmanager
    async def _online(self, a: RunContext, b: RunContext, stats: Stats) -> AsyncIterator[list[Peer]]:
        """Everyone online on both servers; [sender1, receiver1, sender2, …] (oneone's pairing)."""
        accounts = self.provisioning().accounts
        batches = []
        try:
            for ctx in (a, b):
                batch = await login_many(ctx, accounts, self.args.login_concurrency, "c", keep=True)
                batches.append(batch)
                if batch.errors:
                    raise RuntimeError(
                        f"{len(batch.errors)} logins failed on {ctx.target.domain}: {batch.errors[0]}"
                    )
            on_a = {s.account.user: s for s in batches[0].sessions}
            on_b = {s.account.user: s for s in batches[1].sessions}
            a.log(f"  {len(on_a)} sessions online on {A_DOMAIN}, {len(on_b)} on {B_DOMAIN}")
            peers: list[Peer] = []
            for acc in accounts:
                peers.append(Peer(on_a[acc.user].conn, acc.user, stats, domain=B_DOMAIN))
                peers.append(Receiver(on_b[acc.user].conn, acc.user, stats, domain=A_DOMAIN))
            yield peers
        finally:
            for batch in batches:
                await close_all(batch.sessions, a.timeout)

    async def _link_setup(
        self, ctx: RunContext, peers: list[Peer], stats: Stats, mode: str, result: ServerResult
    ) -> None:
        """One message while no link exists: its latency is the link's set-up (plus two c2s hops)."""
        start = time.monotonic_ns()
        stats.window = Window(start, start + 10**15)
        received, bounced = stats.received, stats.bounced
        peers[0].send(1)
        deadline = time.monotonic() + max(ctx.timeout, 30.0)
        while stats.received == received:
            if time.monotonic() > deadline or stats.bounced > bounced:
                raise TimeoutError(
                    f"{mode}: the first message from {A_DOMAIN} did not reach {B_DOMAIN} "
                    f"({stats.bounced - bounced} error replies); see the servers' logs"
                )
            await asyncio.sleep(0.0005)
        setup_ms = stats.window.latencies_ns[-1] / 1e6
        result.metrics[f"setup_{mode}_ms"] = setup_ms
        # The link is up now: a second message shows what one message costs without set-up.
        before = len(stats.window.latencies_ns)
        peers[0].send(1)
        await self._drain(stats, 10)
        after = stats.window.latencies_ns[before:]
        next_ms = after[0] / 1e6 if after else math.nan
        result.details[f"setup_{mode}"] = {"first_ms": setup_ms, "next_ms": next_ms}
        ctx.log(f"  {mode}: link set-up {setup_ms:.1f} ms (the next message: {next_ms:.2f} ms)")

    def _split_cpu(self, result: ServerResult) -> None:
        """Saturation CPU per message on A and on B separately (the sum is saturation.cpu_us_per_msg)."""
        sat = result.details["saturation"]
        delivered = result.metrics["saturation.msgs_per_s"] * sat["wall_s"]
        for side, cpu in zip(("a", "b"), sat["server_cpu_s_each"], strict=True):
            result.metrics[f"saturation.cpu_{side}_us_per_msg"] = (
                cpu * 1e6 / delivered if delivered else math.nan
            )
