"""Start and stop an in-process server for tests (real sockets, real TLS, real SQL)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server
from roost.stream.sasl.scram import HASH_NAMES, derive_credentials

log = logging.getLogger("tests")


@dataclass
class RunningServer:
    server: Server
    data_dir: Path

    @property
    def c2s_port(self) -> int:
        return self.server.addresses["c2s"][1]

    @property
    def c2s_tls_port(self) -> int:
        return self.server.addresses["c2s_tls"][1]

    async def add_user(self, jid: str, password: str) -> None:
        local, _, domain = jid.partition("@")
        creds = [derive_credentials(password, h, 4096) for h in HASH_NAMES]
        await self.server.storage.accounts.create(domain, local, creds)

    async def stop(self) -> None:
        await self.server.stop()


def write_config(tmp_path: Path, extra: str = "", *, storage: str | None = None) -> Path:
    """A roost.toml for tests: localhost, ephemeral ports, data in tmp_path."""
    data_dir = tmp_path / "data"
    url = storage or f"sqlite:///{data_dir / 'roost.db'}"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "roost.toml"
    # No freezing of the test process's objects unless a test asks (tests/integration/test_gc_policy.py).
    gc = "" if "[gc]" in extra else "[gc]\ntuning = false\n"
    path.write_text(
        f"""
[server]
domains = ["localhost"]
data_dir = "{data_dir}"

[listen]
c2s = "127.0.0.1:0"
c2s_tls = "127.0.0.1:0"
http = ""

[storage]
url = "{url}"

{gc}
{extra}
"""
    )
    return path


async def start_server(tmp_path: Path, extra: str = "", **kwargs: Any) -> RunningServer:
    config = load_config(write_config(tmp_path, extra, **kwargs))
    server = create_server(config)
    await server.start()
    return RunningServer(server, config.server.data_dir)


@asynccontextmanager
async def running_server(tmp_path: Path, extra: str = "", **kwargs: Any) -> AsyncIterator[RunningServer]:
    """:func:`start_server`, stopped again on the way out."""
    running = await start_server(tmp_path, extra, **kwargs)
    try:
        yield running
    finally:
        await running.stop()
