"""`roost backup` while the server runs under load, `roost restore` into a fresh data_dir, then log in."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import tarfile
from pathlib import Path

from roost.stream.sasl.scram import HASH_NAMES, derive_credentials
from tests.integration.test_cli_server import ROOST, run_cli
from tests.support.clients import connect
from tests.support.raw import RawClient
from tests.support.server import running_server, write_config


async def test_backup_under_load_and_restore_into_a_fresh_data_dir(tmp_path: Path) -> None:
    source = tmp_path / "source"
    async with running_server(source) as running:
        await running.add_user("alice@localhost", "wonderland")
        await running.add_user("bob@localhost", "builder")
        config = running.server.config.path
        assert config is not None
        # Load: accounts created continuously while the backup runs.
        created: list[str] = []
        stop = asyncio.Event()

        async def create_accounts() -> None:
            creds = [derive_credentials("pw", h, 4096) for h in HASH_NAMES]
            n = 0
            while not stop.is_set():
                await running.server.storage.accounts.create("localhost", f"load{n}", creds)
                created.append(f"load{n}")
                n += 1
                await asyncio.sleep(0)

        writer = asyncio.create_task(create_accounts())
        # Offline messages go through the batched archive writer: acknowledged, maybe not committed yet.
        alice = await RawClient.login(running.c2s_port, "alice", "wonderland", "a")
        for i in range(50):
            alice.send_raw(
                f"<message to='bob@localhost' type='chat' id='m{i}'><body>note {i}</body></message>"
            )
        alice.send_raw("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        while (await alice.element(10)).attrs.get("id") != "p1":
            pass
        await asyncio.sleep(0.2)
        before_backup = list(created)
        archive = tmp_path / "backup.tar.gz"
        output = await asyncio.to_thread(
            run_cli, "--config", str(config), "backup", str(archive), cwd=tmp_path
        )
        stop.set()
        await writer
        assert "backup written to" in output and "flushed its queued writes" in output
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        with tarfile.open(archive) as tar:
            names = tar.getnames()
        assert "roost.db" in names and "data/server.secret" in names and "data/tls/roost.key" in names
        assert len(before_backup) > 0

    # A fresh install elsewhere: restore, start, log in.
    fresh = tmp_path / "fresh"
    fresh_config = write_config(fresh)
    output = await asyncio.to_thread(
        run_cli, "--config", str(fresh_config), "restore", str(archive), cwd=tmp_path
    )
    assert "restored" in output
    data = fresh / "data"
    assert stat.S_IMODE((data / "roost.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "server.secret").stat().st_mode) == 0o600
    again = subprocess.run(
        [*ROOST, "--config", str(fresh_config), "restore", str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "--force" in again.stderr
    async with running_server(fresh) as restored:
        for name in before_backup:
            assert await restored.server.storage.accounts.exists("localhost", name), f"{name} was lost"
        bob = await connect("bob@localhost/b", "builder", restored.c2s_port)
        bodies = set()
        for _ in range(50):
            msg = await asyncio.wait_for(bob.received.get(), 10)
            bodies.add(str(msg["body"]))
        assert bodies == {f"note {i}" for i in range(50)}
        bob.disconnect()
        alice = await RawClient.login(restored.c2s_port, "alice", "wonderland", "back")
        alice.close()


async def test_restore_refuses_while_a_server_runs_and_bad_archives(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not a tarball")

    def restore() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ROOST, "--config", str(config), "restore", str(bogus)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = await asyncio.to_thread(restore)
    assert result.returncode == 2 and "not a roost backup archive" in result.stderr
    async with running_server(tmp_path):
        result = await asyncio.to_thread(restore)
    assert result.returncode == 1 and "stop it before restoring" in result.stderr
