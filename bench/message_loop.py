"""1:1 messages between online pairs against a running server, with or without stream management on
the wire: a fixed load to count the server's instructions per message under callgrind.

The ``oneone`` scenario's saturation phase, made repeatable: ``--pairs`` pairs log in (accounts
``user1``..``userN``, password ``pw``: ``bench/run serve roost --n N --keep`` provisions them), with
``--sm`` each session enables XEP-0198 and answers every ``<r/>`` with an exact ``<a/>``; then each side
keeps ``--window`` messages in flight to its partner (a delivery lets the partner send the next one).
With ``--callgrind PID`` the script switches callgrind's counting on after ``--warmup`` messages and
dumps the totals after ``--messages`` more, before anyone logs out, so the figure holds messages (and
acks) only:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/x.out \\
        .venv/bin/python -m roost.cli.main --config DIR/roost/roost.toml run &
    .venv/bin/python -m bench.message_loop PORT --callgrind PID [--sm]   # totals in /tmp/x.out.1

Wall-clock saturation figures swing ±15 % between runs on a shared two-core machine; instruction
counts repeat to about 1 %, which is what a "SM costs at most 10 % more" comparison needs. They count
user-space instructions only, though, and under callgrind the server is so slow that its reads hold
many more messages than at full speed; ``--cpu-of PID`` (a server running normally) prints its user
and system CPU per counted message and its read and write system calls per message, the same load at
full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from bench.scenarios.oneone import Peer, Stats, _enable_sm
from bench.xmppload.client import (
    Account,
    CredentialCache,
    Endpoint,
    LoginOptions,
    Session,
    client_tls_context,
    close,
    login,
)


async def wait_received(stats: Stats, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while stats.received < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stats.received} of {count} messages delivered")
        await asyncio.sleep(0.01)


def server_counters(pid: int) -> tuple[float, float, int, int]:
    """User and system CPU seconds of process ``pid`` so far, and its read and write system calls
    (Linux /proc): the kernel's share of the sockets' work, and how many reads the traffic took."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields[11]) / tick, int(fields[12]) / tick, int(io["syscr"]), int(io["syscw"])


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL)


async def run(args: argparse.Namespace) -> None:
    endpoint = Endpoint("127.0.0.1", args.port, args.domain)
    creds = CredentialCache()
    options = LoginOptions(tls=client_tls_context())
    sessions: list[Session] = []
    for n in range(2 * args.pairs):
        session = await login(endpoint, Account(f"user{n + 1}", "pw"), "loop", creds, options)
        if args.sm:
            await _enable_sm(session)
        sessions.append(session)
    stats = Stats()
    peers = [
        Peer(s.conn, f"user{(n ^ 1) + 1}", stats, args.sm, args.domain) for n, s in enumerate(sessions)
    ]
    for n, peer in enumerate(peers):
        peer.credits_to = peers[n ^ 1]  # what a peer receives came from its partner: it may send again
    for peer in peers:
        peer.send(args.window)
    await wait_received(stats, args.warmup)
    if args.callgrind:
        callgrind(args.callgrind, "-z")  # what the warm-up counted (if counting was on) goes away
        callgrind(args.callgrind, "-i", "on")
    counters_before = server_counters(args.cpu_of) if args.cpu_of else (0.0, 0.0, 0, 0)
    started, before = time.perf_counter(), stats.received
    await wait_received(stats, before + args.messages)
    if args.callgrind:
        callgrind(args.callgrind, "-d")
        callgrind(args.callgrind, "-i", "off")
    measured = stats.received - before
    wall = time.perf_counter() - started
    counters = server_counters(args.cpu_of) if args.cpu_of else (0.0, 0.0, 0, 0)
    user, system = counters[0] - counters_before[0], counters[1] - counters_before[1]
    reads, writes = counters[2] - counters_before[2], counters[3] - counters_before[3]
    for peer in peers:
        peer.credits_to = None
    await wait_received(stats, stats.sent, timeout=30)
    for session in sessions:
        await close(session)
    sm = "with SM" if args.sm else "without SM"
    print(f"{measured} messages {sm} in {wall:.2f} s ({measured / wall:.0f}/s)", file=sys.stderr)
    if args.cpu_of:
        cpu = user + system
        print(
            f"server CPU {cpu * 1e6 / measured:.2f} µs/msg ({cpu / wall:.2f} cores; user"
            f" {user * 1e6 / measured:.2f}, system {system * 1e6 / measured:.2f}), reads/msg"
            f" {reads / measured:.3f}, writes/msg {writes / measured:.3f}",
            file=sys.stderr,
        )
    if stats.bounced or stats.stray:
        print(f"warning: {stats.bounced} bounced, {stats.stray} stray", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--window", type=int, default=5, help="messages in flight per direction")
    parser.add_argument("--warmup", type=int, default=5000, help="messages before counting starts")
    parser.add_argument("--messages", type=int, default=20000, help="messages counted")
    parser.add_argument("--sm", action="store_true", help="enable XEP-0198 and answer every <r/>")
    parser.add_argument("--callgrind", type=int, metavar="PID", help="the server under callgrind")
    parser.add_argument(
        "--cpu-of", type=int, metavar="PID", help="print this server's user+system CPU per counted message"
    )
    parser.add_argument("--domain", default="localhost")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
