"""The operator's contract: `roost run` as a real process, `roost user` beside it, SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from roost.core import control
from tests.support.clients import connect
from tests.support.raw import RawClient
from tests.support.server import running_server

ROOST = [sys.executable, "-m", "roost.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"roost exited early with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("roost did not start listening")


@pytest.fixture
def config(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    c2s, c2s_tls = free_port(), free_port()
    path = tmp_path / "roost.toml"
    path.write_text(
        f"""
[server]
domains = ["localhost"]
data_dir = "data"

[listen]
c2s = "127.0.0.1:{c2s}"
c2s_tls = "127.0.0.1:{c2s_tls}"
http = ""
"""
    )
    yield path, c2s, c2s_tls


def run_cli(*args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [*ROOST, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_run_user_add_while_running_and_sigterm(config: tuple[Path, int, int], tmp_path: Path) -> None:
    path, c2s, _ = config
    proc = subprocess.Popen(
        [*ROOST, "run", "--config", str(path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await wait_for_port(c2s, proc)
        # `roost user add` works while the server runs (SQLite WAL), config via ROOST_CONFIG
        run_cli(
            "user",
            "add",
            "alice@localhost",
            "--password-stdin",
            cwd=tmp_path,
            stdin="wonderland\n",
            env={"ROOST_CONFIG": str(path)},
        )
        assert "alice@localhost" in run_cli("--config", str(path), "user", "list", cwd=tmp_path)
        # The running server made it (account service, USER_CREATED), and a new password works at once.
        run_cli(
            "--config", str(path), "user", "passwd", "alice@localhost", "--password-stdin",
            cwd=tmp_path, stdin="wonderland\n",
        )  # fmt: skip
        client = await connect("alice@localhost/cli", "wonderland", c2s)
        raw = await RawClient.login(c2s, "alice", "wonderland", "raw")
        proc.send_signal(signal.SIGTERM)
        assert await raw.stream_error(timeout=10) == "system-shutdown"
        assert await raw.closed()
        await asyncio.wait_for(client.disconnected_event.wait(), 10)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "wonderland" not in output  # never a password in a log
        assert "account alice@localhost created" in output  # by the server's account service
        assert "password of alice@localhost changed" in output
        assert "shutting down" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_embedded_default_needs_no_config(tmp_path: Path) -> None:
    """No config file: localhost, ./roost-data; ports from --set so that no fixed port is needed."""
    c2s, c2s_tls, http = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "ROOST_CONFIG"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")  # this test's own default-server link
    ports = ["--set", f"listen.c2s=localhost:{c2s}", "--set", f"listen.c2s_tls=localhost:{c2s_tls}"]
    ports += ["--set", f"listen.http=localhost:{http}"]  # the default is localhost:5280
    proc = subprocess.Popen(
        [*ROOST, "run", *ports], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await wait_for_port(c2s, proc)
        assert (tmp_path / "roost-data" / "roost.db").exists()
        assert (tmp_path / "roost-data" / "tls" / "roost.crt").exists()
        # Owner-only: the database holds SCRAM keys; the directory holds the TLS key and the socket.
        assert stat.S_IMODE((tmp_path / "roost-data").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "roost-data" / "roost.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "roost-data" / "server.secret").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "roost-data" / "tls" / "roost.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "roost-data" / "roost.sock").stat().st_mode) == 0o600
        subprocess.run(
            [*ROOST, "user", "add", "bob@localhost", "--password", "builder"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        # From another directory, without a config: the CLI finds the running server's data through the
        # link to its control socket, instead of creating ./roost-data there.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        listed = subprocess.run(
            [*ROOST, "user", "list"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines() == ["bob@localhost"]
        assert f"using the data of the Roost server running on {tmp_path / 'roost-data'}" in listed.stderr
        assert not (elsewhere / "roost-data").exists()
        client = await connect("bob@localhost/default", "builder", c2s)
        tls_client = await connect("bob@localhost/tls", "builder", c2s_tls, direct_tls=True)
        client.disconnect()
        tls_client.disconnect()
        # The web chat page on the default HTTP listener, set up for this server's own WebSocket.
        async with aiohttp.ClientSession() as web, web.get(f"http://localhost:{http}/chat") as page:
            assert page.status == 200, await page.text()
            text = await page.text()
            assert f'"websocket_url": "ws://localhost:{http}/xmpp-websocket"' in text
            assert '"locked_domain": "localhost"' in text
        if ipv6_loopback():  # 'localhost' is ::1 too
            _, writer = await asyncio.open_connection("::1", c2s)
            writer.close()
        # Only loopback: no other address of this machine answers.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the route picks an address
                own = probe.getsockname()[0]
            except OSError:
                own = "127.0.0.1"
        if not own.startswith("127."):
            assert not port_busy_on(own, c2s)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not (tmp_path / "run" / "roost" / "default.sock").exists()  # the link goes with the server


def port_busy_on(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def test_check_reports_bad_config_with_key_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text("[c2s]\nrequre_encryption = true\n")
    result = subprocess.run(
        [*ROOST, "--config", str(path), "check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "requre_encryption" in result.stderr + result.stdout
    assert "require_encryption" in result.stderr + result.stdout


def test_run_refuses_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_text("[c2s]\nmax_stanza_bytes = 'big'\n")
    result = subprocess.run(
        [*ROOST, "run", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "max_stanza_bytes" in result.stderr


async def pong(client: RawClient, iq_id: str) -> bool:
    """The server still answers this client's ping."""
    client.send_raw(f"<iq type='get' id='{iq_id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        reply = await client.element()
        if reply.name == "iq" and reply.attrs.get("id") == iq_id:
            return reply.attrs.get("type") == "result"


async def test_user_del_while_running_ends_the_users_sessions(
    config: tuple[Path, int, int], tmp_path: Path
) -> None:
    """`roost user del` asks the running server, which closes the user's streams (<not-authorized/>)."""
    path, c2s, _ = config
    run_cli("--config", str(path), "user", "add", "alice@localhost", "--password", "wonderland", cwd=tmp_path)
    run_cli("--config", str(path), "user", "add", "bob@localhost", "--password", "builder", cwd=tmp_path)
    proc = subprocess.Popen(
        [*ROOST, "run", "--config", str(path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await wait_for_port(c2s, proc)
        alice = await RawClient.login(c2s, "alice", "wonderland", "raw")
        bob = await RawClient.login(c2s, "bob", "builder", "raw")
        output = await asyncio.to_thread(
            run_cli, "--config", str(path), "user", "del", "alice@localhost", cwd=tmp_path
        )
        assert "deleted alice@localhost" in output and "ended their sessions" in output
        assert await alice.stream_error(timeout=10) == "not-authorized"
        assert await alice.closed()
        # Another user's session is untouched, and the account is gone for good.
        assert await pong(bob, "p1")
        assert "alice@localhost" not in run_cli("--config", str(path), "user", "list", cwd=tmp_path)
        again = subprocess.run(
            [*ROOST, "--config", str(path), "user", "del", "alice@localhost"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode != 0 and "no such user: alice@localhost" in again.stderr
        # A second server on the same data directory refuses to start, and says why.
        second = subprocess.run(
            [
                *ROOST,
                "run",
                "--config",
                str(path),
                "--set",
                "listen.c2s=127.0.0.1:0",
                "--set",
                "listen.c2s_tls=",
                "--set",
                "listen.http=",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0 and "another Roost server is running" in second.stdout + second.stderr
        assert await pong(bob, "p2")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.to_thread(proc.wait, 20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    # The socket went away with the server; without a server the CLI works on storage directly.
    assert not (tmp_path / "data" / "roost.sock").exists()
    assert "deleted bob@localhost" in run_cli(
        "--config", str(path), "user", "del", "bob@localhost", cwd=tmp_path
    )


async def test_a_socket_left_by_a_crashed_server_does_not_block_the_next(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(data / "roost.sock"))  # bound, never listening: like after a crash
    leftover.close()
    async with running_server(tmp_path) as running:
        assert (data / "roost.sock").exists()
        reply = await control.request(data / "roost.sock", {"op": "ping"})
        assert reply is not None and reply["ok"] is True and "localhost" in reply["domains"]
        assert (await control.request(data / "roost.sock", {"op": "nope"}) or {}).get("ok") is False
        assert running.server.control.path == data / "roost.sock"
    assert not (data / "roost.sock").exists()


async def test_without_a_control_socket_the_server_still_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    (data / "roost.sock").mkdir(parents=True)  # something that is not a socket, and cannot be removed
    async with running_server(tmp_path) as running:
        assert running.server.control.path is None
        await running.add_user("alice@localhost", "wonderland")
        client = await RawClient.login(running.c2s_port, "alice", "wonderland", "raw")
        assert await pong(client, "p1")
    assert "control socket not opened" in caplog.text
