"""Refusing messages and subscription requests from strangers (urn:roost:privacy:0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.modules import privacy
from roost.modules.privacy import NS_PRIVACY
from roost.stanza import error_condition
from roost.storage.api import ArchiveQuery
from roost.xml.element import Element
from tests.support.clients import connect
from tests.support.queries import ask, next_stanza, nothing_arrives
from tests.support.raw import RawClient
from tests.support.scenario import Harness, ScriptedSession
from tests.support.server import RunningServer

ON = f"<settings xmlns='{NS_PRIVACY}' reject-strangers='true'/>"
OFF = f"<settings xmlns='{NS_PRIVACY}' reject-strangers='false'/>"
GET = f"<settings xmlns='{NS_PRIVACY}'/>"


def rejects(reply: Element) -> str:
    settings = reply.find("settings", NS_PRIVACY)
    assert settings is not None, reply
    return str(settings.attrs["reject-strangers"])


async def add_contact(session: ScriptedSession, jid: str) -> None:
    """Put ``jid`` in the roster (no subscription at all: being in the roster is what counts)."""
    item = f"<query xmlns='jabber:iq:roster'><item jid='{jid}'/></query>"
    reply = await session.iq(item, "set", iq_id="ros")
    assert reply.attrs["type"] == "result"
    session.clear()


async def offline_messages(h: Harness, user: str) -> int:
    await h.server.storage.flush()
    return await h.server.storage.archive("offline").count("localhost", user, ArchiveQuery())


async def test_off_by_default_and_switched_by_the_user(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        assert rejects(await juliet.iq(GET)) == "false"
        assert (await juliet.iq(ON, "set")).attrs["type"] == "result"
        assert rejects(await juliet.iq(GET)) == "true"
        assert (await juliet.iq(OFF, "set")).attrs["type"] == "result"
        assert rejects(await juliet.iq(GET)) == "false"


@pytest.mark.parametrize("value", ["yes", "", "TRUE "])
async def test_bad_setting_is_a_bad_request(tmp_path: Path, value: str) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        reply = await juliet.iq(f"<settings xmlns='{NS_PRIVACY}' reject-strangers='{value}'/>", "set")
        assert rejects(await juliet.iq(GET, iq_id="g")) == "false"
        assert error_condition(reply) == "bad-request"


async def test_nobody_else_reads_or_sets_the_setting(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        romeo = await h.login("romeo")
        await h.login("juliet")
        assert error_condition(await romeo.iq(ON, "set", to="juliet@localhost")) == "service-unavailable"
        assert error_condition(await romeo.iq(GET, to="juliet@localhost")) == "service-unavailable"


async def test_stranger_message_to_online_user_is_refused_like_a_missing_account(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        paris = await h.login("paris")
        await juliet.submit("<presence/>")
        await juliet.iq(ON, "set")
        juliet.clear()
        await paris.submit("<message to='juliet@localhost' type='chat' id='m1'><body>spam</body></message>")
        juliet.expect_nothing()
        paris.expect(
            "<message type='error' id='m1' from='juliet@localhost' to='paris@localhost/paris'>"
            "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
            "</message>"
        )
        # Exactly what a message to an account that does not exist gets.
        await paris.submit("<message to='nobody@localhost' type='chat' id='m2'><body>spam</body></message>")
        missing = paris.next()
        assert error_condition(missing) == "service-unavailable" and missing.attrs["id"] == "m2"


async def test_contacts_and_own_messages_pass(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        romeo = await h.login("romeo")
        await juliet.submit("<presence/>")
        await juliet.iq(ON, "set")
        await add_contact(juliet, "romeo@localhost")
        await romeo.submit("<message to='juliet@localhost' type='chat'><body>it is I</body></message>")
        juliet.expect("<message from='romeo@localhost/romeo'><body>it is I</body></message>")
        other = await h.login("juliet/phone")
        await other.submit("<message to='juliet@localhost' type='chat'><body>note to self</body></message>")
        juliet.expect("<message from='juliet@localhost/phone'><body>note to self</body></message>")


async def test_stranger_headline_is_dropped_silently(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        paris = await h.login("paris")
        await juliet.submit("<presence/>")
        await juliet.iq(ON, "set")
        juliet.clear()
        await paris.submit("<message to='juliet@localhost' type='headline'><body>news</body></message>")
        juliet.expect_nothing()
        paris.expect_nothing()  # headlines are dropped without a word


async def test_stranger_message_to_offline_user_is_refused_not_stored(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        await juliet.iq(ON, "set")
        await add_contact(juliet, "romeo@localhost")
        await juliet.disconnect("logout")
        paris = await h.login("paris")
        romeo = await h.login("romeo")
        await paris.submit("<message to='juliet@localhost' type='chat' id='s1'><body>spam</body></message>")
        assert error_condition(paris.next()) == "service-unavailable"
        for n in range(3):
            await romeo.submit(f"<message to='juliet@localhost' type='chat'><body>{n}</body></message>")
        romeo.expect_nothing()
        assert await offline_messages(h, "juliet") == 3
        # The checked messages kept their order.
        juliet = await h.login("juliet")
        await juliet.submit("<presence/>")
        bodies = [m.find_text("body") for m in juliet.received if m.name == "message"]
        assert bodies == ["0", "1", "2"]


async def test_stranger_subscription_request_is_dropped_silently(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        paris = await h.login("paris")
        romeo = await h.login("romeo")
        await juliet.submit("<presence/>")
        await juliet.iq(ON, "set")
        await add_contact(juliet, "romeo@localhost")
        paris.clear()
        await paris.submit("<presence type='subscribe' to='juliet@localhost'/>")
        juliet.expect_nothing()
        assert [s for s in paris.received if s.name == "presence"] == []  # no error, no unsubscribed
        await romeo.submit("<presence type='subscribe' to='juliet@localhost'/>")
        juliet.expect("<presence type='subscribe' from='romeo@localhost'/>")


async def test_subscription_request_to_offline_user(tmp_path: Path) -> None:
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        await juliet.iq(ON, "set")
        await add_contact(juliet, "romeo@localhost")
        await juliet.disconnect("logout")
        paris = await h.login("paris")
        romeo = await h.login("romeo")
        await paris.submit("<presence type='subscribe' to='juliet@localhost'/>")
        await romeo.submit("<presence type='subscribe' to='juliet@localhost'/>")
        juliet = await h.login("juliet")
        await juliet.submit("<presence/>")
        requests = [s.attrs.get("from") for s in juliet.received if s.attrs.get("type") == "subscribe"]
        assert requests == ["romeo@localhost"]


async def test_server_default_on_and_user_opts_out(tmp_path: Path) -> None:
    async with Harness.running(tmp_path, "[privacy]\nreject_strangers = true\n") as h:
        juliet = await h.login("juliet")
        paris = await h.login("paris")
        await juliet.submit("<presence/>")
        assert rejects(await juliet.iq(GET)) == "true"
        juliet.clear()
        await paris.submit("<message to='juliet@localhost' type='chat' id='d1'><body>hi</body></message>")
        assert error_condition(paris.next()) == "service-unavailable"
        await juliet.iq(OFF, "set")
        await paris.submit("<message to='juliet@localhost' type='chat'><body>hi again</body></message>")
        juliet.expect("<message from='paris@localhost/paris'><body>hi again</body></message>")


async def test_check_against_storage_when_nothing_is_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deferred path for an online recipient (setting or roster not in memory): same outcome."""
    monkeypatch.setattr(privacy, "peek_roster_item", lambda *_: (False, None))
    async with Harness.running(tmp_path) as h:
        juliet = await h.login("juliet")
        paris = await h.login("paris")
        romeo = await h.login("romeo")
        await juliet.submit("<presence/>")
        await juliet.iq(ON, "set")
        await add_contact(juliet, "romeo@localhost")
        await paris.submit("<message to='juliet@localhost' type='chat' id='x1'><body>spam</body></message>")
        await romeo.submit("<message to='juliet@localhost' type='chat'><body>hello</body></message>")
        juliet.expect("<message from='romeo@localhost/romeo'><body>hello</body></message>")
        juliet.expect_nothing()
        assert error_condition(paris.next()) == "service-unavailable"


