"""Every admin command through the `roost` CLI and the control socket, against a running server."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli_server import ROOST
from tests.support.clients import connect
from tests.support.raw import RawClient
from tests.support.server import running_server


def cli(config: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*ROOST, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


async def roost(config: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, config, *args, ok=ok)


async def refused_at_login(port: int, user: str, password: str) -> str:
    """A locked account's login: SASL refuses with <account-disabled/> (RFC 6120 §6.5.1); the reason."""
    client = await RawClient.connect(port)
    try:
        await client.open()
        await client.starttls()
        failure = await client.auth_scram(user, password)
        condition = failure.first()
        assert failure.name == "failure" and condition is not None and condition.name == "account-disabled"
        return failure.find_text("text")
    finally:
        client.close()


async def test_admin_commands_through_the_cli(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_server(tmp_path) as running:
        config = running.server.config.path
        assert config is not None
        await roost(config, "user", "add", "alice@localhost", "--password", "wonderland")
        await roost(config, "user", "add", "bob@localhost", "--password", "builder")
        assert "roost CLI: user alice@localhost created" in caplog.text  # the server's log says so
        alice = await connect("alice@localhost/phone", "wonderland", running.c2s_port)
        bob = await RawClient.login(running.c2s_port, "bob", "builder", "desk")

        status = (await roost(config, "status")).stdout
        assert "Sessions: 2" in status and "tcp: 2" in status and "Memory (bytes):" in status

        sessions = (await roost(config, "sessions", "alice@localhost")).stdout
        assert "alice@localhost/phone via tcp from 127.0.0.1 since" in sessions
        assert "bob@localhost" not in sessions

        await roost(config, "announce", "Maintenance tonight")
        msg = await asyncio.wait_for(alice.received.get(), 10)
        assert msg["body"] == "Maintenance tonight"

        await roost(config, "motd", "set", "Be nice")
        msg = await asyncio.wait_for(alice.received.get(), 10)
        assert msg["body"] == "Be nice"
        assert "localhost: Be nice" in (await roost(config, "motd")).stdout
        await roost(config, "motd", "delete")
        assert "localhost: (none)" in (await roost(config, "motd")).stdout

        out = (await roost(config, "kick", "bob@localhost/desk", "--reason", "testing")).stdout
        assert "1 session ended" in out
        assert await bob.stream_error(timeout=10) == "policy-violation"
        assert "session closed (kicked)" in caplog.text

        out = (await roost(config, "user", "lock", "alice@localhost", "--reason", "abuse report")).stdout
        assert "locked alice@localhost (through the running server" in out
        await asyncio.wait_for(alice.disconnected_event.wait(), 10)
        assert await refused_at_login(running.c2s_port, "alice", "wonderland") == "abuse report"
        await roost(config, "user", "unlock", "alice@localhost")
        back = await RawClient.login(running.c2s_port, "alice", "wonderland", "back")
        back.close()

        assert "0 rooms" in (await roost(config, "room", "list")).stdout
        missing = await roost(config, "room", "destroy", "nope@conference.localhost", ok=False)
        assert missing.returncode == 1 and "no such room" in missing.stderr

        bad = await roost(config, "kick", "someone@elsewhere.example", ok=False)
        assert bad.returncode == 1 and "not a domain of this server" in bad.stderr

        await roost(config, "user", "del", "bob@localhost")
        assert "removing account bob@localhost" in caplog.text


async def test_lock_without_a_running_server_and_admin_commands_say_none_runs(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        config = running.server.config.path
        assert config is not None
        await running.add_user("carol@localhost", "pw")
    out = (await roost(config, "user", "lock", "carol@localhost")).stdout
    assert out.startswith("locked carol@localhost (database sqlite:")
    status = await roost(config, "status", ok=False)
    assert status.returncode == 1 and "no Roost server is running" in status.stderr
    reload = await roost(config, "reload", ok=False)
    assert reload.returncode == 1 and "no Roost server is running" in reload.stderr
    async with running_server(tmp_path) as running:
        assert "locked" in await refused_at_login(running.c2s_port, "carol", "pw")
