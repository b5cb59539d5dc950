"""Run Roost as ``roost run`` would, with its DNS queries sent to the s2s benchmark's nameserver.

``python -m bench.roost_s2s --config roost.toml --nameserver 127.0.0.1:40123``

Roost looks up SRV records with dnspython, whose resolver reads /etc/resolv.conf; the benchmark's
domains (``a.localhost``, ``b.localhost``) exist only in the run's own DNS server
(bench/dnsserver.py), so this launcher points dnspython's default resolver at it and otherwise runs
the server exactly like ``roost run`` (uvloop when installed, SIGTERM stops it). Everything else —
SRV lookups, the system resolver for the SRV target, connecting, TLS, authentication — is Roost's
own code path, unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dns.asyncresolver

from roost.app import serve
from roost.config.loader import load_config


def parse_nameserver(spec: str) -> tuple[str, int]:
    """``127.0.0.1:5353`` -> ("127.0.0.1", 5353); a clear error for anything else."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--nameserver: expected ADDRESS:PORT, got {spec!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.roost_s2s", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--nameserver", required=True, help="ADDRESS:PORT of the DNS server to ask")
    args = parser.parse_args(argv)
    host, port = parse_nameserver(args.nameserver)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    dns.asyncresolver.default_resolver = resolver  # type: ignore[assignment]  # declared None-typed
    return serve(load_config(args.config))


if __name__ == "__main__":
    sys.exit(main())
