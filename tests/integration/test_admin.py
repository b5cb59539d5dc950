"""Runtime administration: XEP-0050/0133 ad-hoc commands (slixmpp) and the control socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from roost.core import control
from roost.modules.muc.module import find_runtime
from roost.xml.ns import STREAM
from tests.support.clients import Client, connect
from tests.support.raw import RawClient
from tests.support.server import RunningServer

ADMIN = "http://jabber.org/protocol/admin"


async def adhoc(client: Client, node: str, fields: dict[str, list[str]] | None = None) -> Any:
    """Run a command: execute, fill in the form it returns (if any), complete."""
    xep = client.plugin["xep_0050"]
    iq = await xep.send_command("localhost", node, action="execute", timeout=10)
    command = iq["command"]
    if command["status"] == "completed":
        return command
    form = command["form"]
    submit = client.plugin["xep_0004"].make_form(ftype="submit")
    submit.add_field(var="FORM_TYPE", ftype="hidden", value=ADMIN)
    for var, values in (fields or {}).items():
        field_type = form["fields"][var]["type"] if var in form["fields"] else "text-multi"
        if field_type in ("jid-multi", "text-multi", "list-multi"):
            submit.add_field(var=var, ftype=field_type, value=values)
        else:
            submit.add_field(var=var, ftype=field_type, value=values[0])
    iq = await xep.send_command(
        "localhost", node, action="complete", sessionid=command["sessionid"], payload=submit, timeout=10
    )
    return iq["command"]


def values(command: Any, var: str) -> list[str]:
    value = command["form"].get_values()[var]
    return value if isinstance(value, list) else str(value).split("\n")


async def stream_error_text(client: RawClient) -> tuple[str, str]:
    while True:
        item = await client.next(10)
        if getattr(item, "ns", None) == STREAM and getattr(item, "name", None) == "error":
            condition = item.first()  # type: ignore[union-attr]
            text = item.find_text("text", "urn:ietf:params:xml:ns:xmpp-streams")  # type: ignore[union-attr]
            assert condition is not None
            return condition.name, text or ""


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    from tests.support.server import write_config

    path = write_config(tmp_path)
    path.write_text(
        path.read_text().replace(
            'domains = ["localhost"]', 'domains = ["localhost"]\nadmins = ["boss@localhost"]'
        )
    )
    from roost.app import create_server
    from roost.config.loader import load_config

    srv = create_server(load_config(path))
    await srv.start()
    running = RunningServer(srv, srv.config.server.data_dir)
    for jid, pw in (("boss@localhost", "bosspw"), ("alice@localhost", "alicepw"), ("bob@localhost", "bobpw")):
        await running.add_user(jid, pw)
    try:
        yield running
    finally:
        await srv.stop()


async def admin_client(port: int) -> Client:
    client = await connect("boss@localhost/adm", "bosspw", port)
    client.register_plugin("xep_0004")
    client.register_plugin("xep_0050")
    return client


async def test_adhoc_commands_are_listed_for_admins_only(server: RunningServer) -> None:
    boss = await admin_client(server.c2s_port)
    alice = await connect("alice@localhost/a", "alicepw", server.c2s_port)
    alice.register_plugin("xep_0050")
    try:
        items = await boss.plugin["xep_0030"].get_items(
            jid="localhost", node="http://jabber.org/protocol/commands"
        )
        nodes = {item[1] for item in items["disco_items"]["items"]}
        assert f"{ADMIN}#announce" in nodes and f"{ADMIN}#end-user-session" in nodes
        assert "urn:roost:admin#status" in nodes
        info = await boss.plugin["xep_0030"].get_info(jid="localhost")
        assert "http://jabber.org/protocol/commands" in info["disco_info"]["features"]
        # XEP-0050 §2.3: information about a command node.
        info = await boss.plugin["xep_0030"].get_info(jid="localhost", node=f"{ADMIN}#announce")
        assert ("automation", "command-node", None, "Send announcement to online users") in info[
            "disco_info"
        ]["identities"]
        assert {"http://jabber.org/protocol/commands", "jabber:x:data"} <= set(info["disco_info"]["features"])
        with pytest.raises(IqError) as hidden:
            await alice.plugin["xep_0030"].get_info(jid="localhost", node=f"{ADMIN}#announce")
        assert hidden.value.iq["error"]["condition"] == "forbidden"
        items = await alice.plugin["xep_0030"].get_items(
            jid="localhost", node="http://jabber.org/protocol/commands"
        )
        assert not items["disco_items"]["items"]
        with pytest.raises(IqError) as refused:
            await alice.plugin["xep_0050"].send_command("localhost", f"{ADMIN}#announce", timeout=10)
        assert refused.value.iq["error"]["condition"] == "forbidden"
    finally:
        boss.disconnect()
        alice.disconnect()


async def test_status_sessions_announce_and_kick_by_adhoc(server: RunningServer) -> None:
    boss = await admin_client(server.c2s_port)
    alice = await connect("alice@localhost/phone", "alicepw", server.c2s_port)
    bob = await RawClient.login(server.c2s_port, "bob", "bobpw", "desk")
    try:
        status = await adhoc(boss, "urn:roost:admin#status")
        assert status["status"] == "completed"
        assert values(status, "sessions") == ["3"]
        assert values(status, "sessions-by-transport") == ["tcp: 3"]
        assert int(values(status, "memory")[0]) > 1_000_000

        sessions = await adhoc(boss, "urn:roost:admin#sessions", {"accountjid": ["alice@localhost"]})
        (line,) = values(sessions, "sessions")
        assert line.startswith("alice@localhost/phone via tcp from 127.0.0.1 since ")

        online = await adhoc(boss, f"{ADMIN}#get-online-users-list")
        assert sorted(values(online, "onlineuserjids")) == [
            "alice@localhost",
            "bob@localhost",
            "boss@localhost",
        ]

        done = await adhoc(boss, f"{ADMIN}#announce", {"announcement": ["Going down", "in 5 minutes"]})
        assert done["status"] == "completed"
        msg = await asyncio.wait_for(alice.received.get(), 10)
        assert msg["body"] == "Going down\nin 5 minutes" and str(msg["from"]) == "localhost"

        done = await adhoc(boss, f"{ADMIN}#end-user-session", {"accountjids": ["bob@localhost/desk"]})
        assert "1 session ended" in done["notes"][0][1]
        assert await bob.stream_error(timeout=10) == "policy-violation"
    finally:
        boss.disconnect()
        alice.disconnect()


async def test_lock_and_unlock_by_adhoc(server: RunningServer) -> None:
    boss = await admin_client(server.c2s_port)
    bob = await RawClient.login(server.c2s_port, "bob", "bobpw", "desk")
    try:
        await adhoc(boss, f"{ADMIN}#disable-user", {"accountjids": ["bob@localhost"], "reason": ["spam"]})
        assert await stream_error_text(bob) == ("not-authorized", "account locked: spam")
        # A locked account cannot log in, and is told why (RFC 6120 §6.5.1), once the password is right.
        again = await RawClient.connect(server.c2s_port)
        await again.open()
        await again.starttls()
        failure = await again.auth_scram("bob", "bobpw")
        assert failure.name == "failure" and failure.first() is not None
        assert failure.first().name == "account-disabled"  # type: ignore[union-attr]
        assert "spam" in failure.find_text("text")
        wrong = await again.auth_scram("bob", "not-the-password")
        assert wrong.first() is not None and wrong.first().name == "not-authorized"  # type: ignore[union-attr]
        again.close()
        await adhoc(boss, f"{ADMIN}#reenable-user", {"accountjids": ["bob@localhost"]})
        back = await RawClient.login(server.c2s_port, "bob", "bobpw", "back")
        back.send_raw("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        reply = await back.element(10)
        assert reply.attrs.get("type") == "result"
    finally:
        boss.disconnect()


async def test_motd_and_rooms_by_adhoc(server: RunningServer) -> None:
    boss = await admin_client(server.c2s_port)
    try:
        await adhoc(boss, f"{ADMIN}#set-motd", {"motd": ["Welcome to Roost"]})
        alice = await connect("alice@localhost/a", "alicepw", server.c2s_port)
        msg = await asyncio.wait_for(alice.received.get(), 10)
        assert msg["body"] == "Welcome to Roost"
        await adhoc(boss, f"{ADMIN}#delete-motd")
        alice.disconnect()

        boss.register_plugin("xep_0045")
        await boss.plugin["xep_0045"].join_muc_wait("lobby@conference.localhost", "boss", timeout=10)
        rooms = await adhoc(boss, "urn:roost:admin#rooms")
        assert values(rooms, "rooms")[0].startswith("lobby@conference.localhost (1 occupants")
        await adhoc(boss, "urn:roost:admin#destroy-room", {"roomjid": ["lobby@conference.localhost"]})
        runtime = find_runtime(server.server)
        assert runtime is not None and runtime.service.get("lobby") is None
    finally:
        boss.disconnect()


async def test_cancel_and_bad_session(server: RunningServer) -> None:
    boss = await admin_client(server.c2s_port)
    try:
        xep = boss.plugin["xep_0050"]
        iq = await xep.send_command("localhost", f"{ADMIN}#announce", timeout=10)
        sessionid = iq["command"]["sessionid"]
        iq = await xep.send_command("localhost", f"{ADMIN}#announce", action="cancel", sessionid=sessionid)
        assert iq["command"]["status"] == "canceled"
        with pytest.raises(IqError) as bad:
            await xep.send_command("localhost", f"{ADMIN}#announce", action="complete", sessionid=sessionid)
        assert bad.value.iq["error"]["condition"] == "bad-request"
    finally:
        boss.disconnect()


async def test_admin_commands_over_the_control_socket(server: RunningServer) -> None:
    sock = control.socket_path(server.data_dir)
    alice = await RawClient.login(server.c2s_port, "alice", "alicepw", "x")
    reply = await control.request(sock, {"op": "command", "name": "status"})
    assert reply is not None and reply["ok"]
    fields = {f["var"]: f["values"] for f in reply["fields"]}
    assert fields["sessions"] == ["1"]
    reply = await control.request(
        sock, {"op": "command", "name": "kick", "values": {"accountjids": ["alice@localhost"]}}
    )
    assert reply is not None and reply["ok"] and reply["note"] == "1 session ended"
    assert await alice.stream_error(timeout=10) == "policy-violation"
    reply = await control.request(
        sock, {"op": "command", "name": "kick", "values": {"accountjids": ["x@nowhere"]}}
    )
    assert reply is not None and not reply["ok"] and "not a domain" in reply["error"]
    assert await alice.closed()
