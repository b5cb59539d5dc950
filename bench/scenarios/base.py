"""What a scenario is: its options, the accounts it needs, one run against one server, its metrics.

Adding a scenario = a module in this package with a ``Scenario`` subclass, registered in
``bench/scenarios/__init__.py``. The driver (bench/cli.py) starts each server, calls ``run`` with a
``RunContext``, and prints/saves the metrics declared by ``metric_specs()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..targets import Provisioning, Target
from ..xmppload.client import Account, CredentialCache, Endpoint, LoginOptions, Session, close, login
from ..xmppload.procstat import CpuDelta, CpuMeter, Meter, PairCpuMeter, cpu_busy_ticks, self_cpu, tree_cpu

Log = Callable[[str], None]
#: How a session logs in and closes (TCP by default; the WebSocket scenario passes its own).
LoginFn = Callable[[Endpoint, Account, str, CredentialCache, LoginOptions], Awaitable[Session]]
CloseFn = Callable[[Session, float], Awaitable[None]]


#: Starts server A and B of one kind, federated with an auth mode ("external" or "dialback"), and
#: yields A's context whose ``peer`` is B's; both stop on exit (bench/cli.py: pair_launcher).
LaunchPair = Callable[[str], "AbstractAsyncContextManager[RunContext]"]


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # key in ServerResult.metrics
    label: str  # row label in the table
    unit: str
    higher_is_better: bool
    fmt: str = "{:.1f}"
    ratio: bool = True  # False for diagnostic rows (CPU use, errors) where Roost/other means nothing


@dataclass(slots=True)
class ServerResult:
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RunContext:
    target: Target
    creds: CredentialCache
    tls: ssl.SSLContext
    log: Log
    timeout: float = 15.0
    local_addrs: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    retry_busy: int = 2  # re-measure when another process used the pinned CPUs (see interfered())
    wait_idle_s: float = 0.0
    #: The second server of a two-server scenario (s2s: ``target`` is A, this is B), else None.
    peer: RunContext | None = None

    def meter(self) -> Meter:
        """Start measuring the server's (and the generator's) CPU; with a peer, both servers' CPU."""
        own = CpuMeter(self.target.pid, self.target.cpu)
        if self.peer is None:
            return own
        return PairCpuMeter(own, CpuMeter(self.peer.target.pid, self.peer.target.cpu))

    def login_options(self, presence: str = "echo", index: int = 0) -> LoginOptions:
        """Login options; ``index`` spreads connections over the configured source addresses."""
        addr = self.local_addrs[index % len(self.local_addrs)]
        local = None if addr == "127.0.0.1" and len(self.local_addrs) == 1 else (addr, 0)
        return LoginOptions(tls=self.tls, timeout=self.timeout, presence=presence, local_addr=local)


def bench_accounts(n: int, password: str = "pw") -> list[Account]:
    return [Account(f"user{i}", password) for i in range(1, n + 1)]


