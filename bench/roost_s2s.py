"""Run Roost as ``roost run`` would, with the s2s benchmark's peer domains pointed at loopback ports.

``python -m bench.roost_s2s --config roost.toml --peers b.localhost=40123``

Roost has no config option mapping a domain to an address (operators publish DNS records), and
``*.localhost`` names do not resolve here without /etc/hosts changes. So the resolver stays Roost's
own — real SRV queries in DNS first (RFC 6120 §3.2.1; they answer NXDOMAIN for these names) — and
only its fallback, "the domain itself on 5269" (§3.2.2), becomes 127.0.0.1 on the peer's port.
ejabberd in the same benchmark does the same (SRV in DNS, then its hosts table), Prosody skips DNS
for the mapped names (the interop tests' module).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server, run_until_signalled
from roost.s2s.dns import DEFAULT_PORT, DnsResolver, Target
from roost.s2s.manager import Federation
from roost.util.logging import setup_logging


class LoopbackFallbackResolver(DnsResolver):
    """SRV lookups as usual; a domain without SRV records goes to its mapped loopback port."""

    def __init__(self, ports: dict[str, int]) -> None:
        super().__init__()
        self.ports = ports

    async def targets(self, domain: str) -> list[Target]:
        found = await super().targets(domain)
        port = self.ports.get(domain)
        if port is not None and found == [Target(domain, DEFAULT_PORT)]:
            return [Target("127.0.0.1", port)]
        return found


def parse_peers(spec: str) -> dict[str, int]:
    """``a.example=5269,b.example=5270`` -> {domain: port}; a clear error for anything else."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        domain, sep, port = part.partition("=")
        if not sep or not domain or not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit(f"--peers: expected DOMAIN=PORT, got {part!r}")
        out[domain] = int(port)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roost_s2s", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--peers", required=True, help="DOMAIN=PORT,... (s2s ports on 127.0.0.1)")
    args = parser.parse_args(argv)
    ports = parse_peers(args.peers)
    config = load_config(args.config)
    setup_logging(config.log.level, config.log.file)
    server = create_server(config)

    def point_at_peers(server: Server = server) -> None:
        federation = server.route_table.remote
        if not isinstance(federation, Federation):
            raise SystemExit("the config has no s2s listener")
        federation.resolver = LoopbackFallbackResolver(ports)

    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    return runner(run_until_signalled(server, ready=point_at_peers))


if __name__ == "__main__":
    sys.exit(main())
