"""s2s micro-benchmark: two Roost servers in one process, one real s2s link (TCP + TLS on loopback).

``a.test`` and ``b.test`` run on the same event loop (so on one core: the figures are for both servers
together). Sessions are the in-process counting ones (no client sockets); the s2s link is real:
SRV/static resolution, STARTTLS, SASL EXTERNAL (certificates from a throwaway CA) or Server Dialback
(self-signed certificates, nothing validates). Measures:

* link set-up: the first message from a@a.test until it is written to b@b.test (resolve, connect,
  TLS, authenticate — for dialback including b.test's verification connection back to a.test);
* throughput: messages/s from users on a.test to users on b.test over the one link, and the
  latency of the last one after the burst.

    .venv/bin/python -m bench.s2s --messages 20000
    .venv/bin/python -m bench.s2s --auth external
    .venv/bin/python -m bench.s2s --off mam        # without archiving (the link's own cost shows more)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tests.support.testca import TestCA

from bench.inprocess import CountingSession, bind
from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server
from roost.s2s.dns import StaticResolver
from roost.s2s.manager import Federation
from roost.xml.element import Element
from roost.xml.ns import CLIENT


def _config(directory: Path, domain: str, extra: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["{domain}"]
data_dir = "{directory / "data"}"
[[listen]]
kind = "s2s"
address = "127.0.0.1:0"
[storage]
url = "memory://"
[log]
level = "warning"
{extra}
"""
    )
    return path


async def _servers(tmp: Path, auth: str, off: list[str]) -> tuple[Server, Server]:
    # No per-domain rate limit: the link's own throughput is measured.
    disabled = "".join(f"[{name}]\nenabled = false\n" for name in off)
    extras = [disabled + "[s2s]\nrate_limit = 1e9\n", disabled + "[s2s]\nrate_limit = 1e9\n"]
    if auth == "external":
        ca = TestCA(tmp / "ca")
        for i, domain in enumerate(("a.test", "b.test")):
            issued = ca.issue(domain)
            extras[i] = (
                f'[tls]\ncert = "{issued.cert}"\nkey = "{issued.key}"\n'
                f'[s2s]\nca_file = "{ca.ca_file}"\nsecure_auth = true\nrate_limit = 1e9\n' + disabled
            )
    a = create_server(load_config(_config(tmp / "a", "a.test", extras[0])))
    b = create_server(load_config(_config(tmp / "b", "b.test", extras[1])))
    await a.start()
    await b.start()
    resolver = StaticResolver(
        {"a.test": ("127.0.0.1", a.addresses["s2s"][1]), "b.test": ("127.0.0.1", b.addresses["s2s"][1])}
    )
    for server in (a, b):
        federation = server.route_table.remote
        assert isinstance(federation, Federation)
        federation.resolver = resolver
    return a, b


def _message(to: str, n: int) -> Element:
    message = Element("message", CLIENT, {"to": to, "type": "chat", "id": f"m{n}"})
    message.add("body", text=f"message {n} over s2s")
    return message


async def _wait_for(sessions: list[CountingSession], total: int, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while sum(s.stanzas for s in sessions) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sum(s.stanzas for s in sessions)} of {total} delivered")
        await asyncio.sleep(0)


async def run(messages: int, users: int, auth: str, off: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = await _servers(Path(tmp), auth, off)
        try:
            senders = [await bind(a, f"user{i}", "bench", "a.test") for i in range(users)]
            receivers = [await bind(b, f"user{i}", "bench", "b.test") for i in range(users)]
            for s in (*senders, *receivers):
                s.available = True
            t0 = time.perf_counter()
            pending = a.router.process(senders[0], _message("user0@b.test/bench", 0))
            if pending is not None:
                await pending
            await _wait_for(receivers, 1)
            setup = time.perf_counter() - t0
            t0 = time.perf_counter()
            for n in range(messages):
                sender = senders[n % users]
                pending = a.router.process(sender, _message(f"user{n % users}@b.test/bench", n))
                if pending is not None:
                    await pending
                if n % 256 == 255:
                    await asyncio.sleep(0)  # let the link write and the peer read, as a loaded server would
            sent = time.perf_counter() - t0
            await _wait_for(receivers, messages + 1)
            elapsed = time.perf_counter() - t0
            print(f"auth: {auth}; link set-up (first message delivered): {setup * 1000:.1f} ms")
            print(
                f"{messages} messages over one s2s link in {elapsed:.2f} s: {messages / elapsed:,.0f} msg/s "
                f"(both servers on one core); sending took {sent:.2f} s, the last arrived "
                f"{(elapsed - sent) * 1000:.0f} ms after it was sent"
            )
        finally:
            await a.stop()
            await b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--auth", choices=["dialback", "external"], default="dialback")
    parser.add_argument(
        "--off", action="append", default=[], metavar="MODULE", help="disable a module on both (e.g. mam)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.users, args.auth, args.off))


if __name__ == "__main__":
    main()
