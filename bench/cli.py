"""``python -m bench SCENARIO [options]`` / ``bench/run``: run one scenario against several servers.

The generator pins itself to one CPU and each server to another (taskset), servers run one after the
other in the same invocation, and the comparison table plus a JSON file come out at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import resource
import shutil
import signal
import ssl
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from . import dnsserver
from .certs import CertFiles, make_self_signed
from .report import host_info, ratios, table, write_json
from .scenarios import SCENARIOS
from .scenarios.base import LaunchPair, RunContext, Scenario, ServerResult, wait_idle
from .targets import TARGETS, ProsodyTarget, Provisioning, RoostTarget, Target
from .xmppload.client import CredentialCache, client_tls_context

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--servers", default="roost,prosody,ejabberd", help="comma-separated: " + ",".join(TARGETS)
    )
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU the generator is pinned to")
    p.add_argument("--no-pin", action="store_true", help="do not pin anything (for machines with one CPU)")
    p.add_argument("--out", type=Path, help="JSON result path (default bench/results/<date>-<scenario>.json)")
    p.add_argument("--no-save", action="store_true", help="do not write a JSON file")
    p.add_argument("--keep", action="store_true", help="keep the servers' temp dirs (configs, logs, data)")
    p.add_argument("--timeout", type=float, default=15.0, help="per-step timeout in seconds")
    p.add_argument("--cert-key", choices=("ec", "rsa"), default="ec", help="key type of the test certificate")
    p.add_argument(
        "--local-addrs", default="127.0.0.1",
        help="source addresses to spread connections over, e.g. 127.0.0.1-8 (for >28k connections)",
    )  # fmt: skip
    p.add_argument(
        "--roost-config", type=Path, help="template for Roost's TOML config (see bench/targets.py)"
    )
    p.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    p.add_argument(
        "--mam", action="store_true",
        help="message archiving on: Roost's [mam], Prosody's mod_mam on SQLite (default: off everywhere)",
    )  # fmt: skip
    p.add_argument(
        "--wait-idle", type=float, default=0, metavar="SECONDS",
        help="before each server, wait up to SECONDS for the machine to be idle (shared machines)",
    )  # fmt: skip
    p.add_argument(
        "--retry-busy", type=int, default=2, metavar="N",
        help="repeat a measurement up to N times when another process used the pinned CPUs",
    )  # fmt: skip


def parse_addrs(spec: str) -> list[str]:
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            base, _, last = part.rpartition("-")
            prefix, _, first = base.rpartition(".")
            out += [f"{prefix}.{i}" for i in range(int(first), int(last) + 1)]
        elif part:
            out.append(part)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cls in SCENARIOS.items():
        p = sub.add_parser(name, help=cls.help, description=cls.help)
        add_common(p)
        cls.add_arguments(p)
    p = sub.add_parser("serve", help="start one server with bench accounts and wait (for poking at it)")
    p.add_argument("server", choices=list(TARGETS))
    p.add_argument("--n", type=int, default=10, help="accounts user1..userN, password 'pw'")
    add_common(p)
    return parser


def pin(args: argparse.Namespace, generator: bool = True) -> None:
    """Pin the generator to --client-cpu (``generator=False``: only check the two CPUs, for s2s runs
    where server B takes --client-cpu and the generator floats)."""
    if args.no_pin:
        return
    cpus = os.sched_getaffinity(0)
    if args.client_cpu not in cpus or args.server_cpu not in cpus or args.client_cpu == args.server_cpu:
        raise SystemExit(
            f"need two distinct CPUs from {sorted(cpus)} for --server-cpu/--client-cpu (or use --no-pin)"
        )
    if generator:
        os.sched_setaffinity(0, {args.client_cpu})


def make_target(
    name: str, workdir: Path, args: argparse.Namespace, certs: Any, cpu: int | None = None
) -> Target:
    cls = TARGETS[name]
    cpu = -1 if args.no_pin else (args.server_cpu if cpu is None else cpu)
    target = cls(workdir / name, certs, cpu, log)
    if isinstance(target, RoostTarget) and args.roost_config:
        target.template = args.roost_config.read_text()
    if getattr(args, "mam", False):
        if not isinstance(target, (RoostTarget, ProsodyTarget)):
            raise SystemExit(f"--mam: archiving is configured for roost and prosody only, not {name}")
        target.mam = True
    target.dir.mkdir(parents=True, exist_ok=True)
    return target


def pair_launcher(
    name: str,
    workdir: Path,
    args: argparse.Namespace,
    prov: Provisioning,
    tls: ssl.SSLContext,
    versions: dict[str, str],
) -> LaunchPair:
    """For two-server scenarios (s2s): start A (``a.localhost``, --server-cpu) and B (``b.localhost``,
    --client-cpu) of kind ``name`` federated with one auth mode, yield A's context with B's as its
    ``peer``, stop both. Certificates: one CA per run (tests/support/testca.py) issues each domain's."""
    from tests.support.testca import TestCA

    from .scenarios.s2s import A_DOMAIN, B_DOMAIN
    from .targets import S2SSetup, free_port

    ca = TestCA(workdir / "ca")
    certs = {}
    for domain in (A_DOMAIN, B_DOMAIN):
        issued = ca.issue(domain, f"conference.{domain}")
        combined = workdir / "ca" / f"{domain}.combined.pem"
        combined.write_bytes(issued.key.read_bytes() + issued.cert.read_bytes())
        certs[domain] = CertFiles(issued.cert, issued.key, combined)

    @contextlib.asynccontextmanager
    async def launch(auth: str) -> AsyncIterator[RunContext]:
        ports = {A_DOMAIN: free_port(), B_DOMAIN: free_port()}
        dns_transport, _, dns_port = await dnsserver.serve(ports)
        started: list[Target] = []
        contexts: list[RunContext] = []
        try:
            for domain, cpu in ((A_DOMAIN, args.server_cpu), (B_DOMAIN, args.client_cpu)):
                target = make_target(name, workdir / f"{auth}-{domain}", args, certs[domain], cpu)
                target.domain = domain
                peers = {d: p for d, p in ports.items() if d != domain}
                target.s2s = S2SSetup(ports[domain], peers, auth, ca.ca_file, dns_port)
                versions[name] = target.version()
                log(f"{name} {versions[name]}: starting {domain} ({auth}) on 127.0.0.1:{target.port}, "
                    f"s2s {ports[domain]} (CPU {target.cpu})")  # fmt: skip
                started.append(target)
                await target.start(prov)
                creds = CredentialCache()
                target.seed_credentials(creds)
                contexts.append(
                    RunContext(target, creds, tls, log, args.timeout, parse_addrs(args.local_addrs))
                )
            contexts[0].peer = contexts[1]
            yield contexts[0]
        except Exception:
            for target in started:
                log(target.tail_logs())
            raise
        finally:
            for target in started:
                await asyncio.shield(target.stop())
                target.close_files()
            dns_transport.close()

    return launch


