"""biboumi, the XMPP–IRC gateway from Debian, as a real external component (XEP-0114) of Roost.

biboumi connects to Roost's component listener with its secret; a user discovers it through the
server's disco items and the gateway's own disco#info, then joins an IRC channel on a private ngircd
through it and talks with a raw IRC client in that channel, both ways. ``scripts/install-peers``
installs both packages; the test skips, saying so, only when one is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.app import create_server
from roost.config.loader import load_config
from roost.core.server import Server
from tests.integration.test_components import write_config
from tests.interop.peers import free_port, missing, wait_for_port
from tests.support.clients import Client, connect
from tests.support.server import RunningServer

GATEWAY = "irc.localhost"
SECRET = "biboumi-secret"
COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
MUC = "http://jabber.org/protocol/muc"

pytestmark = pytest.mark.interop


class Processes:
    """Child processes of the test, stopped (and their logs shown on failure) at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, *argv: str) -> asyncio.subprocess.Process:
        out = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115, ASYNC230 - handed to the child
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory,
            start_new_session=True, env={**os.environ, "HOME": str(self.directory)},
        )  # fmt: skip
        out.close()
        self.procs.append((name, proc))
        return proc

    async def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}.log\n" + (self.directory / f"{name}.log").read_text(errors="replace")[-3000:]
            for name, _ in self.procs
        )


@pytest.fixture
async def roost(tmp_path: Path) -> AsyncIterator[Server]:
    why = missing("biboumi")
    if why is not None:
        pytest.skip(f"biboumi component test: {why}")
    server = create_server(load_config(write_config(tmp_path, GATEWAY, SECRET)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def start_biboumi(server: Server, procs: Processes) -> None:
    directory = procs.directory
    (directory / "biboumi.cfg").write_text(
        f"hostname={GATEWAY}\npassword={SECRET}\nxmpp_server_ip=127.0.0.1\n"
        f"port={server.addresses['component'][1]}\ndb_name={directory / 'biboumi.sqlite'}\n"
        f"identd_port=0\nlog_level=0\npolicy_directory={directory}\n"
    )
    await procs.start("biboumi", "biboumi", str(directory / "biboumi.cfg"))
    for _ in range(100):
        if server.route_table.component_for(GATEWAY) is not None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("biboumi did not connect to the component listener\n" + procs.logs())


async def iq(client: Client, to: str, payload: ET.Element) -> ET.Element:
    request = client.make_iq_set(ito=to)
    request.append(payload)
    answer = await request.send(timeout=15)
    return answer.xml  # type: ignore[no-any-return]


async def set_ports(client: Client, server_jid: str, port: int) -> None:
    """biboumi's per-IRC-server 'configure' command (XEP-0050): plain-text port ``port``, no TLS ports."""
    start = ET.Element(f"{{{COMMANDS}}}command", {"node": "configure", "action": "execute"})
    form = await iq(client, server_jid, start)
    command = form.find(f"{{{COMMANDS}}}command")
    assert command is not None, ET.tostring(form)
    fields = {f.get("var") for f in command.iter(f"{{{DATA}}}field")}
    assert {"ports", "tls_ports"} <= fields, fields
    submit = ET.Element(
        f"{{{COMMANDS}}}command",
        {"node": "configure", "action": "complete", "sessionid": command.get("sessionid", "")},
    )
    x = ET.SubElement(submit, f"{{{DATA}}}x", {"type": "submit"})
    ET.SubElement(ET.SubElement(x, f"{{{DATA}}}field", {"var": "ports"}), f"{{{DATA}}}value").text = str(port)
    ET.SubElement(x, f"{{{DATA}}}field", {"var": "tls_ports"})
    done = await iq(client, server_jid, submit)
    result = done.find(f"{{{COMMANDS}}}command")
    assert result is not None and result.get("status") == "completed", ET.tostring(done)


class IrcClient:
    """A raw IRC client (RFC 2812) in one channel, reading lines into a queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while line := await self.reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text.startswith("PING "):
                self.send("PONG " + text[5:])
            self.lines.put_nowait(text)

    def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")

    async def expect(self, *parts: str, timeout: float = 20) -> str:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if all(p in line for p in parts):
                    return line

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def next_groupchat(client: Client, text: str) -> Any:
    async with asyncio.timeout(20):
        while True:
            message = await client.received.get()
            if message["type"] == "groupchat" and message["body"] == text:
                return message


async def test_biboumi_is_discovered_and_bridges_an_irc_channel(roost: Server, tmp_path: Path) -> None:
    procs = Processes(tmp_path)
    await RunningServer(roost, roost.config.server.data_dir).add_user("alice@localhost", "pw")
    alice = await connect("alice@localhost", "pw", roost.addresses["c2s"][1])
    try:
        await start_biboumi(roost, procs)
        disco = alice.plugin["xep_0030"]
        items = await disco.get_items(jid="localhost", timeout=10)
        assert GATEWAY in {item[0] for item in items["disco_items"]["items"]}
        info = await disco.get_info(jid=GATEWAY, timeout=10)
        identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        assert ("conference", "irc") in identities, identities

        if missing("ngircd") is not None:
            pytest.skip(f"joining an IRC channel through biboumi: {missing('ngircd')}")
        port = free_port()
        (tmp_path / "ngircd.conf").write_text(
            f"[Global]\nName = irc.test\nInfo = Roost test\nListen = 127.0.0.1\nPorts = {port}\n"
            f"PidFile = {tmp_path / 'ngircd.pid'}\nMotdPhrase = test\n"
            "[Options]\nPAM = no\nIdent = no\nDNS = no\n"
        )
        ngircd = await procs.start("ngircd", "ngircd", "--nodaemon", "-f", str(tmp_path / "ngircd.conf"))
        await wait_for_port(port, 10, ngircd)

        await set_ports(alice, f"127.0.0.1@{GATEWAY}", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        irc = IrcClient(reader, writer)
        try:
            irc.send("NICK watcher")
            irc.send("USER watcher 0 * :watcher")
            await irc.expect(" 001 ")
            irc.send("JOIN #roost")
            await irc.expect("JOIN", "#roost")

            room = f"#roost%127.0.0.1@{GATEWAY}"
            presence = alice.make_presence(pto=f"{room}/alice")
            presence.append(ET.Element(f"{{{MUC}}}x"))
            presence.send()
            await irc.expect(":alice!", "JOIN", "#roost")  # alice is in the IRC channel

            alice.send_message(mto=room, mbody="hello irc", mtype="groupchat")
            await irc.expect(":alice!", "PRIVMSG #roost :hello irc")
            irc.send("PRIVMSG #roost :hello xmpp")
            got = await next_groupchat(alice, "hello xmpp")
            assert str(got["from"]) == f"{room}/watcher"
        finally:
            await irc.close()
    except Exception:
        print(procs.logs())  # shown with the failure
        raise
    finally:
        alice.disconnect()
        await procs.stop()
