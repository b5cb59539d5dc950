"""Reload: domains added and removed live, certificates swapped live, bad configs refused, SIGHUP survived."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from roost.core import control
from roost.core.reload import reload
from roost.transports import tls
from roost.xml.ns import REGISTER_FEATURE
from tests.integration.test_cli_server import ROOST, free_port, run_cli, wait_for_port
from tests.support.raw import RawClient
from tests.support.server import running_server, write_config


async def login(port: int, domain: str, username: str, password: str, resource: str) -> RawClient:
    client = await RawClient.connect(port, domain)
    await client.open()
    await client.starttls()
    result = await client.auth_scram(username, password)
    assert result.name == "success", result
    await client.open()
    reply = await client.bind(resource)
    assert reply.attrs.get("type") == "result", reply
    return client


async def pong(client: RawClient, iq_id: str, to: str = "localhost") -> bool:
    client.send_raw(f"<iq type='get' id='{iq_id}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>")
    while True:
        reply = await client.element(10)
        if reply.name == "iq" and reply.attrs.get("id") == iq_id:
            return reply.attrs.get("type") == "result"


def write_pair(directory: Path, name: str, domains: list[str]) -> tuple[Path, Path]:
    cert_pem, key_pem = tls._self_signed(domains)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    key.chmod(0o600)
    return cert, key


async def presented_certificate(port: int) -> bytes:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context())
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    assert der is not None
    return bytes(der)


async def test_domain_added_and_removed_live(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        await running.add_user("alice@localhost", "wonderland")
        alice = await login(running.c2s_port, "localhost", "alice", "wonderland", "a")
        path = running.server.config.path
        assert path is not None
        path.write_text(
            path.read_text().replace('domains = ["localhost"]', 'domains = ["localhost", "example.test"]')
        )
        report = await reload(running.server)
        assert report.ok and "domain example.test added" in report.changed
        assert "example.test" in running.server.hosts
        await running.add_user("bob@example.test", "builder")
        bob = await login(running.c2s_port, "example.test", "bob", "builder", "b")
        assert await pong(bob, "p1", "example.test")
        assert await pong(alice, "p2")  # the old session is untouched

        path.write_text(path.read_text().replace('"localhost", "example.test"', '"localhost"'))
        report = await reload(running.server)
        assert report.ok and "domain example.test removed (1 sessions ended)" in report.changed
        assert await bob.stream_error(timeout=10) == "host-gone"
        assert "example.test" not in running.server.hosts
        assert await pong(alice, "p3")


async def test_certificate_swapped_live_and_seen_by_a_new_client(tmp_path: Path) -> None:
    first = write_pair(tmp_path, "first", ["localhost"])
    second = write_pair(tmp_path, "second", ["localhost"])
    extra = f'[tls]\ncert = "{first[0]}"\nkey = "{first[1]}"\n'
    async with running_server(tmp_path, extra) as running:
        assert await presented_certificate(running.c2s_tls_port) == tls.certificate_der(first[0])
        path = running.server.config.path
        assert path is not None
        path.write_text(path.read_text().replace("first.", "second."))
        report = await reload(running.server)
        assert report.ok, report.error
        assert await presented_certificate(running.c2s_tls_port) == tls.certificate_der(second[0])


async def test_bad_config_changes_nothing(tmp_path: Path) -> None:
    async with running_server(tmp_path, "[muc]\nname = 'Rooms'\n") as running:
        path = running.server.config.path
        assert path is not None
        before = running.server.config
        good = path.read_text()
        path.write_text(good + "\n[c2s]\nmax_stanza_bytes = 'big'\n")
        report = await reload(running.server)
        assert not report.ok and "max_stanza_bytes" in report.error
        assert running.server.config is before
        # A certificate that does not cover the domains is refused as well.
        wrong = write_pair(tmp_path, "wrong", ["elsewhere.test"])
        path.write_text(good + f'[tls]\ncert = "{wrong[0]}"\nkey = "{wrong[1]}"\n')
        report = await reload(running.server)
        assert not report.ok and "does not cover" in report.error
        assert running.server.config is before
        # What cannot change live is reported, the rest applies.
        path.write_text(
            good.replace('c2s = "127.0.0.1:0"', 'c2s = "127.0.0.1:1"') + "\n[version]\nshow_os = true\n"
        )
        report = await reload(running.server)
        assert report.ok
        assert any("[listen]" in n for n in report.needs_restart)
        assert "module version reloaded on localhost with new options" in report.changed
        assert running.server.config.listen == before.listen
        path.write_text(good.replace("name = 'Rooms'", "name = 'Salons'"))
        report = await reload(running.server)
        assert report.ok and "[muc] options" in report.needs_restart


async def test_sighup_reloads_and_roost_reload_reports(tmp_path: Path) -> None:
    c2s = free_port()
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('c2s = "127.0.0.1:0"', f'c2s = "127.0.0.1:{c2s}"'))
    log_file = tmp_path / "roost.log"
    proc = subprocess.Popen(
        [*ROOST, "run", "--config", str(path), "--set", f'log.file="{log_file}"'],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port(c2s, proc)
        run_cli(
            "--config", str(path), "user", "add", "alice@localhost", "--password", "wonderland", cwd=tmp_path
        )
        alice = await RawClient.login(c2s, "alice", "wonderland", "a")
        # logrotate: the file is moved away, then SIGHUP makes the server open a new one.
        log_file.rename(tmp_path / "roost.log.1")
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if log_file.exists() and "reload finished" in log_file.read_text():
                break
            await asyncio.sleep(0.1)
        assert proc.poll() is None  # SIGHUP never kills
        assert "reload finished" in log_file.read_text()
        assert await pong(alice, "p1")
        output = await asyncio.to_thread(run_cli, "--config", str(path), "reload", cwd=tmp_path)
        assert "nothing changed" in output
        reply = await control.request(control.socket_path(tmp_path / "data"), {"op": "reload"})
        assert reply is not None and reply["ok"]
        path.write_text(path.read_text() + "\n[c2s]\nmax_stanza_bytes = 'big'\n")
        refused = subprocess.run(
            [*ROOST, "--config", str(path).replace("roost.toml", "roost.toml"), "reload"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # The CLI itself validates the file first and refuses to ask for a reload of a broken one.
        assert refused.returncode != 0 and "max_stanza_bytes" in refused.stdout + refused.stderr
        assert await pong(alice, "p2")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.to_thread(proc.wait, 20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_module_enabled_live_reaches_new_connections(tmp_path: Path) -> None:
    async with running_server(tmp_path) as running:
        path = running.server.config.path
        assert path is not None
        before = await RawClient.connect(running.c2s_port)
        await before.open()
        await before.starttls()
        assert before.features is not None and before.features.find("register", REGISTER_FEATURE) is None
        path.write_text(path.read_text() + "\n[registration]\nenabled = true\n")
        report = await reload(running.server)
        assert "module registration loaded on localhost" in report.changed
        after = await RawClient.connect(running.c2s_port)
        await after.open()
        await after.starttls()
        assert after.features is not None and after.features.find("register", REGISTER_FEATURE) is not None
        path.write_text(path.read_text().replace("enabled = true", "enabled = false"))
        report = await reload(running.server)
        assert "module registration unloaded from localhost" in report.changed
        before.close()
        after.close()