def cancel_on_signals() -> None:
    """SIGINT/SIGTERM cancel the main task, so every started server is still stopped on the way out."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)


async def run_scenario(args: argparse.Namespace, loop_name: str) -> int:
    cancel_on_signals()
    scenario: Scenario = SCENARIOS[args.command](args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; choose from {list(TARGETS)}")
    workdir = Path(tempfile.mkdtemp(prefix=f"roost-bench-{args.command}-"))
    log(f"work dir {workdir}; scenario {args.command}; servers {servers}")
    certs = make_self_signed(workdir / "certs", key_type=args.cert_key)
    prov = scenario.provisioning()
    tls = client_tls_context()
    results: dict[str, ServerResult] = {}
    versions: dict[str, str] = {}
    failures: dict[str, str] = {}
    started = datetime.datetime.now()
    try:
        for name in servers:
            if args.wait_idle > 0:
                await wait_idle(args.wait_idle, log)
            if scenario.pair:
                try:
                    launch = pair_launcher(name, workdir / name, args, prov, tls, versions)
                    results[name] = await scenario.run_pair(launch)
                except Exception as exc:
                    failures[name] = f"{type(exc).__name__}: {exc}"
                    log(f"{name}: FAILED: {failures[name]}")
                    traceback.print_exc()
                log(f"{name}: stopped")
                continue
            target = make_target(name, workdir, args, certs)
            versions[name] = target.version()
            log(f"{name} {versions[name]}: starting on 127.0.0.1:{target.port} (CPU {target.cpu})")
            try:
                t0 = time.monotonic()
                await target.start(prov)
                log(f"{name}: ready in {time.monotonic() - t0:.1f}s (pid {target.pid})")
                creds = CredentialCache()
                target.seed_credentials(creds)
                ctx = RunContext(
                    target, creds, tls, log, args.timeout, parse_addrs(args.local_addrs),
                    retry_busy=args.retry_busy, wait_idle_s=args.wait_idle,
                )  # fmt: skip
                results[name] = await scenario.run(ctx)
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                log(f"{name}: FAILED: {failures[name]}")
                traceback.print_exc()
                log(target.tail_logs())
            finally:
                # shielded: a second Ctrl-C must not leave the server running
                await asyncio.shield(target.stop())
                target.close_files()
                log(f"{name}: stopped")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if results:
        metrics = scenario.metric_specs()
        print()
        print(f"scenario {args.command} — " + ", ".join(f"{s} {versions[s]}" for s in results))
        print(table(metrics, results))
        document = {
            "scenario": args.command,
            "started": started.isoformat(timespec="seconds"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "host": host_info(loop_name),
            "versions": versions,
            "servers": {s: {"metrics": r.metrics, "details": r.details} for s, r in results.items()},
            "ratios": ratios(metrics, results),
            "failures": failures,
        }
        if not args.no_save:
            out = args.out or RESULTS / f"{started:%Y%m%d-%H%M%S}-{args.command}.json"
            write_json(out, document)
            print(f"\nresults written to {out}")
    for name, why in failures.items():
        print(f"{name}: FAILED: {why}", file=sys.stderr)
    return 1 if failures or not results else 0


async def serve(args: argparse.Namespace) -> int:
    from .scenarios.base import bench_accounts
    from .targets import Provisioning

    workdir = Path(tempfile.mkdtemp(prefix="roost-bench-serve-"))
    certs = make_self_signed(workdir / "certs", key_type=args.cert_key)
    target = make_target(args.server, workdir, args, certs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log(f"{args.server}: starting")
    try:
        await target.start(Provisioning(bench_accounts(args.n)))
        ep = target.endpoint
        log(f"{args.server} (pid {target.pid}) on {ep.host}:{ep.port}, domain {ep.domain}, "
            f"users user1..user{args.n} / pw; work dir {workdir}; Ctrl-C stops it")  # fmt: skip
        await stop.wait()
    finally:
        await target.stop()
        target.close_files()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _runner(args: argparse.Namespace) -> tuple[Callable[[Coroutine[Any, Any, int]], int], str]:
    if not args.no_uvloop:
        try:
            import uvloop

            def run_uv(coro: Coroutine[Any, Any, int]) -> int:
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    return runner.run(coro)

            return run_uv, f"uvloop {getattr(uvloop, '__version__', '?')}"
        except ImportError:
            pass
    return asyncio.run, "asyncio"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit = raise_fd_limit()
    if limit < 4096:
        log(f"warning: only {limit} file descriptors allowed")
    run, loop_name = _runner(args)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            return run(serve(args))
        return 0
    pin(args, generator=not SCENARIOS[args.command].pair)
    try:
        return run(run_scenario(args, loop_name))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted")
        return 130
