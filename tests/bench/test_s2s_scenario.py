"""The s2s benchmark: its DNS server answers what federating servers ask, and the scenario runs
end to end against two real Roost processes (run as ``roost run`` runs them, under uvloop), over a
link authenticated once with SASL EXTERNAL and once with dialback. No timing is asserted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.resolver
import pytest

from bench import dnsserver

ROOT = Path(__file__).resolve().parents[2]


async def test_dns_server_answers_srv_for_each_domain_and_nxdomain_otherwise() -> None:
    transport, protocol, port = await dnsserver.serve({"a.localhost": 5001, "b.localhost": 5002})
    try:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        answer = await resolver.resolve("_xmpp-server._tcp.b.localhost", "SRV", lifetime=5)
        assert [(r.port, r.target.to_text()) for r in answer] == [(5002, "localhost.")]
        a = await resolver.resolve("localhost", "A", lifetime=5)
        assert [r.to_text() for r in a] == ["127.0.0.1"]
        # No direct-TLS service (XEP-0368), and nothing for other domains: RFC 6120 §3.2 fallbacks.
        for name in ("_xmpps-server._tcp.b.localhost", "_xmpp-server._tcp.c.localhost"):
            with pytest.raises(dns.resolver.NXDOMAIN):
                await resolver.resolve(name, "SRV", lifetime=5)
        assert protocol.queries == 4
    finally:
        transport.close()


@pytest.mark.interop
@pytest.mark.timeout(300)
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "roost").exists(), reason="needs roost in .venv")
def test_s2s_scenario_roost_to_roost_with_external_and_dialback(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    pin = [] if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") else ["--no-pin"]
    cmd = [
        sys.executable, "-m", "bench", "s2s", "--servers", "roost", "--pairs", "4", "--rates", "100",
        "--duration", "0.5", "--warmup", "0.2", "--out", str(out), *pin,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["failures"] == {}
    roost: dict[str, Any] = doc["servers"]["roost"]
    metrics = roost["metrics"]
    # A first message over a fresh link arrived with each authentication method.
    assert metrics["setup_external_ms"] > 0 and metrics["setup_dialback_ms"] > 0
    assert metrics["rate100.lost"] == 0
    assert metrics["bounced"] == 0 and metrics["stray"] == 0
    assert metrics["saturation.msgs_per_s"] > 0
    # CPU per message is both servers' CPU: A's and B's shares are each measured.
    assert len(roost["details"]["saturation"]["server_cpu_s_each"]) == 2
