"""HTTP upload benchmark (XEP-0363): N clients each upload a file of S MB at once, then download it.

    .venv/bin/python -m bench.upload --clients 50 --size-mb 10            # Roost and Prosody
    .venv/bin/python -m bench.upload --clients 3 --size-mb 0.1 --servers roost   # smoke test

For each server (Roost, and Prosody 0.12 with mod_http_file_share, from scripts/install-peers): start
it with N accounts and a plain-HTTP listener, log N slixmpp clients in, have each ask for a slot
(all at once), then PUT all files concurrently with aiohttp and GET them back. Reports aggregate
upload and download throughput (MB/s over the whole batch, first request to last response), the
server's resident memory (VmRSS of its process, sampled every 20 ms) before the uploads and at its
peak during each phase, and the server's CPU seconds per phase; checks every downloaded file byte for
byte. Writes the figures, host and versions to bench/results/<time>-upload.json (--out elsewhere).

Memory is bounded when the upload peak does not grow with the file size: run it again with
--size-mb 20 and compare (a server that holds whole files grows by clients × size).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import slixmpp

from .certs import make_self_signed
from .cli import RESULTS
from .report import host_info, write_json
from .targets import DOMAIN, ProsodyTarget, Provisioning, RoostTarget, Target, _lua_str, free_port
from .xmppload.client import Account

UPLOAD = f"upload.{DOMAIN}"


class RoostUpload(RoostTarget):
    def __init__(self, *args: Any, max_bytes: int) -> None:
        super().__init__(*args)
        self.http_port = free_port()
        self.max_bytes = max_bytes

    def listen_block(self, websocket: bool) -> str:
        return (
            f'[[listen]]\nkind = "c2s"\naddress = "127.0.0.1:{self.port}"\n\n'
            f'[[listen]]\nkind = "http"\naddress = "127.0.0.1:{self.http_port}"\n\n'
            f'[upload]\nbase_url = "http://127.0.0.1:{self.http_port}"\nmax_file_size = {self.max_bytes}\n'
            "quota_bytes = 0\ndaily_quota_bytes = 0\nslots_per_minute = 0\nuploads_per_minute_per_ip = 0\n"
            "max_concurrent_per_ip = 1000\nmax_concurrent = 1000\nmin_free_disk_mb = 0\n"
        )


class ProsodyUpload(ProsodyTarget):
    def __init__(self, *args: Any, max_bytes: int) -> None:
        super().__init__(*args)
        self.http_port = free_port()
        self.max_bytes = max_bytes

    def write_config(self, websocket: bool = False) -> None:
        super().write_config(websocket)
        text = self.config.read_text().replace("http_ports = {}", f"http_ports = {{ {self.http_port} }}")
        text = text.replace(
            "http_ports",
            f'http_interfaces = {{ "127.0.0.1" }}\nhttp_default_host = "{UPLOAD}"\nhttp_ports',
            1,
        )
        text = text.replace(
            "\nVirtualHost",
            f"\nhttp_external_url = {_lua_str(f'http://127.0.0.1:{self.http_port}/')}\nVirtualHost",
            1,
        )
        text += (
            f'\nComponent "{UPLOAD}" "http_file_share"\n'
            f"  http_file_share_size_limit = {self.max_bytes}\n"
            "  http_file_share_daily_quota = 1e12\n  http_file_share_global_quota = 1e12\n"
        )
        self.config.write_text(text)


class Client(slixmpp.ClientXMPP):  # type: ignore[misc]
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.started = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.register_plugin("xep_0363")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def run_one(target: Target, clients: int, data: bytes) -> dict[str, float]:
    accounts = [Account(f"u{i}", f"pw{i}") for i in range(clients)]
    await target.start(Provisioning(accounts=accounts))
    xmpp: list[Client] = []
    try:
        for acc in accounts:
            c = Client(f"{acc.user}@{DOMAIN}", acc.password)
            c.connect("127.0.0.1", target.port)
            xmpp.append(c)
        await asyncio.wait_for(asyncio.gather(*(c.started.wait() for c in xmpp)), 120)
        kind = "application/octet-stream"
        service = slixmpp.JID(UPLOAD)
        slots = await asyncio.gather(
            *(
                c.plugin["xep_0363"].request_slot(service, f"f{i}.bin", len(data), kind)
                for i, c in enumerate(xmpp)
            )
        )
        puts = [
            (
                s["http_upload_slot"]["put"]["url"],
                {h["name"]: h["value"] for h in s["http_upload_slot"]["put"]["headers"]},
            )
            for s in slots
        ]
        gets = [s["http_upload_slot"]["get"]["url"] for s in slots]
        base_rss = rss_kb(target.pid)
        peak = base_rss
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kb(target.pid))
                await asyncio.sleep(0.02)

        cpu0 = cpu_seconds(target.pid)

        sampler = asyncio.create_task(sample())
        limits = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=limits, timeout=aiohttp.ClientTimeout(total=600)) as http:

            async def put(url: str, extra: dict[str, str]) -> None:
                headers = {"Content-Type": "application/octet-stream", **extra}
                async with http.put(url, data=data, headers=headers) as r:
                    if r.status not in (200, 201):
                        raise RuntimeError(f"PUT {r.status}: {await r.text()}")

            async def get(url: str) -> None:
                async with http.get(url) as r:
                    if r.status != 200 or await r.read() != data:
                        raise RuntimeError(f"GET {url}: {r.status} or wrong content")

            t0 = time.perf_counter()
            await asyncio.gather(*(put(u, h) for u, h in puts))
            t_up = time.perf_counter() - t0
            upload_peak, cpu1 = peak, cpu_seconds(target.pid)
            peak = rss_kb(target.pid)
            t0 = time.perf_counter()
            await asyncio.gather(*(get(u) for u in gets))
            t_down = time.perf_counter() - t0
        stop.set()
        await sampler
        cpu2 = cpu_seconds(target.pid)
        total_mb = clients * len(data) / 1e6
        return {
            "upload_MBps": total_mb / t_up,
            "download_MBps": total_mb / t_down,
            "rss_before_MB": base_rss / 1024,
            "rss_peak_upload_MB": upload_peak / 1024,
            "rss_peak_download_MB": peak / 1024,
            "server_cpu_upload_s": cpu1 - cpu0,
            "server_cpu_download_s": cpu2 - cpu1,
        }
    finally:
        for c in xmpp:
            c.disconnect()
        await target.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size-mb", type=float, default=10)
    parser.add_argument("--servers", default="roost,prosody")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/<time>-upload.json)")
    args = parser.parse_args()
    started = datetime.datetime.now()
    data = os.urandom(int(args.size_mb * 1e6))
    results: dict[str, dict[str, float]] = {}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="roost-bench-upload-") as tmp:
        certs = make_self_signed(Path(tmp) / "certs", DOMAIN)
        for name in args.servers.split(","):
            cls = {"roost": RoostUpload, "prosody": ProsodyUpload}[name]
            target = cls(Path(tmp) / name, certs, 0, print, max_bytes=len(data) + 1)
            target.dir.mkdir(parents=True, exist_ok=True)
            versions[name] = target.version()
            results[name] = await run_one(target, args.clients, data)
            print(name, {k: round(v, 1) for k, v in results[name].items()}, flush=True)
    ratios: dict[str, dict[str, float]] = {}
    if "roost" in results and "prosody" in results:
        for key in ("upload_MBps", "download_MBps", "rss_peak_upload_MB"):
            ratios.setdefault("roost/prosody", {})[key] = results["roost"][key] / results["prosody"][key]
            print(f"{key}: roost/prosody = {ratios['roost/prosody'][key]:.2f}")
    out = args.out or RESULTS / f"{started:%Y%m%d-%H%M%S}-upload.json"
    document = {
        "scenario": "upload",
        "started": started.isoformat(timespec="seconds"),
        "args": {"clients": args.clients, "size_mb": args.size_mb, "servers": args.servers},
        "host": host_info("asyncio"),
        "versions": versions,
        "servers": {name: {"metrics": figures} for name, figures in results.items()},
        "ratios": ratios,
    }
    write_json(out, document)
    print(f"results: {out}")


if __name__ == "__main__":
    asyncio.run(main())