class Scenario(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    #: Two-server scenarios (s2s) start their own pair of instances per server kind through
    #: ``run_pair``; the driver then neither starts a server for them nor pins the generator.
    pair: ClassVar[bool] = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Scenario-specific command-line options (optional hook)."""
        del parser

    @abstractmethod
    def metric_specs(self) -> tuple[Metric, ...]:
        """The rows of the comparison table, in order."""

    @abstractmethod
    def provisioning(self) -> Provisioning: ...

    @abstractmethod
    async def run(self, ctx: RunContext) -> ServerResult: ...

    async def run_pair(self, launch: LaunchPair) -> ServerResult:
        """Two-server scenarios (``pair = True``): ``launch(auth)`` starts one federated pair."""
        raise NotImplementedError(f"{self.name} is a one-server scenario")


# ---- helpers shared by scenarios ------------------------------------------------------------------


@dataclass(slots=True)
class LoginBatch:
    sessions: list[Session]
    errors: list[str]
    wall: float  # until everything finished, background closes included
    logins_wall: float  # until the last login finished: the base for logins/s


async def login_many(
    ctx: RunContext,
    accounts: Iterable[Account],
    concurrency: int,
    resource: str,
    presence: str = "echo",
    keep: bool = True,
    on_session: Callable[[Session], Awaitable[None]] | None = None,
    login_fn: LoginFn | None = None,
    close_fn: CloseFn | None = None,
) -> LoginBatch:
    """Log accounts in with ``concurrency`` logins in flight; keep the sessions or close each at once.

    With ``keep=False`` every session is closed right after login, in the background: a worker starts
    its next login while the previous stream closes (RFC 6120 §4.4 has us wait for the server's closing
    tag, and some servers take their time), and the batch ends when every close has completed.
    """
    todo = list(enumerate(accounts))
    it = iter(todo)
    sessions: list[Session] = []
    errors: list[str] = []
    closing: list[asyncio.Task[None]] = []
    endpoint = ctx.target.endpoint
    give_up = max(50, len(todo) // 5)
    do_login: LoginFn = login_fn or login
    do_close: CloseFn = close_fn or close

    async def worker() -> None:
        for index, account in it:
            if len(errors) > give_up:
                return
            try:
                s = await do_login(
                    endpoint, account, f"{resource}{index}", ctx.creds, ctx.login_options(presence, index)
                )
                sessions.append(s)
                if not keep:
                    closing.append(asyncio.create_task(do_close(s, ctx.timeout), name=f"close-{s.jid}"))
                if on_session is not None:
                    await on_session(s)
            except Exception as exc:
                errors.append(f"{account.user}: {type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(todo)) or 1)))
    logins_done = time.perf_counter() - t0
    for result in await asyncio.gather(*closing, return_exceptions=True):
        if isinstance(result, BaseException):
            errors.append(f"close: {type(result).__name__}: {result}")
    wall = time.perf_counter() - t0
    if len(errors) > give_up:
        errors.append(f"gave up after {len(errors)} errors")
    return LoginBatch(sessions, errors, wall, logins_done)


async def close_all(
    sessions: list[Session], time_limit: float, concurrency: int = 200, close_fn: CloseFn | None = None
) -> None:
    sem = asyncio.Semaphore(concurrency)
    do_close: CloseFn = close_fn or close

    async def one(s: Session) -> None:
        async with sem:
            with contextlib.suppress(Exception):
                await do_close(s, time_limit)

    await asyncio.gather(*(one(s) for s in sessions))


def cpu_details(delta: CpuDelta) -> dict[str, Any]:
    if delta.parts:  # two servers (s2s): their sum, and each one's CPU and core busyness
        return {
            "wall_s": delta.wall,
            "server_cpu_s": delta.server_cpu,
            "server_cpu_s_each": [p.server_cpu for p in delta.parts],
            "server_core_busy_each": [p.server_core_busy for p in delta.parts],
            "server_util": delta.server_util,
            "generator_util": delta.generator_util,
        }
    return {
        "wall_s": delta.wall,
        "server_cpu_s": delta.server_cpu,
        "server_util": delta.server_util,
        "generator_util": delta.generator_util,
        "server_core_busy": delta.server_core_busy,
        "foreign_load": delta.foreign_load,
        "generator_core_busy": delta.generator_core_busy,
        "generator_foreign_load": delta.generator_foreign_load,
    }


FOREIGN_LIMIT = 0.15  # cores of a pinned CPU used by neither server nor generator before we distrust a run


def interfered(delta: CpuDelta) -> bool:
    return delta.foreign_load > FOREIGN_LIMIT or delta.generator_foreign_load > FOREIGN_LIMIT


async def wait_idle(limit: float, log: Log, exclude_pid: int | None = None) -> None:
    """Wait until other processes use < 0.15 cores over 2 s, for at most ``limit`` seconds.

    Our own CPU and that of ``exclude_pid``'s process tree (an idle server under test) do not count.
    """
    deadline = time.monotonic() + limit
    last_log = 0.0
    tick = os.sysconf("SC_CLK_TCK")

    def ours() -> float:
        return self_cpu().cpu + (tree_cpu(exclude_pid).cpu if exclude_pid else 0.0)

    while True:
        before, ours0 = cpu_busy_ticks(), ours()
        await asyncio.sleep(2.0)
        after, ours1 = cpu_busy_ticks(), ours()
        busy = sum(after[c][0] - before[c][0] for c in after if c in before) / tick
        others = (busy - (ours1 - ours0)) / 2.0
        if others < FOREIGN_LIMIT:
            return
        now = time.monotonic()
        if now > deadline:
            log(f"warning: the machine is still busy ({others:.2f} cores used by others); going ahead")
            return
        if now - last_log > 30:
            log(f"waiting for the machine to become idle ({others:.2f} cores used by others)")
            last_log = now


def check_interference(ctx: RunContext, delta: CpuDelta) -> None:
    """Warn when something besides the server used its core, or the generator ran out of CPU."""
    if delta.foreign_load > FOREIGN_LIMIT:
        ctx.log(
            f"  warning: {delta.foreign_load:.2f} cores of the server's CPU went to other processes; "
            "these figures are not trustworthy (is the machine idle?)"
        )
    if delta.generator_foreign_load > FOREIGN_LIMIT:
        ctx.log(
            f"  warning: {delta.generator_foreign_load:.2f} cores of the generator's CPU went to other "
            "processes; latencies are not trustworthy (is the machine idle?)"
        )
    if delta.generator_util > 0.9:
        ctx.log("  warning: the generator used >90% of its CPU; the server may not be the bottleneck")