async def test_setting_survives_a_restart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'roost.db'}"
    h = await Harness.start(tmp_path, storage=storage)
    try:
        juliet = await h.login("juliet")
        await juliet.iq(ON, "set")
        await h.restart()
        juliet = await h.login("juliet")
        assert rejects(await juliet.iq(GET)) == "true"
    finally:
        await h.stop()


async def test_with_real_clients(server: RunningServer) -> None:
    for name in ("juliet", "paris"):
        await server.add_user(f"{name}@localhost", "s3cret")
    juliet = await connect("juliet@localhost/balcony", "s3cret", server.c2s_port)
    switched = await ask_with_slixmpp(juliet, ON)
    assert switched["type"] == "result"
    paris = await RawClient.login(server.c2s_port, "paris", "s3cret", "p")
    paris.send_raw("<message to='juliet@localhost' type='chat' id='w1'><body>buy now</body></message>")
    error = await next_stanza(paris, "message")
    assert error_condition(error) == "service-unavailable" and error.attrs["id"] == "w1"
    assert juliet.received.empty()
    # paris's own setting is untouched.
    assert rejects(await ask(paris, GET)) == "false"
    await nothing_arrives(paris, "message")
    juliet.disconnect()


async def ask_with_slixmpp(client: object, payload: str) -> object:
    from slixmpp.xmlstream import ET

    iq = client.Iq()  # type: ignore[attr-defined]
    iq["type"] = "set"
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=5)
