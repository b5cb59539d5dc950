"""XEP-0077 In-Band Registration: new accounts before login, password change, account removal."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roost.cli.main import main as roost_main
from roost.core import hooks
from roost.core.hooks import UserEvent
from roost.stanza import error_condition
from roost.storage.api import ArchiveQuery
from roost.xml.ns import DISCO_INFO, PRIVATE, REGISTER, REGISTER_FEATURE
from tests.support.clients import Client, connect
from tests.support.queries import ask
from tests.support.raw import RawClient
from tests.support.server import RunningServer, running_server

OPEN = "[registration]\nenabled = true\nmin_password_length = 6\n"


@pytest.fixture
async def open_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path, OPEN) as running:
        yield running


async def preauth(port: int) -> RawClient:
    """A connection after STARTTLS, not logged in."""
    client = await RawClient.connect(port)
    await client.open()
    await client.starttls()
    return client


def register_set(username: str, password: str) -> str:
    return f"<query xmlns='{REGISTER}'><username>{username}</username><password>{password}</password></query>"


async def can_log_in(port: int, username: str, password: str) -> bool:
    client = await RawClient.connect(port)
    try:
        await client.open()
        await client.starttls()
        return (await client.auth_scram(username, password)).name == "success"
    finally:
        client.close()


# -- off by default ---------------------------------------------------------------------------------------
async def test_disabled_by_default(server: RunningServer) -> None:
    client = await preauth(server.c2s_port)
    assert client.features is not None and client.features.find("register", REGISTER_FEATURE) is None
    client.send_raw(f"<iq type='get' id='r1'><query xmlns='{REGISTER}'/></iq>")
    assert await client.stream_error() == "not-authorized"  # a stanza before authentication

    await server.add_user("romeo@localhost", "s3cret")
    romeo = await RawClient.login(server.c2s_port, "romeo", "s3cret", "r")
    reply = await ask(romeo, f"<query xmlns='{REGISTER}'/>", to="localhost")
    assert error_condition(reply) == "service-unavailable"
    info = await ask(romeo, f"<query xmlns='{DISCO_INFO}'/>", to="localhost")
    features = {f.attrs["var"] for f in info.find("query", DISCO_INFO).elements("feature")}  # type: ignore[union-attr]
    assert REGISTER not in features


# -- creating accounts --------------------------------------------------------------------------------------
async def test_slixmpp_registers_then_logs_in(open_server: RunningServer) -> None:
    client = Client("newbie@localhost/home", "pa55word")
    client.register_plugin("xep_0077")
    client.enable_starttls = True
    client.enable_plaintext = False
    registered = asyncio.Event()

    async def on_register(form: Any) -> None:
        assert form["register"]["fields"] >= {"username", "password"}
        iq = client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = client.boundjid.user
        iq["register"]["password"] = client.password
        await iq.send(timeout=5)
        registered.set()

    client.add_event_handler("register", on_register)
    client.connect("127.0.0.1", open_server.c2s_port)
    await asyncio.wait_for(client.session_started.wait(), 10)
    assert registered.is_set()
    assert str(client.boundjid) == "newbie@localhost/home"
    assert await open_server.server.storage.accounts.exists("localhost", "newbie")
    client.disconnect()


async def test_feature_and_form_are_offered(open_server: RunningServer) -> None:
    client = await preauth(open_server.c2s_port)
    assert client.features is not None and client.features.find("register", REGISTER_FEATURE) is not None
    reply = await ask(client, f"<query xmlns='{REGISTER}'/>")
    query = reply.find("query", REGISTER)
    assert query is not None
    assert query.find("username") is not None and query.find("password") is not None
    assert query.find("registered") is None
    form = query.find("x", "jabber:x:data")
    assert form is not None and {f.attrs["var"] for f in form.elements("field")} == {
        "FORM_TYPE",
        "username",
        "password",
    }


async def test_data_form_submission(open_server: RunningServer) -> None:
    client = await preauth(open_server.c2s_port)
    form = (
        "<x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'><value>jabber:iq:register</value></field>"
        "<field var='username'><value>Formal</value></field>"
        "<field var='password'><value>by-the-form</value></field></x>"
    )
    reply = await ask(client, f"<query xmlns='{REGISTER}'>{form}</query>", type_="set")
    assert reply.attrs["type"] == "result"
    # Usernames are prepared like any localpart (UsernameCaseMapped).
    assert await can_log_in(open_server.c2s_port, "formal", "by-the-form")


async def test_existing_username_is_a_conflict(open_server: RunningServer) -> None:
    await open_server.add_user("romeo@localhost", "s3cret")
    client = await preauth(open_server.c2s_port)
    reply = await ask(client, register_set("Romeo", "another-pass"), type_="set")
    assert error_condition(reply) == "conflict"
    assert await can_log_in(open_server.c2s_port, "romeo", "s3cret")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (register_set("alice", "short"), "not-acceptable"),  # below min_password_length
        (register_set("alice", ""), "not-acceptable"),  # XEP-0077 §3.1: empty password
        (f"<query xmlns='{REGISTER}'><username>alice</username></query>", "not-acceptable"),
        (register_set("admin", "long-enough"), "not-acceptable"),  # reserved
        (register_set("a@b", "long-enough"), "jid-malformed"),
        (f"<query xmlns='{REGISTER}'><remove/></query>", "unexpected-request"),  # §3.2, not logged in
    ],
)
async def test_refused_registrations(open_server: RunningServer, payload: str, expected: str) -> None:
    client = await preauth(open_server.c2s_port)
    reply = await ask(client, payload, type_="set")
    assert error_condition(reply) == expected
    assert not await open_server.server.storage.accounts.exists("localhost", "alice")


async def test_one_account_per_connection_then_login_on_it(open_server: RunningServer) -> None:
    client = await preauth(open_server.c2s_port)
    assert (await ask(client, register_set("first", "password1"), type_="set")).attrs["type"] == "result"
    again = await ask(client, register_set("second", "password2"), type_="set")
    assert error_condition(again) == "not-acceptable"  # XEP-0077 §3.1.1
    assert (await client.auth_scram("first", "password1")).name == "success"
    await client.open()
    assert (await client.bind("r")).attrs["type"] == "result"


async def test_rate_limit_per_address(tmp_path: Path) -> None:
    async with running_server(tmp_path, OPEN + "max_per_ip = 1\n") as running:
        first = await preauth(running.c2s_port)
        assert (await ask(first, register_set("one", "password1"), type_="set")).attrs["type"] == "result"
        second = await preauth(running.c2s_port)
        reply = await ask(second, register_set("two", "password2"), type_="set")
        assert error_condition(reply) == "policy-violation"
        assert not await running.server.storage.accounts.exists("localhost", "two")


async def test_new_accounts_off_keeps_password_change(tmp_path: Path) -> None:
    async with running_server(tmp_path, OPEN + "new_accounts = false\n") as running:
        client = await preauth(running.c2s_port)
        assert client.features is not None and client.features.find("register", REGISTER_FEATURE) is None
        await running.add_user("romeo@localhost", "s3cret")
        romeo = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
        reply = await ask(romeo, register_set("romeo", "new-secret"), type_="set", to="localhost")
        assert reply.attrs["type"] == "result"
        assert await can_log_in(running.c2s_port, "romeo", "new-secret")


async def test_registered_accounts_show_up_in_the_cli(open_server: RunningServer, tmp_path: Path) -> None:
    client = await preauth(open_server.c2s_port)
    assert (await ask(client, register_set("clifan", "password1"), type_="set")).attrs["type"] == "result"
    out = io.StringIO()

    def run_cli() -> int:
        with contextlib.redirect_stdout(out):
            return roost_main(["--config", str(tmp_path / "roost.toml"), "user", "list"])

    assert await asyncio.to_thread(run_cli) == 0
    assert "clifan@localhost" in out.getvalue()


# -- logged-in users ----------------------------------------------------------------------------------------
async def test_registered_user_gets_registered_element(open_server: RunningServer) -> None:
    await open_server.add_user("romeo@localhost", "s3cret")
    romeo = await RawClient.login(open_server.c2s_port, "romeo", "s3cret", "r")
    reply = await ask(romeo, f"<query xmlns='{REGISTER}'/>")
    query = reply.find("query", REGISTER)
    assert query is not None and query.find("registered") is not None
    assert query.find_text("username") == "romeo"


async def test_change_password_with_slixmpp(open_server: RunningServer) -> None:
    await open_server.add_user("romeo@localhost", "s3cret")
    romeo = await connect("romeo@localhost/r", "s3cret", open_server.c2s_port)
    romeo.register_plugin("xep_0077")
    await romeo.plugin["xep_0077"].change_password("n3w-secret", jid="localhost", timeout=5)
    romeo.disconnect()
    assert await can_log_in(open_server.c2s_port, "romeo", "n3w-secret")
    assert not await can_log_in(open_server.c2s_port, "romeo", "s3cret")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (f"<query xmlns='{REGISTER}'><username>romeo</username><password/></query>", "bad-request"),  # §3.3
        (register_set("romeo", "tiny"), "not-acceptable"),
        (register_set("juliet", "long-enough"), "forbidden"),
        (
            f"<query xmlns='{REGISTER}'><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>jabber:iq:register:changepassword</value></field>"
            "<field var='old_password'><value>wrong</value></field>"
            "<field var='password'><value>long-enough</value></field></x></query>",
            "not-authorized",
        ),
    ],
)
async def test_refused_password_changes(open_server: RunningServer, payload: str, expected: str) -> None:
    await open_server.add_user("romeo@localhost", "s3cret")
    await open_server.add_user("juliet@localhost", "s3cret")
    romeo = await RawClient.login(open_server.c2s_port, "romeo", "s3cret", "r")
    assert error_condition(await ask(romeo, payload, type_="set")) == expected
    assert await can_log_in(open_server.c2s_port, "romeo", "s3cret")
    assert await can_log_in(open_server.c2s_port, "juliet", "s3cret")


async def test_cancel_removes_the_account_and_all_its_data(open_server: RunningServer) -> None:
    server = open_server.server
    storage = server.storage
    await open_server.add_user("romeo@localhost", "s3cret")
    await open_server.add_user("juliet@localhost", "s3cret")
    deleted: list[UserEvent] = []
    server.hosts["localhost"].bus.on(hooks.USER_DELETED, deleted.append)

    romeo = await RawClient.login(open_server.c2s_port, "romeo", "s3cret", "r")
    other = await RawClient.login(open_server.c2s_port, "romeo", "s3cret", "r2")
    # Data in several stores: vCard, private XML, roster, offline messages.
    vcard = await ask(romeo, "<vCard xmlns='vcard-temp'><FN>R</FN></vCard>", type_="set")
    assert vcard.attrs["type"] == "result"
    stored = await ask(romeo, f"<query xmlns='{PRIVATE}'><p xmlns='urn:p'>x</p></query>", type_="set")
    assert stored.attrs["type"] == "result"
    roster = await ask(
        romeo, "<query xmlns='jabber:iq:roster'><item jid='juliet@localhost'/></query>", type_="set"
    )
    assert roster.attrs["type"] == "result"
    juliet = await RawClient.login(open_server.c2s_port, "juliet", "s3cret", "j")
    juliet.send_raw("<message to='romeo@localhost' type='chat'><body>while you are away</body></message>")
    await wait_for(lambda: offline_count(open_server), 1)

    async def roster_entries() -> int:
        return sum(1 for key in await storage.map("roster").items("localhost", "romeo") if key)

    await wait_for(roster_entries, 1)  # written behind by the roster module
    assert await storage.keyvalue("vcard").get("localhost", "romeo") is not None

    reply = await ask(romeo, f"<query xmlns='{REGISTER}'><remove/></query>", type_="set")
    assert reply.attrs["type"] == "result"
    # XEP-0077 §3.2: the sessions end with <not-authorized/>.
    assert await romeo.stream_error() == "not-authorized"
    assert await other.stream_error() == "not-authorized"

    async def deletions() -> int:
        return len(deleted)

    await wait_for(deletions, 1)
    assert deleted == [UserEvent("localhost", "romeo")]

    # USER_DELETED fires while the data still exists (modules may read it); one transaction then
    # removes everything, so once the roster is gone, all of it is.
    await wait_for(roster_entries, 0)
    assert not await storage.accounts.exists("localhost", "romeo")
    assert await storage.keyvalue("vcard").get("localhost", "romeo") is None
    assert await storage.map("private").items("localhost", "romeo") == {}
    assert await storage.map("roster").items("localhost", "romeo") == {}
    assert await offline_count(open_server) == 0
    assert not await can_log_in(open_server.c2s_port, "romeo", "s3cret")
    assert await can_log_in(open_server.c2s_port, "juliet", "s3cret")


async def test_cancel_with_extra_children_is_a_bad_request(open_server: RunningServer) -> None:
    await open_server.add_user("romeo@localhost", "s3cret")
    romeo = await RawClient.login(open_server.c2s_port, "romeo", "s3cret", "r")
    payload = f"<query xmlns='{REGISTER}'><remove/><username>romeo</username></query>"
    reply = await ask(romeo, payload, type_="set")
    assert error_condition(reply) == "bad-request"
    assert await open_server.server.storage.accounts.exists("localhost", "romeo")


async def test_cancel_can_be_disallowed(tmp_path: Path) -> None:
    async with running_server(tmp_path, OPEN + "allow_cancel = false\n") as running:
        await running.add_user("romeo@localhost", "s3cret")
        romeo = await RawClient.login(running.c2s_port, "romeo", "s3cret", "r")
        reply = await ask(romeo, f"<query xmlns='{REGISTER}'><remove/></query>", type_="set")
        assert error_condition(reply) == "not-allowed"
        assert await running.server.storage.accounts.exists("localhost", "romeo")


async def offline_count(running: RunningServer) -> int:
    return await running.server.storage.archive("offline").count("localhost", "romeo", ArchiveQuery())


async def wait_for(probe: Any, expected: int, timeout: float = 5) -> None:
    """Poll an async probe until it returns ``expected`` (state that settles in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value == expected or loop.time() > deadline:
            assert value == expected
            return
        await asyncio.sleep(0.02)
